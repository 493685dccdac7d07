"""The offline agent: a search over train.py's UPPER_CASE numeric constants (for a command
task: the numbers of every editable file, Python, YAML, JSON, TOML or SQL; see text_knobs.py).

No network, no model. It finds the knobs with `ast`, steps floats by factors
(probability-like values near 1, such as Adam's betas, by factors of 1 - value) and
integers by sensible steps, stays within the bounds program.md declares, and learns
from the ledger: it never proposes a value already tried for a knob, keeps going in
a direction that helped, turns around after one that hurt, and now and then combines
two changes that beat their base but were not kept. The same seed and ledger give
the same proposal.

Descriptions carry the change in a form it reads back: `NAME: OLD -> NEW`.
"""
from __future__ import annotations

import ast
import dataclasses
import math
import random
import re
from pathlib import Path

from engine.agents.base import Proposal, ProposalRequest, editable_paths
from engine.agents.text_knobs import find_text_knobs

NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
# NAME, TABLE.key, or a command task's key path (`retrieval.k1`, `rules.yaml/threshold`)
CHANGE = re.compile(r"(?<![\w./\-])([A-Za-z_][A-Za-z0-9_./\-]*): (-?[0-9][0-9.e+-]*) -> (-?[0-9][0-9.e+-]*)")
# Settings tables for one platform (CPU_SIZE = dict(depth=4, ...)) matter only on that platform.
PLATFORM_PREFIX = re.compile(r"^(CPU|GPU|TPU)_")
SKIP_NAMES = re.compile(r"SEED|VERSION|EVAL|LOG_EVERY|PRINT")
# What tends to matter most within a short budget; ties are broken by the seed.
LEARNING_RATE = re.compile(r"LEARNING_RATE$|(^|_)LR$")
PRIORITY = ((LEARNING_RATE, 3.0), (re.compile(r"BATCH|ROWS"), 2.0), (re.compile(r"DEPTH|LAYER"), 2.0),
            (re.compile(r"WIDTH|D_MODEL|MODEL_DIM|HIDDEN"), 1.5),
            (re.compile(r"WARMUP|COOLDOWN|WARMDOWN|WEIGHT_DECAY"), 1.0))
# Knobs that set the cost of a step: with few steps in the budget, cheaper steps tend to win.
SIZE = re.compile(r"DEPTH|LAYER|MODEL_DIM|WIDTH|D_MODEL|HIDDEN|ROWS|BATCH|MLP_RATIO|SEQ_LEN")
FEW_STEPS, MANY_STEPS = 200, 20_000
# Fractions of something: a zero may step up inside [0, 1].
FRACTION = re.compile(r"WARMUP|WARMDOWN|COOLDOWN|FRACTION|RATIO|DROPOUT")
FLOAT_FACTORS = (2.0, math.sqrt(2.0))  # coarse, then fine
COMBINE_EVERY = 4  # at most one proposal in this many is a combination


@dataclasses.dataclass(frozen=True)
class Knob:
    name: str
    value: int | float
    start: tuple[int, int]  # (line, byte column) of the literal, as ast reports them
    end: tuple[int, int]
    file: str = "train.py"  # relative to the repository root

    @property
    def is_int(self) -> bool:
        return isinstance(self.value, int)


def find_knobs(source: str) -> list[Knob]:
    """Module-level UPPER_CASE numbers, and the numbers of UPPER_CASE settings tables
    (`SIZE = dict(depth=4)` or `{"depth": 4}`), named `SIZE.depth`."""
    knobs = []
    for node in ast.parse(source).body:
        target, value = _simple_assignment(node)
        if target is None or not NAME.match(target) or SKIP_NAMES.search(target):
            continue
        for name, literal in [(target, value), *_table_entries(target, value)]:
            number = _number(literal)
            if number is not None:
                knobs.append(Knob(name, number, (literal.lineno, literal.col_offset),
                                  (literal.end_lineno, literal.end_col_offset)))
    return knobs


