"""The fixed retriever of the rag-tuning task: chunking, BM25, and a reranker, set by retrieval.toml.

Documents are cut into chunks of `chunk_words` words, each starting `chunk_words -
overlap_words` words after the last. BM25 (k1, b) ranks every chunk for a question;
its best `top_k` go to the reranker, which scores each by the share of the question's
words it holds (all of them, not only the rare ones BM25 favours); the final order
is (1 - weight) * BM25 (scaled to the best candidate) + weight * that share. A
question is answered within k when one of the first k chunks holds the whole
sentence it was made from.
"""
from __future__ import annotations

import math
import re
import tomllib
from collections import Counter, defaultdict
from pathlib import Path

from corpus import STOPWORDS, documents, words

RECALL_K = 1
_WORD_SPAN = re.compile(r"\S+")


def load_config(path: Path) -> dict:
    config = tomllib.loads(Path(path).read_text())
    flat = {**config.get("chunking", {}), **config.get("bm25", {}), **config.get("rerank", {})}
    return {"chunk_words": int(flat["chunk_words"]), "overlap_words": int(flat["overlap_words"]),
            "k1": float(flat["k1"]), "b": float(flat["b"]), "top_k": int(flat["top_k"]),
            "weight": float(flat["weight"])}


def chunk(docs: list[dict], size: int, overlap: int) -> list[dict]:
    """[{"doc", "start", "end", "terms"}]: word windows with their character spans."""
    step = max(1, size - overlap)
    chunks = []
    for doc in docs:
        spans = [m.span() for m in _WORD_SPAN.finditer(doc["text"])]
        for first in range(0, len(spans), step):
            last = min(first + size, len(spans)) - 1
            start, end = spans[first][0], spans[last][1]
            chunks.append({"doc": doc["id"], "start": start, "end": end,
                           "terms": Counter(words(doc["text"][start:end]))})
            if last == len(spans) - 1:
                break
    return chunks


class Index:
    def __init__(self, chunks: list[dict], k1: float, b: float):
        self.chunks, self.k1, self.b = chunks, k1, b
        self.postings = defaultdict(list)
        for number, item in enumerate(chunks):
            for term, count in item["terms"].items():
                self.postings[term].append((number, count))
        self.lengths = [sum(c["terms"].values()) for c in chunks]
        self.average = sum(self.lengths) / max(len(chunks), 1)

    def bm25(self, terms: list[str]) -> dict[int, float]:
        scores: dict[int, float] = defaultdict(float)
        n = len(self.chunks)
        for term in terms:
            posting = self.postings.get(term, [])
            idf = math.log(1 + (n - len(posting) + 0.5) / (len(posting) + 0.5))
            for number, count in posting:
                norm = self.k1 * (1 - self.b + self.b * self.lengths[number] / self.average)
                scores[number] += idf * count * (self.k1 + 1) / (count + norm)
        return scores


def retrieve(index: Index, question: str, config: dict, k: int = RECALL_K) -> list[dict]:
    terms = [w for w in words(question) if w not in STOPWORDS]
    scores = index.bm25(terms)
    candidates = sorted(scores, key=lambda n: (-scores[n], n))[:config["top_k"]]
    if not candidates:
        return []
    top = scores[candidates[0]] or 1.0
    wanted = set(terms)

    def final(number):
        share = len(wanted & index.chunks[number]["terms"].keys()) / max(len(wanted), 1)
        return (1 - config["weight"]) * scores[number] / top + config["weight"] * share

    return [index.chunks[n] for n in sorted(candidates, key=lambda n: (-final(n), n))[:k]]


def evaluate(config: dict, items: list[dict]) -> dict:
    index = Index(chunk(documents(), config["chunk_words"], config["overlap_words"]), config["k1"], config["b"])
    hits, reciprocal = 0, 0.0
    for item in items:
        found = retrieve(index, item["question"], config)
        for rank, piece in enumerate(found, 1):
            if piece["doc"] == item["doc"] and piece["start"] <= item["start"] and item["end"] <= piece["end"]:
                hits += 1
                reciprocal += 1 / rank
                break
    return {"questions": len(items), "chunks": len(index.chunks), f"recall@{RECALL_K}": hits / len(items),
            "mrr": reciprocal / len(items)}
