"""Which split a document belongs to, from a hash of its content alone.

The same text lands in the same split whatever order a source yields it in, so
duplicates never straddle train and val, and re-reading a source is reproducible.
"""
from __future__ import annotations

import hashlib

from engine import constants

TRAIN, VAL, TEST = "train", "val", "test"


def document_hash(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def unit_interval(digest: bytes, part: int = 0) -> float:
    """A uniform number in [0, 1) from 8 bytes of a digest; distinct parts are independent."""
    return int.from_bytes(digest[8 * part:8 * part + 8], "big") / 2.0**64


def split_of(text: str, val_fraction: float = constants.VAL_FRACTION,
             test_fraction: float = constants.TEST_FRACTION) -> str:
    """train, val or test for a document, by a hash of its content: the same text always
    lands in the same split, whatever the source order or the machine."""
    return split_of_digest(document_hash(text), val_fraction, test_fraction)


def split_of_digest(digest: bytes, val_fraction: float = constants.VAL_FRACTION,
                    test_fraction: float = constants.TEST_FRACTION) -> str:
    u = unit_interval(digest)
    if u < val_fraction:
        return VAL
    if u < val_fraction + test_fraction:
        return TEST
    return TRAIN
