"""Read a prepared data cache (layout in docs/internals.md): manifest, token splits, token bytes."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from engine.errors import UserError

SPLITS = ("train", "val", "test")
MANIFEST = "manifest.json"
TOKENIZER = "tokenizer.model"
TOKEN_BYTES = "token_bytes.npy"


def tokens_path(data_dir: Path, split: str) -> Path:
    return Path(data_dir) / f"{split}.tokens.npy"


def docs_path(data_dir: Path, split: str) -> Path:
    return Path(data_dir) / f"{split}.docs.npy"


def load_manifest(data_dir: str | Path) -> dict:
    path = Path(data_dir) / MANIFEST
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"no manifest.json in {data_dir}: run `autoresearch prepare` first") from None
    except json.JSONDecodeError as error:
        raise UserError(f"{path} is not valid JSON ({error}): prepare again with --force") from None


def require_split_key(data_dir: str | Path, manifest: dict) -> None:
    """Refuse to train on a cache split by a plain hash of each document (prepared before split
    keys): train.py could recompute which text is held out from the sources it can read."""
    if not manifest.get("split_key_id"):
        raise UserError(f"the data cache {data_dir} was split by a plain hash of each document, which "
                        "train.py can recompute from the sources: run `autoresearch prepare` with the same "
                        "flags (it prepares it again with a secret split key), then train again")


def load_split(data_dir: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, doc_starts), both memory-mapped: tokens is the flat BOS-prefixed stream,
    doc_starts[i] the offset of document i's BOS, doc_starts[-1] == len(tokens)."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    try:
        tokens = np.load(tokens_path(data_dir, split), mmap_mode="r")
        doc_starts = np.load(docs_path(data_dir, split), mmap_mode="r")
    except FileNotFoundError as error:
        raise UserError(f"{error.filename} is missing: the cache is incomplete, prepare again with --force") from None
    if len(doc_starts) == 0 or int(doc_starts[-1]) != len(tokens):
        raise UserError(f"{split} split in {data_dir} is inconsistent (document offsets do not end at "
                        f"{len(tokens)} tokens): prepare again with --force")
    return tokens, doc_starts


def load_token_bytes(data_dir: str | Path) -> np.ndarray:
    """int32[vocab]: the UTF-8 bytes each token id stands for, 0 for special tokens."""
    path = Path(data_dir) / TOKEN_BYTES
    try:
        return np.load(path).astype(np.int32)
    except FileNotFoundError:
        raise UserError(f"{path} is missing: the cache is incomplete, prepare again with --force") from None


def tokenizer_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / TOKENIZER
