"""`autoresearch verify [--retrain] RUN_DIR`: re-score (or re-train) a saved experiment.

A fresh scorer process (`autoresearch evaluate`, which never imports train.py) scores the
run's exported forward and weights on the val split; the stored figure holds when the two
agree within TOLERANCE. With --retrain, the run's exported programs are trained again
from its seed and budget on the same data (`autoresearch train --programs`: no Python of
the agent runs), then scored: exact under a tokens or flops budget, within
RETRAIN_TIME_TOLERANCE (relative) under a time budget, whose step count depends on the
machine's speed. This is how one machine can trust another's claim without running its
code. Exit 0 when they agree, 1 when they do not (or the scorer refuses the model).
"""
from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

from engine import paths
from engine.errors import UserError
from engine.training import summary
from engine.processes import engine_command

# Same machine and JAX: the same figure to the last digit. Elsewhere, float reordering.
TOLERANCE = 1e-5
RETRAIN_TIME_TOLERANCE = 0.02


def main(args) -> int:
    run_dir = Path(args.run_dir)
    stored = _stored_result(run_dir)
    checkpoint = _checkpoint_of(run_dir, stored)
    data_dir = _data_dir(args.data, stored.get("manifest_fingerprint"))
    retrain = getattr(args, "retrain", False)
    fresh = (retrain_and_score(checkpoint, data_dir, stored) if retrain
             else rescore(checkpoint, data_dir, stored.get("probe_seed")))
    claimed = stored["val_bpb"]
    tolerance = TOLERANCE
    if retrain and stored.get("budget_mode") == "time":
        tolerance = RETRAIN_TIME_TOLERANCE * abs(claimed)
    agree = fresh.get("status") == "ok" and abs(fresh["bpb"] - claimed) <= tolerance
    report = {"run_dir": str(run_dir), "stored_val_bpb": claimed, "fresh_val_bpb": fresh.get("bpb"),
              "status": fresh.get("status"), "error": fresh.get("error"), "agree": agree,
              "tolerance": tolerance, "retrained": retrain, "probe_seed": fresh.get("probe_seed")}
    if args.json_path:
        summary.write_json(args.json_path, report)
    if fresh.get("status") != "ok":
        print(f"not verified: the scorer refused the model: {fresh.get('error')}")
    elif agree:
        print(f"verified: val_bpb {fresh['bpb']:.6f} (stored {claimed:.6f})")
    else:
        print(f"not verified: a fresh scorer gives val_bpb {fresh['bpb']:.6f}, the run claims {claimed:.6f} "
              f"(difference {fresh['bpb'] - claimed:+.2e}, tolerance {tolerance:g})")
    return 0 if agree else 1


def rescore(checkpoint: Path, data_dir: Path, probe_seed: int | None = None) -> dict:
    """The scorer's figures for the val split, from a process of its own; with the recorded
    probe seed, the same causality probe as the run's own scoring."""
    with tempfile.TemporaryDirectory(prefix="autoresearch-verify-") as tmp:
        out = Path(tmp) / "score.json"
        command = engine_command("evaluate", "--checkpoint", str(checkpoint),
                   "--split", "val", "--data", str(data_dir), "--json", str(out),
                   *(("--probe-seed", str(int(probe_seed))) if probe_seed is not None else ()))
        done = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        try:
            return json.loads(out.read_text())
        except (OSError, ValueError):
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            return {"status": "crash", "error": f"the scorer exited with status {done.returncode}: {tail}"}


def retrain_and_score(checkpoint: Path, data_dir: Path, stored: dict) -> dict:
    """Train the run's saved programs again (same seed, budget and data), then score: the
    scorer's figures ({"status", "bpb", ...}) of the new run."""
    programs = checkpoint / "programs"
    mode, value = stored.get("budget_mode"), stored.get("budget_value")
    if not (programs / "spec.json").is_file():
        raise UserError(f"{checkpoint} holds no exported programs (programs/): only runs of this engine "
                        "version can be re-trained")
    if mode not in ("time", "flops", "tokens") or not isinstance(value, (int, float)):
        raise UserError(f"the run's result.json records no budget ({mode!r}, {value!r}): cannot re-train it")
    with tempfile.TemporaryDirectory(prefix="autoresearch-retrain-") as tmp:
        out = Path(tmp) / "result.json"
        command = engine_command("train", "--programs", str(programs), "--seed", str(int(stored.get("seed") or 0)),
                                 f"--budget-{'seconds' if mode == 'time' else mode}", repr(float(value)),
                                 "--data", str(data_dir), "--run-dir", str(Path(tmp) / "run"), "--json", str(out))
        done = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        try:
            result = json.loads(out.read_text())
        except (OSError, ValueError):
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            return {"status": "crash", "error": f"the re-training exited with status {done.returncode}: {tail}"}
    return {"status": result.get("status"), "bpb": result.get("val_bpb"), "error": result.get("error"),
            "num_steps": result.get("num_steps")}


def _stored_result(run_dir: Path) -> dict:
    path = run_dir / "result.json"
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        raise UserError(f"{run_dir} holds no readable result.json: pass an experiment's directory "
                        "(runs/TAG/exp-NNNN, or the --run-dir of `autoresearch train`)") from None
    if not isinstance(stored.get("val_bpb"), (int, float)):
        raise UserError(f"{path} records no val_bpb (status {stored.get('status')!r}): nothing to verify")
    return stored


def _checkpoint_of(run_dir: Path, stored: dict) -> Path:
    for candidate in (run_dir / "checkpoint", Path(stored.get("checkpoint") or run_dir / "checkpoint")):
        if (candidate / "forward").is_dir():
            return candidate
    raise UserError(f"{run_dir} has no saved checkpoint with an exported forward: only kept experiments "
                    "keep theirs, and runs with --no-checkpoint have none")


def _data_dir(data: str | None, fingerprint: str | None) -> Path:
    if data is not None:
        return paths.resolve_data_dir(data)
    found = paths.find_data_dir(fingerprint)
    if found is None:
        raise UserError(f"no prepared dataset under {paths.cache_root()} has the run's manifest fingerprint "
                        f"{str(fingerprint)[:12]}: pass --data, or prepare that dataset")
    return found
