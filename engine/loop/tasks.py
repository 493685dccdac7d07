"""Task kinds: how one experiment runs and what its result is, for each kind of task.

`train` runs `autoresearch train` on train.py and reads val_bpb from the engine's
result file (engine/loop/runner.py). `command` runs the task's `check`, then its
`score`, both through the shell in the repository root, with one hard timeout for
the two; the last `NAME: value` line naming the metric is the result. A score
that misbehaves is a crash with the reason: a non-zero exit, no metric line, a
value that is not a finite number. A failing check is status `check_failed`,
which the keep rule (engine/loop/decide.py) records as not kept, with the reason.
"""
from __future__ import annotations

import math
import os
import re
import sys
import time
from pathlib import Path

from engine.loop import runner
from engine.loop.guards import is_editable
from engine.loop.runner import Outcome
from engine.loop.task_spec import TaskSpec
from engine.processes import Finished, run_contained

TRAIN_FILE = "train.py"
LOG_NAME = "score.log"
# A score or check command that outlives its timeout gets this long after SIGTERM before
# SIGKILL: timeouts hold to about a second (the poll is 0.25 s).
TASK_KILL_GRACE_S = 0.5
# `NAME: value` (or `NAME = value`) alone on a line.
FIGURE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_@.\-]*)\s*[:=]\s*(\S+)\s*$")
LEADING_PYTHON = re.compile(r"^\s*python3?(?=\s|$)")


class TrainTask:
    """train.py through the JAX engine, scored by val_bpb."""
    kind, metric, direction = "train", "val_bpb", "minimize"

    def __init__(self, program, data_dir: Path | None):
        self.program, self.data_dir = program, data_dir

    def run(self, exp_dir: Path, seed: int, cwd: Path, child_record: Path | None = None,
            on_tick=None, devices=None) -> Outcome:
        """One `autoresearch train`; `devices` (a parallel worker's) adds its visibility settings."""
        command = runner.build_command(TRAIN_FILE, exp_dir, seed, self.program.budget_flag(),
                                       str(self.data_dir) if self.data_dir else None)
        prefix, env = (devices.prefix, devices.env) if devices is not None else ([], None)
        return runner.run_training([*prefix, *command], exp_dir, self.hard_timeout(), cwd,
                                   child_record=child_record, on_tick=on_tick, extra_env=env)

    def hard_timeout(self) -> float:
        """program.md's timeout, else budget + compile allowance + scoring sized from this cache's eval tokens."""
        return self.program.hard_timeout(_scoring_allowance(self.data_dir))

    def describe(self) -> str:
        return self.program.describe_budget()


def _scoring_allowance(data_dir: Path | None) -> float | None:
    """The scoring allowance for the cache's eval tokens and row length (None: the defaults')."""
    import json
    try:
        constants = json.loads((Path(data_dir) / "manifest.json").read_text())["constants"]
        return runner.scoring_allowance(int(constants["eval_tokens"]), int(constants["sequence_length"]))
    except (TypeError, OSError, ValueError, KeyError):
        return None


class CommandTask:
    """Editable files scored by a command that prints the metric."""
    kind = "command"

    def __init__(self, spec: TaskSpec, timeout: float):
        self.spec, self.timeout = spec, timeout
        self.metric, self.direction = spec.metric, spec.direction

    def hard_timeout(self) -> float:
        """The whole run's limit: check and score together."""
        return self.timeout

    def run(self, exp_dir: Path, seed: int, cwd: Path, child_record: Path | None = None,
            on_tick=None, devices=None) -> Outcome:
        """check, then score; the outcome of whichever stopped first. A parallel worker's
        `devices` add their visibility settings to the commands' environment."""
        exp_dir.mkdir(parents=True, exist_ok=True)
        log_path = exp_dir / LOG_NAME
        env = command_env(self.spec, {"AUTORESEARCH_SEED": str(seed), "AUTORESEARCH_RUN_DIR": str(exp_dir),
                                      **(devices.env if devices is not None else {})})
        start = time.monotonic()
        log_path.write_bytes(b"")
        if self.spec.check:
            check = run_shell(self.spec.check, log_path, self.timeout, cwd, env, child_record, on_tick)
            if check.timed_out or check.returncode != 0:
                status = "timeout" if check.timed_out else "check_failed"
                error = (f"the check ran past the {self.timeout:g} s timeout" if check.timed_out else
                         f"check `{self.spec.check}` exited with status {check.returncode}: "
                         f"{check.last_line[:300] or '(no output)'}")
                return Outcome(status, {}, check.returncode, time.monotonic() - start, log_path, error)
        checked = time.monotonic()
        left = max(self.timeout - (checked - start), 0.001)
        score = run_shell(self.spec.score, log_path, left, cwd, env, child_record, on_tick)
        status, result, error = judge_score(score.output, score.returncode, score.timed_out, self.metric, self.timeout)
        if status == "ok":
            result.update({"metric": self.metric, "direction": self.direction, "task": "command",
                           "holdout_command": self.spec.holdout, "pass_env": self.spec.pass_env,
                           "check_seconds": round(checked - start, 3),
                           "score_seconds": round(time.monotonic() - checked, 3)})
        return Outcome(status, result, score.returncode, time.monotonic() - start, log_path, error)

    def describe(self) -> str:
        return f"{self.metric} ({self.direction}), score timeout {self.timeout:g} s"


