"""`autoresearch train`: the trainer process, then the scorer process, then the one result.

1. The trainer process (`train --trainer-only`, engine/training/trainer.py) has the tracer
   process export train.py's functions (the only process where train.py's Python runs),
   trains those programs for the budget and saves the state, the programs and the forward.
   It writes its own figures (steps, seconds, loss) to a file of this process's choosing.
2. Once it has exited, the scorer process (`evaluate`, engine/scoring/scorer.py), which
   never imports train.py, probes the exported forward for causality and computes val_bpb.
3. This process, which runs no code of train.py either, writes the result file and the
   summary block: status and val_bpb from the scorer alone; the trainer's figures are
   copied for the reader (a fixed list of them, never the status or a score). A scorer
   that dies is started once more; if it dies again the status is "unscored" and the
   checkpoint stays for `autoresearch evaluate`.

Nothing here imports JAX.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from engine import paths
from engine.data import cache
from engine.errors import UserError
from engine.training import summary
from engine.processes import engine_command

# The trainer's figures a result may carry (for people and for MFU/throughput reports).
TRAINER_FIGURES = (
    "training_seconds", "compile_seconds", "train_process_seconds", "trace_seconds", "trace_seconds_charged",
    "init_seconds", "init_flops",
    "peak_vram_mb", "mfu_percent", "total_tokens_M", "num_steps", "num_params_M", "budget", "budget_mode",
    "budget_value", "device", "platform", "num_devices", "num_processes", "tokens_per_second", "final_loss", "step_flops", "flops_per_token", "flops_uncounted",
)
TRAINER_FAILURES = ("crash", "nan", "oom")
# Training finished, scoring did not (after SCORE_RETRIES more tries): the checkpoint is kept,
# and `autoresearch evaluate` or `verify` can score it later. The loop never keeps it unscored.
UNSCORED = "unscored"
SCORE_RETRIES = 1


def main(args: argparse.Namespace) -> int:
    if getattr(args, "trainer_only", False):
        from engine.training import trainer
        return trainer.main(args)
    started = time.perf_counter()
    if args.json_path:
        Path(args.json_path).unlink(missing_ok=True)  # whatever is there now, this process did not write
    try:
        data_dir = paths.resolve_data_dir(args.data)
        cache.require_split_key(data_dir, cache.load_manifest(data_dir))
    except UserError as error:
        _write(args, summary.failure("crash", str(error)))
        raise
    with tempfile.TemporaryDirectory(prefix="autoresearch-train-") as private:
        run_dir = Path(private) / "run" if args.no_checkpoint else Path(args.run_dir or _default_run_dir())
        try:
            result = train_then_score(args, run_dir, data_dir, Path(private))
        except Exception as error:  # never leave a result file that this process did not write
            result = summary.failure("crash", f"autoresearch train failed: {type(error).__name__}: {error}")
    code = result.pop("exit_status", None) or (0 if result["status"] == "ok" else 1)
    result["total_seconds"] = time.perf_counter() - started
    _write(args, result)
    if result["status"] != "ok":
        print(f"autoresearch train: {result['status']}: {result['error']}", file=sys.stderr, flush=True)
        return code
    print(summary.format_block(result), flush=True)
    return 0


def _write(args, result: dict) -> None:
    if args.json_path and _host_index() == 0:
        summary.write_json(args.json_path, result)


def train_then_score(args, run_dir: Path, data_dir: Path, private: Path) -> dict:
    """Train, then score; the result as the loop will read it."""
    trained = _train(args, run_dir, data_dir, private / "trainer.json")
    if trained["status"] != "ok":
        return trained
    checkpoint = run_dir / "checkpoint"
    scored = _score_with_retry(checkpoint, data_dir, private)
    manifest = json.loads((data_dir / "manifest.json").read_text())
    if scored["status"] == "crash":  # trained, but not scored: the checkpoint stays for `evaluate`
        return {**trained, "status": UNSCORED, "seed": args.seed, "checkpoint": str(checkpoint.absolute()),
                "manifest_fingerprint": manifest.get("fingerprint"),
                "error": f"{scored['error']} (training finished: score it later with "
                         f"`autoresearch evaluate --checkpoint {checkpoint}`)"}
    result = {**trained, "manifest_fingerprint": manifest.get("fingerprint"), "seed": args.seed,
              "checkpoint": None if args.no_checkpoint else str(checkpoint.absolute()),
              "status": scored["status"], "error": scored["error"], "val_bpb": scored.get("bpb"),
              "val_tokens": scored.get("tokens"), "probe_passes": scored.get("probe_passes"),
              "probe_seed": scored.get("probe_seed"),
              "scoring_seconds": scored.get("scoring_seconds"), "scoring_phases": scored.get("scoring_phases"),
              "scorer_process_seconds": scored.get("process_seconds"), "scored_by": "scorer"}
    return result


def _score_with_retry(checkpoint: Path, data_dir: Path, private: Path) -> dict:
    """The scorer's figures; a scorer that died (killed for memory, say) is started once more.
    Each try writes into a folder made now, after the trainer process exited."""
    for attempt in range(1 + SCORE_RETRIES):
        scored = _score(checkpoint, data_dir, Path(tempfile.mkdtemp(dir=private)) / "scorer.json")
        if scored["status"] != "crash":
            break
        if attempt < SCORE_RETRIES:
            print(f"autoresearch train: the scorer failed ({scored['error']}); scoring once more",
                  file=sys.stderr, flush=True)
    return scored


def _train(args, run_dir: Path, data_dir: Path, figures: Path) -> dict:
    command = engine_command("train", *([] if args.programs else [str(args.path)]), "--trainer-only",
               "--json", str(figures), "--run-dir", str(run_dir), "--data", str(data_dir),
               "--seed", str(args.seed), *budget_flags(args))
    if args.programs:
        command += ["--programs", str(Path(args.programs).absolute())]
    if args.no_checkpoint:
        command.append("--no-checkpoint")
    done = subprocess.run(command, stdin=subprocess.DEVNULL)
    reported = _read(figures)
    if reported.get("status") in TRAINER_FAILURES:
        return summary.failure(reported["status"], str(reported.get("error") or "no reason given"),
                               exit_status=done.returncode or 1)
    if done.returncode != 0 or reported.get("status") != "ok":
        return summary.failure("crash", f"the trainer process exited with status {done.returncode}"
                               + ("" if reported else " and wrote no figures"), exit_status=done.returncode or 1)
    return {key: reported.get(key) for key in TRAINER_FIGURES if _plain(reported.get(key))} | {"status": "ok"}


def _score(checkpoint: Path, data_dir: Path, figures: Path) -> dict:
    started = time.perf_counter()
    command = engine_command("evaluate", "--checkpoint", str(checkpoint),
               "--split", "val", "--data", str(data_dir), "--json", str(figures))
    done = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
    sys.stderr.write(done.stderr)
    scored = {**_read(figures), "process_seconds": time.perf_counter() - started}
    if scored.get("status") in ("ok", "invalid") and (scored["status"] == "invalid" or _finite(scored.get("bpb"))):
        return scored
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return {"status": "crash", "error": f"the scorer exited with status {done.returncode}: {tail}"}


def budget_flags(args) -> list[str]:
    for flag, value in (("--budget-seconds", args.budget_seconds), ("--budget-flops", args.budget_flops),
                        ("--budget-tokens", args.budget_tokens)):
        if value is not None:
            return [flag, repr(float(value))]
    return []


def _default_run_dir() -> Path:
    return Path("runs") / f"train-{time.strftime('%Y%m%d-%H%M%S')}"


def _read(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _plain(value) -> bool:
    """A figure worth copying: none, a number, a string, or a list of strings."""
    if value is None:
        return True
    if isinstance(value, bool):
        return False
    if isinstance(value, list):
        return all(isinstance(v, str) for v in value)
    return isinstance(value, (int, float, str))


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _host_index() -> int:
    """This host's index in a multi-host run, as JAX's environment names it (0 alone). Every
    host scores the same figure; only host 0 writes the result, as before."""
    try:
        return int(os.environ.get("JAX_PROCESS_ID", "0"))
    except ValueError:
        return 0
