"""The ledger as a study: each row a finished trial, each idea in flight a running one.

A row says only what it changed (`NAME: OLD -> NEW, ...`), so a trial's whole configuration
is rebuilt: the origin (every knob's value before the first change) is the current value
with the kept changes undone, newest first; walking forward from it, a row's configuration
is the best's at that moment with the row's changes applied, and a kept row becomes the new
best. A row that produced no figure (a crash, a timeout, an invalid or rejected run, a failed
check) is told as the worst figure seen, so the sampler learns to stay away. The keep rule's
re-runs of a promising candidate (rows with `rerun_of`) are more runs of its trial, whose value
is the mean of them all; the best's confirmation and paired runs are measurements of the best,
not trials.
Rows of a swarm's other workers count as trials too; ideas running elsewhere are trials in
flight, which the sampler treats as bad until they finish (Optuna's constant liar) and which
are never proposed again.
"""
from __future__ import annotations

import dataclasses

from engine.agents.knobs import parse_changes

FAILED = ("crash", "timeout", "invalid", "rejected")
NOT_TRIALS = ("confirm", "pair")  # runs of the best itself (engine/loop/decide.py)


@dataclasses.dataclass
class Trial:
    params: dict[str, float]  # every knob's value in this trial
    value: float | None  # the metric; None while in flight, or when no figure exists yet to stand in
    running: bool = False


@dataclasses.dataclass
class Study:
    origin: dict[str, float]  # each knob's value before the first change
    trials: list[Trial]


def metric_of(row: dict) -> float | None:
    value = row.get(row.get("metric") or "val_bpb")
    if row.get("status") in FAILED or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def rebuild(ledger: list[dict], current: dict[str, float], direction: str,
            swarm: list[dict] = (), in_flight: list[dict] = ()) -> Study:
    """The study behind the current files: current holds each knob's value now (the best's)."""
    origin = _origin(ledger, current)
    trials, series = [], {}  # series: first experiment -> (its trial, the values of its runs)
    best = dict(origin)
    for row, mine in [*((r, False) for r in swarm), *((r, True) for r in ledger)]:
        if row.get("role") in NOT_TRIALS:
            continue
        changes = {n: new for n, (_, new) in parse_changes(row.get("description", "")).items() if n in best}
        params = {**best, **changes}
        value = metric_of(row)
        if mine and row.get("rerun_of") in series:
            trial, values = series[row["rerun_of"]]
            values += [value] if value is not None else []
            trial.value = sum(values) / len(values) if values else None
            params = trial.params
        else:
            trial = Trial(params, value)
            trials.append(trial)
            if mine:
                series[row.get("experiment")] = (trial, [value] if value is not None else [])
        if row.get("kept") and mine:  # another worker's keep moved its own best, not ours
            best = params
    _stand_in_for_failures(trials, direction)
    for idea in in_flight:
        changes = {n: new for n, (_, new) in parse_changes(idea.get("description", "")).items() if n in best}
        if changes:
            trials.append(Trial({**current, **changes}, None, running=True))
    return Study(origin, trials)


def _origin(ledger: list[dict], current: dict[str, float]) -> dict[str, float]:
    origin = dict(current)
    for row in reversed(ledger):
        if row.get("kept"):
            for name, (old, _) in parse_changes(row.get("description", "")).items():
                if name in origin:
                    origin[name] = old
    return origin


def _stand_in_for_failures(trials: list[Trial], direction: str) -> None:
    values = [t.value for t in trials if t.value is not None]
    if not values:
        return
    worst = min(values) if direction == "maximize" else max(values)
    for trial in trials:
        if trial.value is None:
            trial.value = worst