def make_task(program, data_dir: Path | None = None):
    """The task program.md describes (train when it has no ## Task section)."""
    if program.task.is_command:
        return CommandTask(program.task, program.hard_timeout())
    return TrainTask(program, data_dir)


def judge_score(output: str, returncode: int | None, timed_out: bool, metric: str,
                timeout: float) -> tuple[str, dict, str | None]:
    """(status, result, error) of a score command from what it printed and how it ended."""
    if timed_out:
        return "timeout", {}, f"the score command ran past the {timeout:g} s timeout"
    tail = _last_nonempty(output)
    if returncode != 0:
        return "crash", {}, f"the score command exited with status {returncode}: {tail}"
    figures = read_figures(output)
    if metric not in figures:
        return "crash", {}, (f"the score command printed no `{metric}: value` line "
                             f"(its last line: {tail})")
    text = figures[metric]
    try:
        value = float(text)
    except ValueError:
        return "crash", {}, f"the score command printed `{metric}: {text}`, which is not a number"
    if not math.isfinite(value):
        return "crash", {}, f"the score command printed `{metric}: {text}`, not a finite number"
    numbers = {}
    for name, raw in figures.items():
        try:
            number = float(raw)
        except ValueError:
            continue
        if math.isfinite(number):
            numbers[name] = number
    return "ok", {"status": "ok", metric: value, "figures": numbers}, None


def read_figures(output: str) -> dict[str, str]:
    """Every `NAME: value` line; a later line wins over an earlier one of the same name."""
    figures = {}
    for line in output.splitlines():
        match = FIGURE.match(line)
        if match:
            figures[match.group(1)] = match.group(2)
    return figures


def command_env(spec: TaskSpec, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The loop's environment without secrets, but with the variables the task passes on purpose."""
    env = runner.scrubbed_env()
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # the run's worktree must stay the commit (worktrees.py)
    for name in spec.pass_env:
        if name in os.environ:
            env[name] = os.environ[name]
    env.update(extra or {})
    return env


def shell_command(command: str) -> str:
    """A leading `python` or `python3` is the loop's own interpreter, so the task runs with the
    packages the loop has, whatever `python` means on PATH."""
    return LEADING_PYTHON.sub(lambda _: _quote(sys.executable), command, count=1)


def run_shell(command: str, log_path: Path, timeout: float, cwd: Path, env: dict,
              child_record: Path | None = None, on_tick=None) -> Finished:
    """Run command through the shell, contained, its output appended to log_path within the cap
    (engine/processes.py): the exit status, whether it timed out, and the bounded output the
    metric is read from (the head and the last HEAD/TAIL bytes: the metric line must be among them)."""
    return run_contained(shell_command(command), log_path, timeout, cwd, env, shell=True,
                         header=f"$ {command}\n", grace=TASK_KILL_GRACE_S, child_record=child_record,
                         on_tick=on_tick, exp_dir=log_path.parent)


def fixed_paths(root: Path, tracked: list[str], editable: list[str]) -> list[Path]:
    """A command task's fixed files: every tracked file outside the editable globs and runs/.

    The score and check commands, the data they read and the engine that runs them are all
    tracked and not editable, so this set holds whatever defines the score; runs/ is the loop's
    own output, and untracked files are scratch that never stops the loop.
    """
    return [root / path for path in tracked
            if not path.startswith("runs/") and not is_editable(path, editable)]


def editable_files(root: Path, editable: list[str], tracked: list[str]) -> list[str]:
    """The existing files the editable globs name (tracked ones, and plain paths that exist)."""
    found = [path for path in tracked if is_editable(path, editable)]
    found += [glob for glob in editable if glob not in found and (root / glob).is_file()]
    return sorted(found)


def _quote(path: str) -> str:
    import shlex
    return shlex.quote(path)


def _last_nonempty(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("$ ")]
    return lines[-1][:300] if lines else "(no output)"
