"""Run one experiment: `autoresearch train` in its own process group, with a hard timeout.

The result is read from the JSON file the engine writes, never from printed output; its
status and val_bpb come from the scorer process (engine/training/launcher.py).
The child's environment holds no secrets. While it runs, runs/<tag>/child.json names
it, so a loop restarted after a kill can end an orphan (see engine/loop/lock.py).

AUTORESEARCH_TRAIN_COMMAND (a shell-quoted prefix, default `python -m engine.cli train`)
replaces the train command; tests and benchmarks point it at stand-ins.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shlex
import time
from pathlib import Path
from typing import Callable

from engine.processes import bytecode_prefix, engine_command, run_contained

SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH|COOKIE|SESSION", re.IGNORECASE)
# Not secrets by name, but they point at or switch on credentials.
SECRET_VARS = {"GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_GENAI_USE_VERTEXAI", "CLOUDSDK_CONFIG", "NETRC"}
# The hard timeout of a train run: its budget, plus the compile allowance (start-up, trace,
# compile, checkpoint; program.md's compile_allowance_seconds), plus a scoring allowance for
# the forward passes of the metric and the probe (engine/scoring/probe.py: about five times the
# metric's eval tokens, and T^2 for the cuts) at SLOW_FORWARD_TOKENS_PER_SECOND (a loaded 2-core
# CPU; an accelerator is hundreds of times faster), or SCORING_MARGIN times the scoring seconds
# this machine last measured.
SLOW_FORWARD_TOKENS_PER_SECOND = 2000.0
PROBE_FORWARD_FACTOR = 5
SCORING_MARGIN = 3.0
SCORING_FLOOR_SECONDS = 30.0
PHASE_FILE = "phase.json"  # the engine's phase file in the run directory (engine/training/trainer.py)


@dataclasses.dataclass
class Outcome:
    status: str  # "ok", "crash", "timeout" or "invalid" (the scorer refused the model)
    result: dict  # the engine's JSON result ({} when it wrote none)
    returncode: int | None
    wall_seconds: float
    log_path: Path
    error: str | None = None


def scrubbed_env(env: dict | None = None) -> dict:
    """The environment without secrets: no variable whose name looks like a key, token or
    password, nor those that point at credentials. Every train.py run gets this one."""
    env = dict(os.environ if env is None else env)
    clean = {k: v for k, v in env.items() if k not in SECRET_VARS and not SECRET_NAME.search(k)}
    clean["PYTHONUNBUFFERED"] = "1"
    return clean


def engine_env(extra_env: dict | None = None) -> dict:
    """A training run's environment: scrubbed, plus extra_env, plus the loop's bytecode prefix
    (engine/loop/bytecode.py) for every Python process the run starts."""
    env = {**scrubbed_env(), **(extra_env or {})}
    prefix = bytecode_prefix()
    if prefix is not None:
        env["PYTHONPYCACHEPREFIX"] = str(prefix)
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # read the frozen prefix, never add to it
    return env


def train_command() -> list[str]:
    prefix = os.environ.get("AUTORESEARCH_TRAIN_COMMAND")
    return shlex.split(prefix) if prefix else engine_command("train")


def build_command(train_file: str, exp_dir: Path, seed: int, budget_flag: list[str],
                  data: str | None = None) -> list[str]:
    command = [*train_command(), train_file, "--json", str(exp_dir / "result.json"),
               "--run-dir", str(exp_dir), "--seed", str(seed), *budget_flag]
    return command + (["--data", data] if data else [])


def scoring_allowance(eval_tokens: int, sequence_length: int, measured_seconds: float | None = None) -> float:
    """Seconds allowed for probing and scoring: from this machine's last measured scoring time
    when there is one, else from the eval tokens at a slow CPU's forward speed."""
    if measured_seconds is not None and measured_seconds > 0:
        return SCORING_FLOOR_SECONDS + SCORING_MARGIN * measured_seconds
    forward_tokens = PROBE_FORWARD_FACTOR * eval_tokens + sequence_length ** 2
    return SCORING_FLOOR_SECONDS + forward_tokens / SLOW_FORWARD_TOKENS_PER_SECOND


