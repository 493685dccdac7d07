"""Read the machine-readable parts of program.md; flags override them.

The rules (program.md states them too): only sections whose `## ` heading is one
of SECTIONS are read. Inside them, every line that starts with `- ` is a setting:
`- key: value` (a path alone under "Editable files", `- NAME: LOW .. HIGH` under
"Offline agent bounds"). Other lines are prose. `none` leaves a setting unset.
A malformed line stops the loop with an error naming the file and line number.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from engine.errors import UserError
from engine.loop.task_spec import DEFAULT_COMMAND_TIMEOUT_SECONDS, TaskSpec, parse_task
from engine.tracking.trackers import WANDB_MODES, TrackerSettings

SECTIONS = ("editable files", "stopping criteria", "budget", "noise", "agent", "offline agent",
            "offline agent bounds", "task", "trackers")
SAMPLERS = ("tpe", "cmaes", "steps")  # engine/agents/offline.py


@dataclasses.dataclass
class Program:
    text: str = ""
    editable: list[str] = dataclasses.field(default_factory=lambda: ["train.py"])
    # stopping criteria
    max_experiments: int | None = None
    max_hours: float | None = None
    target_val_bpb: float | None = None
    patience: int | None = None  # stop after this many non-improvements in a row
    max_cost_usd: float | None = None
    # an agent failing (non-zero exit, service down) for this long in a row ends the loop
    max_agent_failure_minutes: float = 30.0
    # budget of each experiment; at most one of the three
    budget_seconds: float | None = None
    budget_flops: float | None = None
    budget_tokens: float | None = None
    timeout_seconds: float | None = None  # hard limit per experiment
    compile_allowance_seconds: float = 180.0
    # noise and the keep rule (engine/loop/noise.py; defaults chosen by tests/test_noise.py's simulation)
    baseline_runs: int = 5  # runs of the starting commit; a kept change gets as many confirmation runs
    confidence: float = 0.95  # 1 - the chance of keeping a change that does nothing
    max_runs: int = 6  # runs of one candidate at most (re-runs only while its gain is positive)
    paired: bool = False  # run the best beside each candidate run, compare pair by pair (drift)
    confirm_runs: int | None = None  # a kept change's confirmation runs (None: baseline_runs)
    # agent
    bold_after: int = 5
    max_fix_attempts: int = 2
    # offline agent: Optuna's sampler, and NAME -> (low, high)
    sampler: str = "tpe"
    tune_steps: int | None = None  # the hybrid agent: tuner proposals between two LLM proposals
    bounds: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)
    # what is optimized: train.py's val_bpb, or a command task (engine/loop/task_spec.py)
    task: TaskSpec = dataclasses.field(default_factory=TaskSpec)
    # where the experiments are also sent: TensorBoard, W&B, MLflow (engine/tracking)
    trackers: TrackerSettings = dataclasses.field(default_factory=TrackerSettings)

    def budget_flag(self) -> list[str]:
        """The `autoresearch train` flag for this program's budget (time 300 s when none is set)."""
        if self.budget_flops is not None:
            return ["--budget-flops", f"{self.budget_flops:g}"]
        if self.budget_tokens is not None:
            return ["--budget-tokens", f"{self.budget_tokens:g}"]
        return ["--budget-seconds", f"{self.budget_seconds_or_default():g}"]

    def budget_seconds_or_default(self) -> float:
        from engine.constants import TIME_BUDGET_SECONDS
        return self.budget_seconds if self.budget_seconds is not None else TIME_BUDGET_SECONDS

    def describe_budget(self) -> str:
        if self.budget_flops is not None:
            return f"flops {self.budget_flops:.3g}"
        if self.budget_tokens is not None:
            return f"tokens {self.budget_tokens:.3g}"
        return f"time {self.budget_seconds_or_default():g} s"

    def hard_timeout(self, scoring_seconds: float | None = None) -> float:
        """The budget, the compile allowance and a scoring allowance (engine/loop/runner.py; by
        default sized from the default eval tokens); flops/tokens budgets assume the default time."""
        if self.timeout_seconds is not None:
            return self.timeout_seconds
        if self.task.is_command:
            return self.task.timeout_seconds or DEFAULT_COMMAND_TIMEOUT_SECONDS
        from engine import constants
        from engine.loop import runner
        seconds = self.budget_seconds if self.budget_flops is None and self.budget_tokens is None else None
        if scoring_seconds is None:
            scoring_seconds = runner.scoring_allowance(constants.EVAL_TOKENS, constants.SEQUENCE_LENGTH)
        return runner.train_timeout(seconds if seconds is not None else self.budget_seconds_or_default(),
                                    self.compile_allowance_seconds, scoring_seconds)

    def confirmations(self) -> int:
        """Runs of a kept change that set the best's value (none in paired mode: each pair re-measures the best)."""
        if self.paired:
            return 0
        return self.baseline_runs if self.confirm_runs is None else self.confirm_runs


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must be 0 or more")
    return value


