"""`autoresearch prepare`: text source -> tokenizer + token splits + manifest, in the cache.

Steps: read documents and split them by a hash of their content keyed with the cache's
split key (engine/data/split_key.py; spooled to disk), train the
tokenizer on a sample of train, tokenize every split into a flat BOS-prefixed
stream, check the held-out splits can feed the fixed evaluation, write the
manifest last. All of it happens in a temporary directory renamed into place, so
a killed prepare never leaves a cache that looks complete.
"""
from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np

from engine import constants, paths
from engine.data import cache as data
from engine.data import checksums
from engine.data import sources
from engine.data import split_key
from engine.data import splits
from engine.errors import UserError
from engine.data.streams import DocumentStore, TokenWriter
from engine.files import sha256_file, sha256_json, write_atomic
from engine.processes import process_alive
from engine.data.tokenizer import TRAINER_OPTIONS, Tokenizer, train_tokenizer

FORMAT = 1
# The tokenizer learns from at most this many characters of train, sampled by document hash:
# beyond that, training time grows while an 8k vocabulary barely changes.
TOKENIZER_TRAINING_CHARS = 50_000_000
ENCODE_BATCH_CHARS = 4_000_000
MIN_VOCAB_SIZE = 256 + 3  # byte fallback's 256 pieces, <unk>, BOS, and room to merge


