"""Benchmark: experiments per hour of `autoresearch loop` with 1 and with N parallel workers.

Runs the real loop (coordinator, worktrees, offline agent, ledger, git) in a scratch
repository, against a stand-in for `autoresearch train` that spends the time budget the
way a time-budgeted run does (wall-clock, sleeping by default or spinning a core with
--busy), then prints experiments per hour for each worker count.

    python bench/workers.py [--budget-seconds 2] [--experiments 12] [--workers 1 2] [--busy]

With --real it runs the real trainer instead, at the given budget, on the last prepared
cache (`autoresearch prepare` first); the repository's own train.py is used.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

STAND_IN = textwrap.dedent('''
    import argparse, json, os, time
    p = argparse.ArgumentParser()
    p.add_argument("path"); p.add_argument("--json"); p.add_argument("--run-dir"); p.add_argument("--seed", type=int)
    p.add_argument("--budget-seconds", type=float); p.add_argument("--data")
    a = p.parse_args()
    source = open(a.path).read()
    lr = float(source.split("LEARNING_RATE = ")[1].split()[0])
    end = time.time() + a.budget_seconds
    while time.time() < end:
        if os.environ.get("BENCH_BUSY"):
            sum(i * i for i in range(10000))
        else:
            time.sleep(0.01)
    val = 1.0 + abs(lr - 0.01) * 3 + 0.001 * (a.seed % 2)
    os.makedirs(a.run_dir, exist_ok=True)
    json.dump({"status": "ok", "val_bpb": val, "device": "cpu x1", "training_seconds": a.budget_seconds},
              open(a.json, "w"))
''')

TRAIN_PY = 'LEARNING_RATE = 0.04  # peak\nDEPTH = 4\nWIDTH = 256\nWARMUP_RATIO = 0.1\n'
PROGRAM = "# bench\n\n## Editable files\n- train.py\n\n## Budget\n- budget_seconds: {budget}\n- timeout_seconds: 600\n"


def scratch_repo(where: Path, budget: float, real: bool) -> Path:
    repo = where / "repo"
    if real:
        shutil.copytree(ROOT, repo, ignore=shutil.ignore_patterns("runs", ".git", "__pycache__", "*.egg-info"))
    else:
        repo.mkdir()
        (repo / "train.py").write_text(TRAIN_PY)
    (repo / "program.md").write_text(PROGRAM.format(budget=budget))
    (repo / ".gitignore").write_text("runs/\n__pycache__/\n")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"],
                 ["-c", "user.email=b@b", "-c", "user.name=bench", "commit", "-q", "-m", "start"]):
        subprocess.run(["git", *args], cwd=repo, check=True)
    return repo


def fake_cache(where: Path) -> Path:
    data = where / "cache" / "bench-00000000"
    data.mkdir(parents=True)
    (data / "manifest.json").write_text(json.dumps({"format": 1, "fingerprint": "b" * 64}))
    (where / "cache" / "LATEST").write_text(data.name)
    return where / "cache"


def run_loop(workers: int, args) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        where = Path(scratch)
        repo = scratch_repo(where, args.budget_seconds, args.real)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        if not args.real:
            (where / "stand_in.py").write_text(STAND_IN)
            env.update(AUTORESEARCH_TRAIN_COMMAND=f"{sys.executable} {where / 'stand_in.py'}",
                       AUTORESEARCH_CACHE=str(fake_cache(where)), JAX_PLATFORMS="cpu",
                       BENCH_BUSY="1" if args.busy else "")
        start = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "engine.cli", "loop", "--tag", "bench", "--agent", "offline",
                               "--workers", str(workers), "--max-experiments", str(args.experiments)],
                              cwd=repo, env=env, capture_output=True, text=True)
        seconds = time.monotonic() - start
        if done.returncode != 0:
            sys.exit(f"loop with {workers} workers failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        rows = [json.loads(line) for line in (repo / "runs" / "bench" / "results.jsonl").read_text().splitlines()]
        ran = [r for r in rows if r.get("status") != "rejected"]
        return {"workers": workers, "experiments": len(ran), "seconds": round(seconds, 1),
                "experiments_per_hour": round(len(ran) / seconds * 3600, 1),
                "kept": sum(1 for r in rows if r.get("kept"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-seconds", type=float, default=2.0)
    parser.add_argument("--experiments", type=int, default=12)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--busy", action="store_true", help="the stand-in spins a core instead of sleeping")
    parser.add_argument("--real", action="store_true", help="the real trainer on the last prepared cache")
    args = parser.parse_args()
    results = [run_loop(n, args) for n in args.workers]
    for result in results:
        print(json.dumps(result))
    base = results[0]["experiments_per_hour"]
    for result in results[1:]:
        print(f"{result['workers']} workers: {result['experiments_per_hour'] / base:.2f}x the experiments per hour "
              f"of {results[0]['workers']}")


if __name__ == "__main__":
    main()
