"""Packed tokens per second of the data loader on one CPU core (target: at least 5M).

    python bench/loader.py [--data DIR] [--rows 64] [--seq-len 512] [--seconds 5]

Reads the train split of a prepared cache (default: the last prepared), memory-mapped,
as a training run does.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from engine import paths
from engine.data.cache import load_manifest, load_split
from engine.data.loader import PackedLoader

TARGET_TOKENS_PER_SECOND = 5e6


def pin_to_one_core() -> str:
    if hasattr(os, "sched_setaffinity"):
        core = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
        return f"core {core}"
    return "unpinned"


def measure(loader: PackedLoader, seconds: float) -> tuple[int, float]:
    next(loader)  # first batch fills the buffer
    tokens, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        tokens += next(loader).size
    return tokens, elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="prepared cache (default: the last prepared)")
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    data_dir = paths.resolve_data_dir(args.data)
    tokens, doc_starts = load_split(data_dir, "train")
    core = pin_to_one_core()
    loader = PackedLoader(tokens, doc_starts, args.rows, args.seq_len, seed=0)
    count, elapsed = measure(loader, args.seconds)
    rate = count / elapsed
    verdict = "meets" if rate >= TARGET_TOKENS_PER_SECOND else "BELOW"
    print(f"loader: {rate / 1e6:.1f}M packed tokens/s on one CPU core ({core}); {verdict} the "
          f"{TARGET_TOKENS_PER_SECOND / 1e6:.0f}M target | rows {args.rows} x {args.seq_len + 1}, "
          f"{count / 1e6:.1f}M tokens in {elapsed:.1f} s, data {load_manifest(data_dir)['name']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
