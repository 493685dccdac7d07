"""`autoresearch train`: one engine process per experiment, then the one result.

1. The engine process (`train --trainer-only`, engine/training/trainer.py) has the tracer
   process export train.py's functions (the only process where train.py's Python runs),
   compiles the programs (the train step, init and the scoring forward), trains for the
   budget, saves the checkpoint, then probes and scores the trained state in memory with
   the scorer's code (engine/scoring/scorer.py). It runs engine code and exported programs
   only, and writes its figures, status and val_bpb included, to a file of this process's
   choosing (made in a private folder before it started).
2. This process, which runs no code of train.py either, writes the result file and the
   summary block. An engine process that dies after its checkpoint (its figures say
   "trained": killed for memory while scoring, say) is followed by a fresh scorer process
   (`evaluate`) on the checkpoint; if that dies too, the status is "unscored" and the
   checkpoint stays for `autoresearch evaluate`. A death is reported with the phase it
   happened in (the engine's phase.json in the run directory).

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
from engine.training import summary, tracer
from engine.processes import engine_command

# The engine's figures a result may carry (for people and for MFU/throughput reports).
TRAINER_FIGURES = (
    "training_seconds", "compile_seconds", "train_process_seconds", "trace_seconds", "trace_seconds_charged",
    "init_seconds", "init_flops",
    "peak_vram_mb", "mfu_percent", "total_tokens_M", "num_steps", "num_params_M", "budget", "budget_mode",
    "budget_value", "device", "platform", "num_devices", "num_processes", "tokens_per_second", "final_loss", "step_flops", "flops_per_token", "flops_uncounted",
    "checkpoint_seconds", "scoring_compile_seconds", "probe_seconds", "metric_seconds",
)
# What the engine's own scoring adds (status and error are taken as they are).
SCORE_FIGURES = ("val_bpb", "val_tokens", "probe_passes", "probe_seed", "forward_calls", "scoring_seconds",
                 "scored_by", "manifest_fingerprint")
TRAINER_FAILURES = ("crash", "nan", "oom")
# Training finished, scoring did not (after SCORE_RETRIES more tries): the checkpoint is kept,
# and `autoresearch evaluate` or `verify` can score it later. The loop never keeps it unscored.
UNSCORED = "unscored"
SCORE_RETRIES = 1  # the engine's own scoring is the first try; a fresh scorer process the retry
TRAINED = "trained"  # the engine's status once its checkpoint is saved (engine/training/trainer.py)
PHASE_FILE = "phase.json"  # the engine's phase file in the run directory (trainer.PhaseLog)


def main(args: argparse.Namespace) -> int:
    if getattr(args, "trainer_only", False):
        tracing = tracer.start_before_jax(args)  # its imports overlap the trainer's, next line
        from engine.training import trainer
        return trainer.main(args, tracing)
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
    """Train and score in the engine process; the result as the loop will read it."""
    trained = _train(args, run_dir, data_dir, private / "engine.json")
    if trained["status"] in ("ok", "invalid"):
        checkpoint = None if args.no_checkpoint else str((run_dir / "checkpoint").absolute())
        return {**trained, "seed": args.seed, "checkpoint": checkpoint}
    if trained["status"] != TRAINED:
        return trained
    checkpoint = run_dir / "checkpoint"
    print(f"autoresearch train: {trained.pop('died')}; scoring the checkpoint in a fresh scorer process",
          file=sys.stderr, flush=True)
    scored = _score_with_retry(checkpoint, data_dir, private, retries=SCORE_RETRIES - 1)
    manifest = json.loads((data_dir / "manifest.json").read_text())
    if scored["status"] == "crash":  # trained, but not scored: the checkpoint stays for `evaluate`
        return {**trained, "status": UNSCORED, "seed": args.seed, "checkpoint": str(checkpoint.absolute()),
                "manifest_fingerprint": manifest.get("fingerprint"),
                "error": f"{scored['error']} (training finished: score it later with "
                         f"`autoresearch evaluate --checkpoint {checkpoint}`)"}
    phases = {**(trained.get("phase_seconds") or {}), **_scorer_phases(scored)}
    return {**trained, "manifest_fingerprint": manifest.get("fingerprint"), "seed": args.seed,
            "checkpoint": None if args.no_checkpoint else str(checkpoint.absolute()),
            "status": scored["status"], "error": scored["error"], "val_bpb": scored.get("bpb"),
            "val_tokens": scored.get("tokens"), "probe_passes": scored.get("probe_passes"),
            "probe_seed": scored.get("probe_seed"), "forward_calls": scored.get("forward_calls"),
            "scoring_seconds": scored.get("scoring_seconds"), "scoring_phases": scored.get("scoring_phases"),
            "scorer_process_seconds": scored.get("process_seconds"), "phase_seconds": phases,
            "probe_seconds": phases["probe"], "metric_seconds": phases["metric"], "scored_by": "scorer"}


def _scorer_phases(scored: dict) -> dict:
    parts = scored.get("scoring_phases") or {}
    return {"probe": parts.get("probe", 0.0), "metric": parts.get("metric", 0.0),
            "scoring": scored.get("process_seconds", 0.0)}


def _score_with_retry(checkpoint: Path, data_dir: Path, private: Path, retries: int = SCORE_RETRIES) -> dict:
    """The scorer's figures; a scorer that died (killed for memory, say) is started again, up
    to `retries` more times. Each try writes into a folder made now, after the engine exited."""
    for attempt in range(1 + retries):
        scored = _score(checkpoint, data_dir, Path(tempfile.mkdtemp(dir=private)) / "scorer.json")
        if scored["status"] != "crash":
            break
        if attempt < retries:
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
    copied = {key: reported.get(key) for key in (*TRAINER_FIGURES, *SCORE_FIGURES) if _plain(reported.get(key))}
    copied |= {key: reported[key] for key in ("phase_seconds", "scoring_phases") if isinstance(reported.get(key), dict)}
    status = reported.get("status")
    if status in TRAINER_FAILURES:
        return summary.failure(status, str(reported.get("error") or "no reason given"),
                               exit_status=done.returncode or 1, **_phase_of(run_dir))
    if status == TRAINED or (status in ("ok", "invalid") and done.returncode != 0):
        # trained and checkpointed, then died (or crashed) while scoring
        return {**copied, "status": TRAINED, "died": _died(done.returncode, run_dir, reported.get("error"))}
    if status == "invalid" and done.returncode == 0:
        return {**copied, "status": "invalid", "error": str(reported.get("error") or "the scorer refused the model")}
    if done.returncode != 0 or status != "ok" or not _finite(reported.get("val_bpb")):
        return summary.failure("crash", _died(done.returncode, run_dir, None) + ("" if reported else
                               " and wrote no figures"), exit_status=done.returncode or 1, **_phase_of(run_dir))
    return {**copied, "status": "ok", "error": None}


def _phase_of(run_dir: Path) -> dict:
    """{"phase": the engine phase a failed run was in, "phase_seconds": ...} from its phase file."""
    seen = summary.read_phase(run_dir / PHASE_FILE)
    phase = seen.get("phase")
    return {"phase": phase} if isinstance(phase, str) else {}


def _died(returncode: int, run_dir: Path, error) -> str:
    """How the engine process ended, and in which phase: `the engine process exited with status
    -9 while scoring (after 12.3 s of it)`."""
    seen = summary.read_phase(run_dir / PHASE_FILE)
    phase, since = seen.get("phase"), seen.get("since")
    text = f"the engine process exited with status {returncode}"
    if returncode < 0:
        text = f"the engine process was killed by {_signal_name(-returncode)}"
    if isinstance(phase, str):
        text += f" in its {phase} phase"
        if isinstance(since, (int, float)):
            text += f" (after {max(0.0, time.time() - since):.1f} s of it)"
    return text + (f": {error}" if error else "")


def _signal_name(number: int) -> str:
    import signal
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


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
