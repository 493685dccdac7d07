"""Helpers for the loop tests: a scratch repository and a stand-in for `autoresearch train`.

The `loop_env` fixture that uses them is in conftest.py.

The stand-in scores train.py from its constants, so tests of the loop's logic take
milliseconds per experiment; the real engine is exercised in test_driver_real.py.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

FAKE_TRAIN = textwrap.dedent('''
    """Stand-in for `autoresearch train`: val_bpb is a bowl around LEARNING_RATE 0.01, DEPTH 3."""
    import argparse, ast, json, math, os, sys, time
    p = argparse.ArgumentParser()
    p.add_argument("path"); p.add_argument("--json"); p.add_argument("--run-dir"); p.add_argument("--seed", type=int)
    p.add_argument("--budget-seconds", type=float); p.add_argument("--data")
    a = p.parse_args()
    consts = {}
    for node in ast.parse(open(a.path).read()).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            consts[node.targets[0].id] = node.value.value
    print("training", consts, "secrets:", sorted(k for k in os.environ if "KEY" in k), flush=True)
    started_at = time.time()
    lr, depth = consts.get("LEARNING_RATE", 0.01), consts.get("DEPTH", 3)
    gates = os.environ.get("FAKE_GATES")  # tests order parallel runs: hold-LR-DEPTH holds that config
    if gates:
        key = f"{lr:g}-{depth}"
        open(os.path.join(gates, "started-" + key), "w").write(str(os.getpid()))
        hold, give_up = os.path.join(gates, "hold-" + key), time.time() + 60
        while os.path.exists(hold) and time.time() < give_up:
            other = open(hold).read().strip()  # or until the file it names appears
            if other and os.path.exists(os.path.join(gates, other)):
                break
            time.sleep(0.02)
    time.sleep(consts.get("SLEEP", 0) + float(os.environ.get("FAKE_TRAIN_SLEEP", 0)))
    if consts.get("CRASH"):
        sys.exit("crashed on purpose")
    val = 1.0 + (math.log2(lr / 0.01)) ** 2 * 0.05 + (depth - 3) ** 2 * 0.02 + 0.001 * (a.seed % 2)
    os.makedirs(os.path.join(a.run_dir, "checkpoint"), exist_ok=True)
    json.dump({"status": "ok", "error": None, "val_bpb": val, "training_seconds": 0.1, "peak_vram_mb": 512.0,
               "seed": a.seed, "device": "cpu x1", "started_at": started_at, "ended_at": time.time(),
               "checkpoint": os.path.join(a.run_dir, "checkpoint")},
              open(a.json, "w"))
''')

TRAIN_PY = textwrap.dedent('''
    """A train.py for the stand-in engine."""
    LEARNING_RATE = 0.04  # peak learning rate
    DEPTH = 3  # layers
    WARMUP_RATIO = 0.1
    SLEEP = 0
    CRASH = 0
''')

PROGRAM_MD = textwrap.dedent('''
    # test program

    ## Editable files
    - train.py

    ## Stopping criteria
    - max_experiments: 6

    ## Budget
    - budget_seconds: 1
    - timeout_seconds: 30

    ## Noise
    - baseline_runs: 2
    - confirm_runs: 0
    - max_runs: 4
''')


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout.strip()


def make_repo(tmp: Path, train_py: str = TRAIN_PY, program_md: str = PROGRAM_MD, fixed_engine: bool = True) -> Path:
    """fixed_engine: a stand-in engine/ directory (it would shadow the real one for a real run)."""
    root = tmp / "repo"
    root.mkdir(parents=True)
    if fixed_engine:
        (root / "engine").mkdir()
        (root / "engine" / "fixed.py").write_text("X = 1\n")
    (root / "prepare.py").write_text("# fixed\n")
    (root / "train.py").write_text(train_py)
    (root / "program.md").write_text(program_md)
    (root / ".gitignore").write_text("runs/\n__pycache__/\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "t@example.com")
    git(root, "config", "user.name", "t")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "start")
    return root


def make_cache(tmp: Path) -> Path:
    cache = tmp / "cache"
    data = cache / "fake-v512-00000000"
    data.mkdir(parents=True)
    (data / "manifest.json").write_text(json.dumps({"format": 1, "fingerprint": "f" * 64}))
    (data / "train.tokens.npy").write_bytes(b"0" * 1000)
    (cache / "LATEST").write_text(data.name)
    return cache


def run_cli(root: Path, *argv: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", *argv], cwd=root, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def ledger_rows(root: Path, tag: str) -> list[dict]:
    path = root / "runs" / tag / "results.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