def _table_entries(target: str, value) -> list[tuple[str, ast.AST]]:
    if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "dict":
        return [(f"{target}.{kw.arg}", kw.value) for kw in value.keywords if kw.arg]
    if isinstance(value, ast.Dict):
        return [(f"{target}.{key.value}", item) for key, item in zip(value.keys, value.values)
                if isinstance(key, ast.Constant) and isinstance(key.value, str) and key.value.isidentifier()]
    return []


def for_platform(knobs: list[Knob], platform: str | None) -> list[Knob]:
    """Drop tables of other platforms (GPU_SIZE.depth does nothing in a CPU run)."""
    if not platform:
        return knobs
    keep = []
    for knob in knobs:
        match = PLATFORM_PREFIX.match(knob.name)
        if match is None or match.group(1).lower() == platform.lower():
            keep.append(knob)
    return keep


def _simple_assignment(node) -> tuple[str | None, ast.AST | None]:
    if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
        return node.targets[0].id, node.value
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
        return node.target.id, node.value
    return None, None


def _number(node) -> int | float | None:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _number(node.operand)
        return -inner if inner is not None else None
    return None


def format_value(value: int | float) -> str:
    if isinstance(value, int):
        return str(value)
    text = f"{value:.4g}"
    return text if any(c in text for c in ".en") else text + ".0"


def apply_values(source: str, knobs: dict[str, Knob], values: dict[str, int | float]) -> str:
    """Replace each named literal in source; edits go from the end so offsets stay valid."""
    lines = [line.encode() for line in source.splitlines(keepends=True)]
    for name in sorted(values, key=lambda n: knobs[n].start, reverse=True):
        knob = knobs[name]
        (line1, col1), (line2, col2) = knob.start, knob.end
        head, tail = lines[line1 - 1][:col1], lines[line2 - 1][col2:]
        text = format_value(values[name])
        if not knob.file.endswith(".py") and "e" in text and "." not in text:
            text = text.replace("e", ".0e", 1)  # YAML reads 1e-05 as a string, 1.0e-05 as a number
        lines[line1 - 1: line2] = [head + text.encode() + tail]
    return b"".join(lines).decode()


def file_knobs(path: str, source: str) -> list[Knob]:
    """The knobs of one editable file: UPPER_CASE constants in Python, every number elsewhere."""
    if path.endswith(".py"):
        return [dataclasses.replace(knob, file=path) for knob in find_knobs(source)]
    return [Knob(name, value, start, end, path) for name, value, start, end in find_text_knobs(path, source)
            if not SKIP_NAMES.search(name.upper())]


# --- steps ---------------------------------------------------------------------


def step(value: int | float, direction: int, level: int, bounds: tuple[float, float] | None,
         name: str = "") -> int | float | None:
    """The value one step up (+1) or down (-1); level 0 coarse, 1 fine, -1 bold. None if none fits."""
    key = name.upper().replace(".", "_")
    if bounds is None and FRACTION.search(key) and isinstance(value, float):
        bounds = (0.0, 1.0)
    if isinstance(value, int):
        new = _int_step(value, direction, level)
    else:
        new = _float_step(value, direction, level, bounds, rate=bool(LEARNING_RATE.search(key)),
                          fraction=bool(FRACTION.search(key)))
    if new is None or new == value:
        return None
    if bounds is not None and not bounds[0] <= new <= bounds[1]:
        return None
    return new


