"""Engine benchmark: compile seconds cold and warm, step time, tokens/s and MFU for a train.py.

Runs `autoresearch train` twice in fresh processes that share an empty compilation cache:
the first compiles cold, the second finds every program in the cache.

    python bench/engine.py [train.py] [--budget-seconds 20] [--data CACHE]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def run_train(path: str, budget_seconds: float, data: str | None, cache_dir: str, out: Path) -> dict:
    command = [sys.executable, "-m", "engine.cli", "train", path, "--budget-seconds", str(budget_seconds),
               "--json", str(out), "--no-checkpoint"] + (["--data", data] if data else [])
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=cache_dir)
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"train failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(out.read_text())


def report(cold: dict, warm: dict) -> str:
    steps = warm["num_steps"]
    mfu = warm["mfu_percent"]
    lines = [
        f"device:                {warm['device']}",
        f"budget:                {warm['budget']}",
        f"compile_seconds_cold:  {cold['compile_seconds']:.2f}",
        f"compile_seconds_warm:  {warm['compile_seconds']:.2f}",
        f"step_ms:               {1000 * warm['training_seconds'] / steps:.2f}  ({steps} steps)",
        f"tokens_per_second:     {warm['tokens_per_second']:.0f}",
        f"mfu_percent:           {'n/a (no peak FLOP/s for this device)' if mfu is None else f'{mfu:.2f}'}",
        f"step_gflops:           {(warm['step_flops'] or 0) / 1e9:.3f}",
        f"trace_seconds:         {warm.get('trace_seconds', 0):.2f}",
        f"val_bpb:               {warm['val_bpb']:.6f}",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", default="train.py")
    parser.add_argument("--budget-seconds", type=float, default=20.0)
    parser.add_argument("--data", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="xla-cache-") as cache_dir:
        cold = run_train(args.path, args.budget_seconds, args.data, cache_dir, Path(cache_dir) / "cold.json")
        warm = run_train(args.path, args.budget_seconds, args.data, cache_dir, Path(cache_dir) / "warm.json")
    print(report(cold, warm))


if __name__ == "__main__":
    main()
