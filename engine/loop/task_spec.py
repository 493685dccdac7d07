"""The `## Task` section of program.md: what the loop optimizes and how it is scored.

Without the section the task is `train`: train.py through the JAX engine, scored by
val_bpb (lower is better). A `command` task is any editable files plus a scoring
command that prints `NAME: value` lines; the last line naming `metric` is the result.

    ## Task
    - kind: command
    - editable: examples/sqlite-latency/tuning.sql
    - score: python examples/sqlite-latency/score.py
    - metric: p95_ms
    - direction: minimize
    - holdout: python examples/sqlite-latency/score.py --workload holdout
    - check: python examples/sqlite-latency/check.py
    - timeout_seconds: 120
    - pass_env: GEMINI_API_KEY

Paths and globs are relative to the repository root, and commands run there. `editable` and
`pass_env` are lists (commas or spaces between items); an item with a space or a comma is quoted:
`- editable: "my rules/règles.yaml", notes.txt` (docs/program.md). Commands are shell commands:
quote a path with spaces as the shell wants it, `python "my tools/score.py"`.
`pass_env` names environment variables the commands receive although their names
look secret (the loop scrubs such names from every run): only for tasks whose
editable files are data the commands read, never code they execute.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from engine.errors import UserError

KINDS = ("train", "command")
DIRECTIONS = ("minimize", "maximize")
TRAIN_METRIC = "val_bpb"
METRIC_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_@.\-]*$")
DEFAULT_COMMAND_TIMEOUT_SECONDS = 600.0
KEYS = ("kind", "editable", "score", "metric", "direction", "holdout", "check", "timeout_seconds", "pass_env")


@dataclasses.dataclass
class TaskSpec:
    kind: str = "train"
    editable: list[str] = dataclasses.field(default_factory=list)  # empty: program.md's "Editable files"
    score: str | None = None
    metric: str = TRAIN_METRIC
    direction: str = "minimize"
    holdout: str | None = None
    check: str | None = None
    timeout_seconds: float | None = None
    pass_env: list[str] = dataclasses.field(default_factory=list)

    @property
    def is_command(self) -> bool:
        return self.kind == "command"


_LINE = re.compile(r"^-\s+`?([A-Za-z_]+)`?\s*:\s*(.*?)\s*$")
LIST_KEYS = ("editable", "pass_env")
_ITEM = re.compile(r'`([^`]*)`|"([^"]*)"|\'([^\']*)\'|([^,\s`"\'\[\]]+)')


def parse_task(lines: list[tuple[str, str]], source: str) -> TaskSpec | None:
    """The TaskSpec of the section's `- key: value` lines ((line, where) pairs); None without any."""
    if not lines:
        return None
    spec, seen = TaskSpec(), set()
    for line, where in lines:
        match = _LINE.match(line)
        if not match or match.group(1) not in KEYS:
            raise UserError(f"{where}: expected `- key: value` with key one of {', '.join(KEYS)}")
        key = match.group(1)
        value = match.group(2) if key in LIST_KEYS else _unquote(match.group(2))
        if key in seen:
            raise UserError(f"{where}: {key} is set twice in the Task section")
        seen.add(key)
        _set(spec, key, value, where)
    _validate(spec, seen, source)
    return spec


def split_list(value: str) -> list[str]:
    """The items of a list value: separated by commas or spaces, each one bare or quoted with
    backticks, double or single quotes (a path with spaces or commas must be quoted); the whole
    list may stand in [brackets]: `a.sql, "my rules/règles.yaml"`, `["a b.txt", "c.txt"]`."""
    return [next(group for group in match.groups() if group is not None).strip()
            for match in _ITEM.finditer(value)
            if next(group for group in match.groups() if group is not None).strip()]


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == "`":
        return value[1:-1].strip()
    return value


def _set(spec: TaskSpec, key: str, value: str, where: str) -> None:
    if key == "kind":
        if value not in KINDS:
            raise UserError(f"{where}: kind {value!r} is not one of {', '.join(KINDS)}")
        spec.kind = value
    elif key == "direction":
        if value not in DIRECTIONS:
            raise UserError(f"{where}: direction {value!r} is not one of {', '.join(DIRECTIONS)}")
        spec.direction = value
    elif key == "metric":
        if not METRIC_NAME.match(value):
            raise UserError(f"{where}: metric {value!r} must be a name like `p95_ms` or `recall@5`")
        spec.metric = value
    elif key == "timeout_seconds":
        try:
            spec.timeout_seconds = float(value)
        except ValueError:
            spec.timeout_seconds = -1.0
        if not spec.timeout_seconds > 0:
            raise UserError(f"{where}: timeout_seconds must be a positive number of seconds, not {value!r}")
    elif key in LIST_KEYS:
        items = split_list(value)
        if key == "editable":
            for item in items:
                _check_glob(item, where)
        setattr(spec, key, items)
    else:  # score, holdout, check: shell commands
        setattr(spec, key, None if value.lower() == "none" or not value else value)


def _check_glob(glob: str, where: str) -> None:
    if glob.startswith("/") or ".." in Path(glob).parts:
        raise UserError(f"{where}: an editable glob is relative to the repository, like "
                        f"`examples/sqlite-latency/tuning.sql`, not {glob!r}")


def _validate(spec: TaskSpec, seen: set, source: str) -> None:
    if spec.kind == "command":
        missing = [k for k in ("score", "editable", "metric") if k not in seen or not getattr(spec, k)]
        if missing:
            raise UserError(f"{source}: a command task needs {', '.join(missing)} in its ## Task section "
                            "(see docs/task-kinds.md)")
        return
    extra = [k for k in ("score", "holdout", "check") if getattr(spec, k)]
    if extra or spec.metric != TRAIN_METRIC or spec.direction != "minimize":
        raise UserError(f"{source}: kind train is scored by the engine (val_bpb, minimize); "
                        f"set `- kind: command` to use score, metric, direction, holdout or check")
