"""The step search: one knob at a time by fixed steps, learning directions from the ledger.

The offline agent's search before it used Optuna, kept as `sampler: steps` and as the
yardstick the Optuna samplers are measured against. Floats step by factors (probability-like
values near 1, such as Adam's betas, by factors of 1 - value), integers by sensible steps,
within the bounds program.md declares. It never proposes a value already tried for a knob,
keeps going in a direction that helped, turns around after one that hurt, and now and then
combines two changes that beat their base but were not kept. The same seed and ledger give
the same proposal.
"""
from __future__ import annotations

import dataclasses
import math
import random
import re

from engine.agents.base import ProposalRequest
from engine.agents.knobs import Workspace, parse_changes

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


class StepSearch:
    """One knob at a time by fixed steps, as the offline agent searched before Optuna
    (`sampler: steps` in program.md's `## Offline agent`)."""

    def __init__(self, seed: int = 0, bounds: dict[str, tuple[float, float]] | None = None):
        self.seed = seed
        self.bounds = dict(bounds or {})

    def choose(self, space: Workspace, request: ProposalRequest) -> tuple[dict, str]:
        """The new values ({name: value}) and why, or ({}, "") when no step is left."""
        rng = random.Random(f"{self.seed}:{request.experiment}")
        history = read_history(request.swarm + request.ledger)  # a swarm's results teach it too
        mark_in_flight(history, request.in_flight)
        history.steps = _steps_of_best(request.ledger)
        return self._choose(space.knobs, history, rng, request)

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