def _int_step(value: int, direction: int, level: int) -> int | None:
    if value < 1:
        return None
    power_of_two = value & (value - 1) == 0
    if level == -1:
        new = value * 4 if direction > 0 else value // 4
    elif power_of_two and value >= 2 and level == 0:
        new = value * 2 if direction > 0 else value // 2
    else:
        new = value + direction * max(1, value // 4)
        if value >= 64:  # widths: stay on the multiples the value is built from (heads, tiles)
            unit = min(128, value & -value)
            new = int(round(new / unit)) * unit
            new = value + direction * unit if new == value else new
    return new if new >= 1 else None


def _float_step(value: float, direction: int, level: int, bounds, rate: bool = False,
                fraction: bool = False) -> float | None:
    factor = FLOAT_FACTORS[level] if level >= 0 else FLOAT_FACTORS[0] ** 2
    if value == 0.0:
        if direction < 0 or bounds is None:
            return None
        low, high = bounds
        return float(f"{(low + (high - low) * 0.1 / factor):.4g}")
    if value < 0:
        return None
    if 0.5 <= value < 1.0 and not (rate or fraction):  # momentum-like, near 1: step the distance to 1
        gap = (1.0 - value) / factor if direction > 0 else (1.0 - value) * factor
        new = 1.0 - gap
        return float(f"{new:.4g}") if 0.0 < new < 1.0 else None
    new = float(f"{(value * factor if direction > 0 else value / factor):.4g}")
    if (fraction and new > 1.0) or (value < 1.0 and new >= 1.0 and not rate and not fraction):
        return None
    return new


# --- what the ledger says ----------------------------------------------------------


def parse_changes(description: str) -> dict[str, tuple[float, float]]:
    changes = {}
    for name, old, new in CHANGE.findall(description or ""):
        try:
            changes[name] = (float(old), float(new))
        except ValueError:
            continue
    return changes


@dataclasses.dataclass
class History:
    tried: set = dataclasses.field(default_factory=set)  # (name, value) pairs
    tried_configs: set = dataclasses.field(default_factory=set)  # frozensets of changes
    score: dict = dataclasses.field(default_factory=dict)  # (name, direction) -> float
    winners: list = dataclasses.field(default_factory=list)  # (gain, {name: new})
    times_tried: dict = dataclasses.field(default_factory=dict)
    steps: int | None = None  # training steps the best run took


def _steps_of_best(ledger: list[dict]) -> int | None:
    kept = [row for row in ledger if row.get("kept") and isinstance(row.get("num_steps"), int)]
    return kept[-1]["num_steps"] if kept else None


def _budget_prior(name: str, direction: int, steps: int | None) -> float:
    """Few steps in the budget: smaller/cheaper steps first; very many: bigger ones."""
    if steps is None or not SIZE.search(name.upper().replace(".", "_")):
        return 0.0
    if steps < FEW_STEPS:
        return 3.0 if direction < 0 else -1.0
    if steps > MANY_STEPS:
        return 1.0 if direction > 0 else 0.0
    return 0.0


def read_history(ledger: list[dict]) -> History:
    history = History()
    for row in ledger:
        changes = parse_changes(row.get("description", ""))
        if not changes or row.get("role") == "rerun":
            continue
        history.tried_configs.add(frozenset((n, new) for n, (_, new) in changes.items()))
        for name, (old, new) in changes.items():
            history.tried.add((name, new))
            history.times_tried[name] = history.times_tried.get(name, 0) + 1
            direction = 1 if new > old else -1
            key = (name, direction)
            history.score[key] = history.score.get(key, 0.0) + _outcome_score(row)
        gain = _gain(row)
        if gain is not None and gain > 0 and not row.get("kept") and len(changes) == 1:
            history.winners.append((gain, {n: new for n, (_, new) in changes.items()}))
    return history


def mark_in_flight(history: History, in_flight: list[dict]) -> None:
    """Ideas other workers are running count as tried: never propose one of them twice."""
    for idea in in_flight:
        changes = parse_changes(idea.get("description", ""))
        if changes:
            history.tried_configs.add(frozenset((n, new) for n, (_, new) in changes.items()))
            history.tried.update((name, new) for name, (_, new) in changes.items())


def _gain(row: dict) -> float | None:
    val, base = row.get(row.get("metric") or "val_bpb"), row.get("best_before")
    if isinstance(val, (int, float)) and isinstance(base, (int, float)):
        return val - base if row.get("direction") == "maximize" else base - val
    return None


def _outcome_score(row: dict) -> float:
    if row.get("kept"):
        return 3.0
    if row.get("status") in ("crash", "timeout", "invalid"):
        return -3.0
    gain = _gain(row)
    return 0.5 if gain is not None and gain > 0 else -2.0


# --- the agent ---------------------------------------------------------------------


class OfflineAgent:
    name = "offline"
    fixes_crashes = False

    def __init__(self, seed: int = 0, bounds: dict[str, tuple[float, float]] | None = None,
                 train_file: str = "train.py"):
        self.seed = seed
        self.bounds = dict(bounds or {})
        self.train_file = train_file

    def propose(self, request: ProposalRequest) -> Proposal | None:
        root = Path(request.repo_root)
        files = [self.train_file] if request.task_kind == "train" else editable_paths(root, request.editable)
        sources = {name: (root / name).read_text() for name in files}
        platform = next((row["platform"] for row in reversed(request.ledger) if row.get("platform")), None)
        knobs = {}
        for name, source in sources.items():
            for knob in file_knobs(name, source):
                knob = knob if len(files) == 1 else dataclasses.replace(knob, name=f"{name}/{knob.name}")
                knobs.setdefault(knob.name, knob)
        knobs = {knob.name: knob for knob in for_platform(list(knobs.values()), platform)}
        if not knobs:
            return None
        rng = random.Random(f"{self.seed}:{request.experiment}")
        history = read_history(request.swarm + request.ledger)  # a swarm's results teach it too
        mark_in_flight(history, request.in_flight)
        history.steps = _steps_of_best(request.ledger)
        values, why = self._choose(knobs, history, rng, request)
        if not values:
            return None
        for name in files:
            mine = {n: v for n, v in values.items() if knobs[n].file == name}
            if mine:
                (root / name).write_text(apply_values(sources[name], knobs, mine))
        changes = ", ".join(f"{n}: {format_value(knobs[n].value)} -> {format_value(v)}" for n, v in values.items())
        prefix = "combine " if len(values) > 1 else ""
        return Proposal(description=prefix + changes, hypothesis=why)

    def _choose(self, knobs, history: History, rng: random.Random, request) -> tuple[dict, str]:
        if request.experiment % COMBINE_EVERY == COMBINE_EVERY - 1 or rng.random() < 0.1:
            combined = self._combination(knobs, history)
            if combined:
                return combined, "two changes that each beat their base, together"
        moves = self._moves(knobs, history, rng, bold=request.bolder)
        if not moves:
            return {}, ""
        _, name, direction, value = max(moves)
        return {name: value}, _reason(name, direction, history)

    def _moves(self, knobs, history: History, rng: random.Random, bold: bool) -> list[tuple]:
        moves = []
        levels = (-1, 0, 1) if bold else (0, 1)
        for name, knob in knobs.items():
            for direction in (1, -1):
                for level in levels:
                    value = step(knob.value, direction, level, self.bounds.get(name), name)
                    if value is None or (name, float(value)) in history.tried:
                        continue
                    score = (_priority(name) + history.score.get((name, direction), 0.0)
                             + _budget_prior(name, direction, history.steps)
                             - 0.5 * history.times_tried.get(name, 0) - 1.0 * max(level, 0)
                             + (1.0 if bold and level == -1 else 0.0)
                             + (1.0 if history.score.get((name, -direction), 0.0) < 0 else 0.0)
                             + rng.random() * 0.3)
                    moves.append((score, name, direction, value))
                    break  # the first level that fits is this direction's move
        return moves

    def _combination(self, knobs, history: History) -> dict:
        ranked = sorted(history.winners, key=lambda w: -w[0])
        for i, (_, first) in enumerate(ranked):
            for _, second in ranked[i + 1:]:
                if set(first) & set(second) or not set(first) | set(second) <= set(knobs):
                    continue
                values = {**first, **second}
                values = {n: (int(v) if knobs[n].is_int else v) for n, v in values.items()}
                if any(knobs[n].value == v for n, v in values.items()):
                    continue
                if frozenset((n, float(v)) for n, v in values.items()) not in history.tried_configs:
                    return values
        return {}


def _priority(name: str) -> float:
    key = name.upper().replace(".", "_")
    return max((weight for pattern, weight in PRIORITY if pattern.search(key)), default=0.0)


def _reason(name: str, direction: int, history: History) -> str:
    way = "higher" if direction > 0 else "lower"
    if history.score.get((name, direction), 0.0) > 0:
        return f"{way} {name} helped before"
    if history.score.get((name, -direction), 0.0) < 0:
        return f"the other way hurt, so try {way} {name}"
    return f"try {way} {name}"