def _probability(text: str) -> float:
    value = float(text)
    if not 0.5 <= value < 1:
        raise ValueError("must be at least 0.5 and below 1, like 0.95")
    return value


def _boolean(text: str) -> bool:
    lowered = text.lower()
    if lowered not in ("true", "false", "yes", "no"):
        raise ValueError("must be true or false")
    return lowered in ("true", "yes")


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError("must be positive")
    return value


def _sampler(text: str) -> str:
    if text.lower() not in SAMPLERS:
        raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}")
    return text.lower()


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise ValueError("must be 0 or more")
    return value


def _wandb_mode(text: str) -> str:
    if text not in WANDB_MODES:
        raise ValueError(f"{text!r} is not one of {', '.join(WANDB_MODES)}")
    return text


def _text(text: str) -> str:
    if not text:
        raise ValueError("it is empty")
    return text


SETTINGS = {
    "stopping criteria": {
        "max_experiments": _positive_int,
        "max_hours": _positive_float,
        "target_val_bpb": _positive_float,
        "patience": _positive_int,
        "max_cost_usd": _non_negative_float,
        "max_agent_failure_minutes": _positive_float,
    },
    "budget": {
        "budget_seconds": _positive_float,
        "budget_flops": _positive_float,
        "budget_tokens": _positive_float,
        "timeout_seconds": _positive_float,
        "compile_allowance_seconds": _non_negative_float,
    },
    "noise": {"baseline_runs": _positive_int, "confidence": _probability, "max_runs": _positive_int,
              "paired": _boolean, "confirm_runs": _non_negative_int},
    "agent": {"bold_after": _positive_int, "max_fix_attempts": _non_negative_int},
    "offline agent": {"sampler": _sampler, "tune_steps": _positive_int},
    "trackers": {"tensorboard": _boolean, "wandb": _boolean, "wandb_project": _text, "wandb_entity": _text,
                 "wandb_mode": _wandb_mode, "mlflow": _boolean, "mlflow_tracking_uri": _text},
}

_SETTING = re.compile(r"^-\s+`?([A-Za-z_][A-Za-z0-9_]*)`?\s*:\s*(.*?)\s*$")
# NAME or TABLE.key (an entry of a dict constant, as the offline agent names it)
# (or, for a command task's YAML/JSON/TOML/SQL files, a key path such as `rules.billing.weight`)
_BOUNDS = re.compile(r"^-\s+`?([A-Za-z_][A-Za-z0-9_./\-]*)`?\s*:\s*(\S+)\s*\.\.\s*(\S+)\s*$")


