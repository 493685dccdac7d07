"""The fixed corpus and questions of the rag-tuning task.

The corpus is the docstrings of a fixed list of Python standard library modules, read
with `ast` from the interpreter's own source files (always on disk, no network): one
document per module, class, function or method docstring. It is cached as JSON in
$AUTORESEARCH_CACHE/examples/rag-tuning/.

Questions are made from the corpus, deterministically: a seeded generator picks a
document and one of its sentences (eight words or more), and asks with a handful of
that sentence's content words in a shuffled order, one of them sometimes swapped for
a word of the same document. The passage that answers is that sentence: a retrieved
chunk answers when it holds the whole sentence. `dev` questions are what the loop
scores; `holdout` questions come from other sentences and a different seed and are
scored only by the report.
"""
from __future__ import annotations

import ast
import json
import os
import random
import re
import sysconfig
from pathlib import Path

MODULES = ["argparse", "ast", "asyncio/tasks", "asyncio/events", "base64", "bisect", "calendar", "collections/__init__",
           "configparser", "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "email/message",
           "enum", "fractions", "functools", "gettext", "glob", "gzip", "hashlib", "heapq", "hmac", "http/client",
           "inspect", "ipaddress", "json/__init__", "logging/__init__", "mailbox", "os", "pathlib", "pickle",
           "pprint", "queue", "random", "re/__init__", "sched", "secrets", "shlex", "shutil", "socket", "statistics",
           "string", "subprocess", "tarfile", "tempfile", "textwrap", "threading", "timeit", "tokenize",
           "traceback", "typing", "unittest/case", "urllib/parse", "uuid", "warnings", "weakref", "zipfile"]
VERSION = 1
WORD = re.compile(r"[a-z0-9]+")
SENTENCE = re.compile(r"[^.!?]+[.!?]")
STOPWORDS = set("""a an and are as at be by can for from has have if in into is it its may not of on or
that the their then there these this to was were which will with when where whether without you your
also any all but do does each only other such than same so been being should would must one two""".split())
QUESTIONS = {"dev": (1, 300), "holdout": (2, 300)}  # seed, count


def cache_dir() -> Path:
    root = Path(os.environ.get("AUTORESEARCH_CACHE", Path.home() / ".cache" / "autoresearch"))
    return root / "examples" / "rag-tuning"


def documents() -> list[dict]:
    """[{"id", "name", "text"}], the corpus in a fixed order."""
    path = cache_dir() / f"docstrings-{sysconfig.get_python_version()}-v{VERSION}.json"
    if path.exists():
        return json.loads(path.read_text())
    docs = []
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for module in MODULES:
        source = stdlib / f"{module}.py"
        if source.exists():
            docs += _docstrings(module.replace("/__init__", "").replace("/", "."), source.read_text())
    for number, doc in enumerate(docs):
        doc["id"] = number
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(docs))
    os.replace(tmp, path)
    return docs


def _docstrings(module: str, source: str) -> list[dict]:
    tree = ast.parse(source)
    found = []

    def visit(node, prefix):
        doc = ast.get_docstring(node, clean=True)
        if doc and len(doc.split()) >= 12:
            found.append({"name": prefix, "text": " ".join(doc.split())})
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                visit(child, f"{prefix}.{child.name}")

    visit(tree, module)
    return found


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def questions(name: str) -> list[dict]:
    """[{"question", "doc", "start", "end"}]: the answering sentence is text[start:end] of doc."""
    docs = documents()
    seed, count = QUESTIONS[name]
    rng = random.Random(seed)
    taken = _taken_by_dev(docs) if name == "holdout" else set()
    made, seen = [], set()
    while len(made) < count:
        doc = rng.choice(docs)
        sentences = [m for m in SENTENCE.finditer(doc["text"]) if len(m.group().split()) >= 8]
        if not sentences:
            continue
        sentence = rng.choice(sentences)
        key = (doc["id"], sentence.start())
        if key in seen or key in taken:
            continue
        seen.add(key)
        made.append({"question": _ask(rng, sentence.group(), doc["text"]), "doc": doc["id"],
                     "start": sentence.start(), "end": sentence.end()})
    return made


def _taken_by_dev(docs) -> set:
    return {(q["doc"], q["start"]) for q in questions("dev")}


def _ask(rng: random.Random, sentence: str, document: str) -> str:
    content = [w for w in dict.fromkeys(words(sentence)) if w not in STOPWORDS and len(w) > 2]
    chosen = rng.sample(content, min(len(content), rng.randint(3, 5)))
    if len(chosen) > 2 and rng.random() < 0.5:
        others = [w for w in words(document) if w not in STOPWORDS and len(w) > 3]
        chosen[rng.randrange(len(chosen))] = rng.choice(others)
    rng.shuffle(chosen)
    return " ".join(chosen)
