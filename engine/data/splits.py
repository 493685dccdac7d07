"""Which split a document belongs to, from a keyed hash of its content.

The same text lands in the same split whatever order a source yields it in, so
duplicates never straddle train and val, and re-reading a source is reproducible. The hash
is keyed with the cache's split key (engine/data/split_key.py): without the key, knowing the
sources and this code tells nothing about which document is held out.
"""
from __future__ import annotations

import hashlib

from engine import constants

TRAIN, VAL, TEST = "train", "val", "test"


def document_hash(text: str, key: bytes) -> bytes:
    """32 bytes of BLAKE2b keyed with the split key: a pseudorandom function of the text."""
    return hashlib.blake2b(text.encode("utf-8"), key=key, digest_size=32).digest()


def unit_interval(digest: bytes, part: int = 0) -> float:
    """A uniform number in [0, 1) from 8 bytes of a digest; distinct parts are independent."""
    return int.from_bytes(digest[8 * part:8 * part + 8], "big") / 2.0**64


def split_of(text: str, key: bytes, val_fraction: float = constants.VAL_FRACTION,
             test_fraction: float = constants.TEST_FRACTION) -> str:
    """train, val or test for a document, by its keyed hash: the same text always lands in the
    same split under one key, whatever the source order or the machine."""
    return split_of_digest(document_hash(text, key), val_fraction, test_fraction)


def split_of_digest(digest: bytes, val_fraction: float = constants.VAL_FRACTION,
                    test_fraction: float = constants.TEST_FRACTION) -> str:
    u = unit_interval(digest)
    if u < val_fraction:
        return VAL
    if u < val_fraction + test_fraction:
        return TEST
    return TRAIN
