"""test_bpb on the held-out split: computed here only, for the report.

For the baseline and each kept experiment, the train.py of its commit (from git)
scores its saved checkpoint with `autoresearch evaluate --split test` in a
subprocess. Figures are cached in runs/<tag>/heldout.json so a second report is
quick. Nothing here writes to the ledger or anywhere an agent reads, so the loop
never sees a test figure.
"""
from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

from engine import paths
from engine.files import write_atomic
from engine.loop.runner import scrubbed_env
from engine.report.runs import checkpoint_of
from engine.processes import engine_command

CACHE_FILE = "heldout.json"
EVALUATE_TIMEOUT_SECONDS = 3600


def test_figures(run_dir: Path, rows: list[dict], repo_root: Path,
                 log=lambda message: None, busy: str | None = None) -> dict[int, dict]:
    """{experiment: {"test_bpb": float | None, "error": str | None, ...}} for the given rows.

    `busy` names why the accelerator is taken (a running loop): then only cached
    figures are used and the rest wait for a later report.
    """
    cache = _load_cache(run_dir)
    figures = {}
    for row in rows:
        key = _cache_key(row)
        entry = cache.get(key)
        if entry is None and busy:
            entry = _failure(f"not evaluated yet: {busy}; run the report again when it stops")
        elif entry is None:
            log(f"held-out test: experiment {row.get('experiment')} ({str(row.get('commit'))[:7]})")
            entry = _evaluate(run_dir, row, repo_root)
            if entry["error"] is None:  # failures are retried: they may be transient
                cache[key] = entry
                _save_cache(run_dir, cache)
        figures[row.get("experiment")] = entry
    return figures


def _evaluate(run_dir: Path, row: dict, repo_root: Path) -> dict:
    checkpoint = checkpoint_of(run_dir, row)
    if not checkpoint.exists():
        return _failure(f"no checkpoint at {checkpoint}")
    fingerprint = row.get("manifest_fingerprint")
    data = paths.find_data_dir(fingerprint)
    if data is None:
        return _failure(f"no prepared dataset with manifest fingerprint {fingerprint} under "
                        f"{paths.cache_root()}: prepare the loop's dataset again")
    with tempfile.TemporaryDirectory(prefix="autoresearch-heldout-") as tmp:
        return _run_evaluate(Path(tmp), checkpoint, data, repo_root)


def _run_evaluate(tmp: Path, checkpoint: Path, data: Path, repo_root: Path) -> dict:
    """The scorer on the test split, in a process of its own (no train.py: its exported forward)."""
    result_json = tmp / "test.json"
    command = engine_command("evaluate",
               "--checkpoint", str(checkpoint.resolve()), "--split", "test",
               "--data", str(data), "--json", str(result_json))
    try:
        done = subprocess.run(command, cwd=repo_root, capture_output=True, text=True,
                              timeout=EVALUATE_TIMEOUT_SECONDS, env=scrubbed_env())
    except subprocess.TimeoutExpired:
        return _failure(f"evaluate took over {EVALUATE_TIMEOUT_SECONDS} s")
    if done.returncode != 0 or not result_json.exists():
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return _failure(f"evaluate exited {done.returncode}: {tail}")
    result = json.loads(result_json.read_text())
    return {"test_bpb": result.get("bpb"), "tokens": result.get("tokens"),
            "manifest_fingerprint": result.get("manifest_fingerprint"),
            "checkpoint": str(checkpoint), "error": None}


def _failure(error: str) -> dict:
    return {"test_bpb": None, "error": error}


def _cache_key(row: dict) -> str:
    return f"{row.get('experiment')}:{row.get('commit')}:{row.get('manifest_fingerprint')}"


def _load_cache(run_dir: Path) -> dict:
    try:
        return json.loads((Path(run_dir) / CACHE_FILE).read_text()).get("entries", {})
    except (OSError, json.JSONDecodeError, AttributeError):
        return {}


def _save_cache(run_dir: Path, entries: dict) -> None:
    write_atomic(Path(run_dir) / CACHE_FILE, json.dumps({"entries": entries}, indent=1, sort_keys=True))