def parse(text: str, source: str = "program.md") -> Program:
    """program.md's settings: only known `## ` sections, only their `- ` lines; a value that
    does not parse stops here with the file, the line and what to write instead."""
    program = Program(text=text)
    editable: list[str] = []
    task_lines: list[tuple[str, str]] = []
    section = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line.startswith("#"):
            heading = line.lstrip("#").strip().lower()
            section = heading if line.startswith("## ") and heading in SECTIONS else None
            continue
        if section is None or not line.startswith("- "):
            continue
        where = f"{source} line {number}: {line!r}"
        if section == "editable files":
            editable.append(_editable_path(line, where))
        elif section == "task":
            task_lines.append((line, where))
        elif section == "offline agent bounds":
            name, bounds = _bounds(line, where)
            program.bounds[name] = bounds
        else:
            _apply_setting(program, section, line, where)
    if editable:
        program.editable = editable
    task = parse_task(task_lines, source)
    if task is not None:
        program.task = task
        program.editable = task.editable or program.editable
        program.timeout_seconds = task.timeout_seconds or program.timeout_seconds
    _check_one_budget(program, source)
    return program


def _editable_path(line: str, where: str) -> str:
    """One path or glob per line, the whole rest of the line (spaces and any script allowed),
    optionally quoted with backticks or double quotes."""
    path = line[2:].strip()
    if len(path) >= 2 and path[0] == path[-1] and path[0] in "`\"'":
        path = path[1:-1].strip()
    if not path or path.startswith("/") or ".." in Path(path).parts:
        raise UserError(f"{where}: an editable file is a path relative to the repository, like `train.py`")
    return path


def _bounds(line: str, where: str) -> tuple[str, tuple[float, float]]:
    match = _BOUNDS.match(line)
    try:
        low, high = float(match.group(2)), float(match.group(3))
    except (AttributeError, ValueError):
        raise UserError(f"{where}: write bounds as `- NAME: LOW .. HIGH`, e.g. `- LEARNING_RATE: 1e-4 .. 1e-1`") from None
    if not low < high:
        raise UserError(f"{where}: the low bound must be below the high bound")
    return match.group(1), (low, high)


def _apply_setting(program: Program, section: str, line: str, where: str) -> None:
    match = _SETTING.match(line)
    known = SETTINGS[section]
    if not match or match.group(1) not in known:
        raise UserError(f"{where}: expected `- key: value` with key one of {', '.join(known)}")
    key, value = match.group(1), match.group(2).strip("`")
    target = program.trackers if section == "trackers" else program
    if value.lower() == "none":
        setattr(target, key, None)
        return
    try:
        setattr(target, key, known[key](value))
    except ValueError as error:
        what = ("one of " + ", ".join(SAMPLERS) if key == "sampler"
                else "one of " + ", ".join(WANDB_MODES) if key == "wandb_mode"
                else "true or false" if known[key] is _boolean and section == "trackers"
                else "a name or address" if known[key] is _text
                else f"a {'value' if key == 'paired' else 'number'} or `none`")
        raise UserError(f"{where}: bad value for {key} ({error}); write {what}") from None


def _check_one_budget(program: Program, source: str) -> None:
    set_ = [k for k in ("budget_seconds", "budget_flops", "budget_tokens") if getattr(program, k) is not None]
    if len(set_) > 1:
        raise UserError(f"{source}: set only one of {', '.join(set_)} (the others to `none`)")


def load(path: Path) -> Program:
    if not path.exists():
        raise UserError(f"no program file at {path}: pass --program PATH or restore program.md")
    return parse(path.read_text(), source=str(path.name))


def apply_flags(program: Program, args) -> Program:
    """Flags win over program.md; a budget flag replaces the program's budget."""
    for key in ("max_experiments", "max_hours", "timeout", "max_agent_failure_minutes"):
        value = getattr(args, key, None)
        if value is not None:
            setattr(program, "timeout_seconds" if key == "timeout" else key, value)
    for key in ("wandb", "mlflow"):  # --wandb, --mlflow turn a tracker on; --no-tensorboard turns it off
        if getattr(args, key, False):
            setattr(program.trackers, key, True)
    if getattr(args, "no_tensorboard", False):
        program.trackers.tensorboard = False
    budget = {k: getattr(args, k, None) for k in ("budget_seconds", "budget_flops", "budget_tokens")}
    if any(v is not None for v in budget.values()):
        for key, value in budget.items():
            setattr(program, key, value)
    return program