def train_timeout(budget_seconds: float, compile_allowance: float, scoring_seconds: float) -> float:
    """The hard timeout of one train run: budget + compile allowance + scoring allowance."""
    return budget_seconds + compile_allowance + scoring_seconds


def timeout_reason(exp_dir: Path, timeout: float) -> str:
    """What a run killed at the hard timeout was doing: its phase and each phase's seconds
    (from the engine's phase file), and what to change."""
    seen = _read_phase(exp_dir / PHASE_FILE)
    phase, since = seen.get("phase"), seen.get("since")
    done = seen.get("seconds") if isinstance(seen.get("seconds"), dict) else {}
    text = f"killed at the hard timeout of {timeout:.0f} s"
    if isinstance(phase, str):
        spent = f" after {max(0.0, time.time() - since):.0f} s of it" if isinstance(since, (int, float)) else ""
        text += f", in the {phase} phase{spent}"
    if done:
        text += " (" + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in done.items()
                                 if isinstance(seconds, (int, float))) + ")"
    return (text + "; the engine found nothing wrong with the run: allow more time with `--timeout SECONDS` "
            "or `- timeout_seconds: SECONDS` in program.md (or a smaller budget)")


def _phase_figures(exp_dir: Path) -> dict:
    """For the ledger row of a run killed at the timeout: its phase and its phases' seconds."""
    seen = _read_phase(exp_dir / PHASE_FILE)
    figures = {"phase": seen.get("phase")} if isinstance(seen.get("phase"), str) else {}
    if isinstance(seen.get("seconds"), dict):
        figures["phase_seconds"] = seen["seconds"]
    return figures


def _read_phase(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def read_result(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def classify(returncode: int | None, timed_out: bool, result: dict) -> tuple[str, str | None]:
    """The run's status from how it ended: "timeout" if it was killed at the hard timeout;
    "ok" only with exit status 0 and a finite, positive val_bpb in the result file; else
    "crash" with the reason the result file gives, or the exit status."""
    if timed_out:
        return "timeout", "killed at the hard timeout"
    val = result.get("val_bpb")
    ok = result.get("status") == "ok" and isinstance(val, (int, float)) and math.isfinite(val) and val > 0
    if returncode == 0 and ok:
        return "ok", None
    if result.get("status") == "invalid":
        return "invalid", str(result.get("error") or "the scorer refused the model")
    if result.get("status") == "unscored":  # trained; the checkpoint waits for `autoresearch evaluate`
        return "unscored", str(result.get("error") or "the scorer failed")
    if result.get("status") not in (None, "ok"):
        return "crash", f"{result['status']}: {result.get('error') or 'no reason given'}"
    if returncode != 0:
        return "crash", f"exit status {returncode}" + ("" if result else ", no result file")
    return "crash", "no valid val_bpb in the result file"


def run_training(command: list[str], exp_dir: Path, timeout: float, cwd: Path,
        child_record: Path | None = None, on_tick: Callable[[float], None] | None = None,
        extra_env: dict | None = None) -> Outcome:
    """Run command with its output to exp_dir/train.log (bounded: engine/bounded_log.py), contained
    (engine/processes.py: nothing it starts outlives it); the result comes from exp_dir/result.json.
    extra_env (a parallel worker's device visibility) is added to the scrubbed environment."""
    exp_dir.mkdir(parents=True, exist_ok=True)
    log_path, result_path = exp_dir / "train.log", exp_dir / "result.json"
    result_path.unlink(missing_ok=True)
    log_path.unlink(missing_ok=True)
    start = time.monotonic()
    finished = run_contained(command, log_path, timeout, cwd, engine_env(extra_env),
                             header="$ " + shlex.join(command) + "\n", child_record=child_record,
                             on_tick=on_tick, exp_dir=exp_dir)
    result = read_result(result_path)
    status, error = classify(finished.returncode, finished.timed_out, result)
    if finished.timed_out:
        error = timeout_reason(exp_dir, timeout)
        result = result or _phase_figures(exp_dir)
    return Outcome(status, result, finished.returncode, time.monotonic() - start, log_path, error)