def main(args) -> int:
    spec, constants_ = build_spec(args)
    root = writable_cache_root()
    name = cache_name(spec, constants_)
    final = root / name
    key = split_key.for_prepare(root, getattr(args, "split_key", None))
    if (final / data.MANIFEST).exists() and not args.force and reusable(final, key):
        manifest = data.load_manifest(final)
        point_latest(root, name)
        print(f"reusing prepared dataset {name} (fingerprint {manifest['fingerprint'][:12]}): {final}")
        return 0
    started = time.monotonic()
    remove_abandoned(root, name)
    work = make_work_dir(root, name)
    try:
        manifest = build_cache(work, name, spec, constants_, key)
        publish(work, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    point_latest(root, name)
    print_summary(manifest, final, time.monotonic() - started)
    return 0


# spec -----------------------------------------------------------------------

def build_spec(args) -> tuple[dict, dict]:
    source = sources.parse_source(args.dataset)
    if args.vocab_size < MIN_VOCAB_SIZE:
        raise UserError(f"--vocab-size {args.vocab_size} is too small: byte fallback alone takes 258 ids; "
                        f"use at least {MIN_VOCAB_SIZE}")
    if args.seq_len < 1:
        raise UserError(f"--seq-len {args.seq_len} must be at least 1")
    if args.max_chars is not None and args.max_chars < 1:
        raise UserError(f"--max-chars {args.max_chars} must be positive")
    eval_tokens = args.eval_tokens // args.seq_len * args.seq_len
    if eval_tokens < args.seq_len:
        raise UserError(f"--eval-tokens {args.eval_tokens} is less than one row of --seq-len {args.seq_len}: "
                        "raise --eval-tokens or lower --seq-len")
    if eval_tokens != args.eval_tokens:
        note(f"eval tokens rounded down to {eval_tokens}, a multiple of --seq-len {args.seq_len}")
    spec = {
        "dataset": str(source),
        "source_version": sources.source_version(source, args.data_dir),
        "vocab_size": args.vocab_size,
        "max_chars": args.max_chars,
        "text_key": args.text_key,
        "data_dir": args.data_dir if source.kind == "tfds" else None,
        "tokenizer": {**TRAINER_OPTIONS, "training_chars": TOKENIZER_TRAINING_CHARS},
    }
    constants_ = {"sequence_length": args.seq_len, "eval_tokens": eval_tokens,
                  "val_fraction": constants.VAL_FRACTION, "test_fraction": constants.TEST_FRACTION}
    return spec, constants_


def reusable(final: Path, key: bytes) -> bool:
    """Whether a prepared cache can be used as it is: intact, and split with this key. Says why not."""
    try:
        manifest = checksums.verify(final)
    except UserError as error:
        print(f"{error}".split(". Run", 1)[0] + ": preparing it again")
        return False
    made_with = manifest.get("split_key_id")
    if made_with is None:
        print(f"{final} was split by a plain hash of each document, which train.py can recompute from the "
              f"sources: preparing it again with this cache's split key (id {split_key.key_id(key)[:12]})")
        return False
    if made_with != split_key.key_id(key):
        print(f"{final} was split with key id {made_with[:12]}, and this cache's split key is "
              f"{split_key.key_id(key)[:12]}: preparing it again with the current key")
        return False
    return True


def cache_name(spec: dict, constants_: dict) -> str:
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", spec["dataset"]).strip("-.")[:48] or "data"
    digest = sha256_json({"format": FORMAT, "spec": spec, "constants": constants_})
    return f"{slug}-v{spec['vocab_size']}-{digest[:8]}"


# cache directory ------------------------------------------------------------

def writable_cache_root() -> Path:
    root = paths.cache_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise UserError(f"cannot write the cache at {root} ({error.strerror or error}): "
                        "set AUTORESEARCH_CACHE to a writable directory") from None
    return root


def make_work_dir(root: Path, name: str) -> Path:
    work = root / f".tmp-{name}-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    return work


def remove_abandoned(root: Path, name: str) -> None:
    """Work directories of killed prepares of this dataset (their process is gone)."""
    for work in root.glob(f".tmp-{name}-*"):
        pid = work.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(work, ignore_errors=True)


def publish(work: Path, final: Path) -> None:
    old = final.with_name(f".old-{final.name}-{os.getpid()}")
    if final.exists():
        final.rename(old)
    work.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def point_latest(root: Path, name: str) -> None:
    pointer = paths.latest_pointer()
    staged = root / f".LATEST-{os.getpid()}"
    staged.write_text(name + "\n")
    os.replace(staged, pointer)


# building -------------------------------------------------------------------

def build_cache(work: Path, name: str, spec: dict, constants_: dict, key: bytes) -> dict:
    stores = spool_documents(work, spec, constants_, key)
    check_held_out_sizes_by_bytes(stores, constants_["eval_tokens"], spec)
    tokenizer = fit_tokenizer(work, stores["train"], spec["vocab_size"])
    split_facts = {split: tokenize_split(work, split, store, tokenizer) for split, store in stores.items()}
    for store in stores.values():
        store.remove()
    check_held_out_sizes(split_facts, constants_["eval_tokens"], spec)
    manifest = make_manifest(work, name, spec, constants_, tokenizer, split_facts, split_key.key_id(key))
    write_atomic(work / data.MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return manifest


def spool_documents(work: Path, spec: dict, constants_: dict, key: bytes) -> dict[str, DocumentStore]:
    source = sources.parse_source(spec["dataset"])
    stores = {s: DocumentStore(work / f"{s}.documents") for s in (splits.TRAIN, splits.VAL, splits.TEST)}
    progress = Progress(f"reading {spec['dataset']}")
    documents = sources.limit_chars(sources.read_documents(source, spec["data_dir"], spec["text_key"]),
                                    spec["max_chars"])
    count = chars = 0
    for text in map(encodable, documents):
        digest = splits.document_hash(text, key)
        split = splits.split_of_digest(digest, constants_["val_fraction"], constants_["test_fraction"])
        stores[split].add(text, splits.unit_interval(digest, part=1))
        count += 1
        chars += len(text)
        progress.update(f"{count} documents, {chars / 1e6:.1f}M characters")
    progress.done(f"{count} documents, {chars / 1e6:.1f}M characters")
    for store in stores.values():
        store.close()
    if stores["train"].documents == 0:
        raise UserError(f"{spec['dataset']} gave no training documents: check the source"
                        + (" or raise --max-chars" if spec["max_chars"] else ""))
    return stores


def encodable(text: str) -> str:
    """Lone surrogates (e.g. from a JSON escape) have no UTF-8 form: they become '?'."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def check_held_out_sizes_by_bytes(stores: dict[str, DocumentStore], eval_tokens: int, spec: dict) -> None:
    """A split never has more tokens than bytes + documents (byte fallback, one BOS each):
    catch a corpus that is too small before the slow steps."""
    for split in (splits.VAL, splits.TEST):
        most_tokens = stores[split].bytes + stores[split].documents
        if most_tokens < eval_tokens + 1:
            raise too_small(split, stores[split].documents, most_tokens, eval_tokens, spec, bound=True)


def check_held_out_sizes(split_facts: dict, eval_tokens: int, spec: dict) -> None:
    for split in (splits.VAL, splits.TEST):
        facts = split_facts[split]
        if facts["tokens"] < eval_tokens + 1:
            raise too_small(split, facts["documents"], facts["tokens"], eval_tokens, spec, bound=False)


def too_small(split: str, documents: int, tokens: int, eval_tokens: int, spec: dict, bound: bool) -> UserError:
    held = f"at most {tokens}" if bound else f"{tokens}"
    fraction = constants.VAL_FRACTION if split == splits.VAL else constants.TEST_FRACTION
    more = "raise --max-chars" if spec["max_chars"] else "add data"
    return UserError(f"the {split} split ({documents} documents, {fraction:.0%} of the corpus by hash) holds "
                     f"{held} tokens, but the fixed evaluation needs --eval-tokens {eval_tokens} + 1: "
                     f"lower --eval-tokens (e.g. to {max(tokens // 2, 1)}) or {more}")


def fit_tokenizer(work: Path, train: DocumentStore, vocab_size: int) -> Tokenizer:
    fraction = min(1.0, TOKENIZER_TRAINING_CHARS / max(train.chars, 1))
    chosen = (lambda i: train.sample_keys[i] < fraction) if fraction < 1.0 else None
    documents = (doc for batch in train.batches(ENCODE_BATCH_CHARS, chosen) for doc in batch)
    label = f"training tokenizer (vocab {vocab_size}, {min(train.chars, TOKENIZER_TRAINING_CHARS) / 1e6:.1f}M chars)"
    with Heartbeat(label):
        model = train_tokenizer(documents, vocab_size)
    (work / data.TOKENIZER).write_bytes(model)
    tokenizer = Tokenizer(model)
    np.save(work / data.TOKEN_BYTES, tokenizer.token_bytes())
    return tokenizer


def tokenize_split(work: Path, split: str, store: DocumentStore, tokenizer: Tokenizer) -> dict:
    token_bytes = tokenizer.token_bytes().astype(np.int64)
    dtype = np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.uint32
    writer = TokenWriter(data.tokens_path(work, split), dtype)
    progress = Progress(f"tokenizing {split}")
    done_bytes = 0
    for batch in store.batches(ENCODE_BATCH_CHARS):
        ids = tokenizer.encode_batch(batch)
        expected = sum(len(text.encode("utf-8")) for text in batch)
        writer.add_documents(ids, tokenizer.bos_id)
        counted = int(token_bytes[writer.last_chunk].sum())
        if counted != expected:
            raise RuntimeError(f"token bytes {counted} != UTF-8 bytes {expected} in {split}: tokenizer is not exact")
        done_bytes += expected
        progress.update(f"{done_bytes / 1e6:.1f}/{store.bytes / 1e6:.1f} MB, {writer.count / 1e6:.2f}M tokens")
    progress.done(f"{store.documents} documents, {writer.count / 1e6:.2f}M tokens")
    sha256 = writer.finish(data.docs_path(work, split))
    return {"documents": store.documents, "tokens": writer.count, "bytes": store.bytes, "sha256": sha256}


def make_manifest(work: Path, name: str, spec: dict, constants_: dict, tokenizer: Tokenizer,
                  split_facts: dict, key_id: str) -> dict:
    tokenizer_sha = sha256_file(work / data.TOKENIZER)
    token_bytes_sha = sha256_file(work / data.TOKEN_BYTES)
    fingerprint = checksums.content_fingerprint(FORMAT, spec, constants_, tokenizer_sha, token_bytes_sha,
                                                {s: f["sha256"] for s, f in split_facts.items()}, key_id)
    return {"format": FORMAT, "name": name, "source": spec["dataset"], "spec": spec, "fingerprint": fingerprint,
            "split_key_id": key_id,
            "vocab_size": tokenizer.vocab_size, "bos_id": tokenizer.bos_id, "constants": constants_,
            "tokenizer_sha256": tokenizer_sha, "token_bytes_sha256": token_bytes_sha, "splits": split_facts,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def print_summary(manifest: dict, path: Path, seconds: float) -> None:
    print(f"prepared {manifest['name']} in {seconds:.1f} s: {path}")
    for split, facts in manifest["splits"].items():
        print(f"  {split:5s} {facts['documents']:8d} documents {facts['tokens']:12d} tokens "
              f"{facts['bytes']:12d} bytes")


def note(message: str) -> None:
    print(f"autoresearch prepare: {message}", file=sys.stderr)


class Progress:
    """A counter line on stderr: redrawn in place on a terminal, a line every few seconds in a log."""

    def __init__(self, label: str):
        self.label = label
        self._tty = sys.stderr.isatty()
        self._every = 0.25 if self._tty else 10.0
        self._last = time.monotonic()

    def update(self, text: str) -> None:
        now = time.monotonic()
        if now - self._last >= self._every:
            self._last = now
            print(("\r" if self._tty else "") + f"{self.label}: {text}", end="" if self._tty else "\n",
                  file=sys.stderr, flush=True)

    def done(self, text: str) -> None:
        print(("\r" if self._tty else "") + f"{self.label}: {text}", file=sys.stderr, flush=True)


class Heartbeat:
    """Elapsed seconds on stderr while a step without its own progress runs."""

    def __init__(self, label: str):
        self.label = label
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def __enter__(self):
        self._started = time.monotonic()
        self._progress = Progress(self.label)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        if exc[0] is None:
            self._progress.done(f"done in {time.monotonic() - self._started:.1f} s")

    def _beat(self) -> None:
        while not self._stop.wait(0.25):
            self._progress.update(f"{time.monotonic() - self._started:.0f} s")
