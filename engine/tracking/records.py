"""What the trackers receive for one recorded experiment, built once from its ledger row.

A record holds the run's name (exp-NNNN, under its worker or node in a parallel loop, a swarm
or on Ray, so runs stay apart), its training curve (history.py), its scalars (the score, steps,
tokens, phase seconds), its hyperparameters (the editable files' UPPER_CASE constants at the
experiment's commit, with its description, status, side and worker) and the loop's series at
that experiment (its value, the best so far, the keep rate).
"""
from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

from engine.loop import standings
from engine.tracking.history import read_history

MAX_TEXT = 250  # characters of a description kept as a hyperparameter


@dataclasses.dataclass
class ExperimentRecord:
    name: str  # the run's name in every tracker: exp-0003, or w1/exp-0003
    experiment: int
    curve: list[dict]  # history.jsonl's points: step, loss, fraction, tokens_per_second, mfu_percent
    scalars: dict[str, float]  # result/<metric>, result/steps, result/tokens, seconds/<phase>
    hparams: dict[str, bool | int | float | str]
    loop: dict[str, float]  # loop/<metric>, loop/best_so_far, loop/keep_rate, loop/kept_changes
    metric: str
    group: str  # the loop's tag


def phase_seconds(row: dict) -> dict[str, float]:
    """Seconds per phase of a run: its `phase_seconds` table where the trainer wrote one, else
    every `*_seconds` figure of the row (trace, compile, training, scoring, total, wall, ...)."""
    table = row.get("phase_seconds")
    if isinstance(table, dict):
        found = {str(k): standings.finite(v) for k, v in table.items()}
    else:
        found = {key[: -len("_seconds")]: standings.finite(value) for key, value in row.items()
                 if key.endswith("_seconds") and not key.startswith(("remaining", "noise"))}
    if "wall" not in found:
        found["wall"] = standings.finite(row.get("wall_seconds"))
    return {k: v for k, v in found.items() if v is not None}


def run_name(row: dict) -> str:
    experiment = row.get("experiment")
    name = f"exp-{experiment:04d}" if isinstance(experiment, int) else f"exp-{experiment}"
    owner = row.get("worker") or row.get("node")
    return f"{owner}/{name}" if owner else name


def constants(sources: dict[str, str]) -> dict[str, bool | int | float | str]:
    """The UPPER_CASE constants of the editable files: every number the offline agent tunes
    (engine/agents/knobs.py: train.py's constants and settings tables, a command task's YAML,
    JSON, TOML or SQL numbers), and train.py's UPPER_CASE strings and booleans. Several files:
    each name starts with its file."""
    from engine.agents.knobs import find_knobs
    from engine.agents.text_knobs import find_text_knobs

    found: dict = {}
    for path, source in sources.items():
        prefix = f"{path}/" if len(sources) > 1 else ""
        try:
            if path.endswith(".py"):
                values = {k.name: k.value for k in find_knobs(source)} | _named_literals(source)
            else:
                values = {name: value for name, value, _, _ in find_text_knobs(path, source)}
        except (SyntaxError, ValueError):
            continue  # a candidate the guard refused for not parsing has no constants
        found.update({prefix + name: value for name, value in values.items()})
    return found


def _named_literals(source: str) -> dict[str, bool | str]:
    values = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name, value = node.targets[0].id, node.value
            if name.isupper() and isinstance(value, ast.Constant) and isinstance(value.value, (bool, str)):
                values[name] = value.value
    return values


def experiment_record(row: dict, rows: list[dict], exp_dir: Path | None, sources: dict[str, str],
                      tag: str) -> ExperimentRecord:
    """The record of `row` (the last of `rows`, just appended), its run's files in `exp_dir`,
    the editable files' text at its commit in `sources` (path -> text)."""
    metric = standings.metric_of(row)
    value = standings.row_value(row)
    scalars = {f"result/{metric}": value, "result/steps": standings.finite(row.get("num_steps")),
               "result/tokens_M": standings.finite(row.get("total_tokens_M")),
               "result/test_bpb": standings.finite(row.get("test_bpb")),
               **{f"seconds/{phase}": seconds for phase, seconds in phase_seconds(row).items()}}
    meta = {"description": str(row.get("description") or "")[:MAX_TEXT], "status": standings.status_word(row),
            "role": str(row.get("role") or ""), "side": standings.side_of(row),
            "commit": str(row.get("commit") or "")[:7], "experiment": row.get("experiment"),
            **{key: str(row[key]) for key in ("worker", "node") if row.get(key)}}
    hparams = {k: v for k, v in {**constants(sources), **meta}.items() if isinstance(v, (bool, int, float, str))}
    return ExperimentRecord(name=run_name(row), experiment=int(row.get("experiment") or 0),
                            curve=read_history(exp_dir), metric=metric, group=tag, hparams=hparams,
                            scalars={k: v for k, v in scalars.items() if v is not None},
                            loop=loop_series(row, rows))


def loop_series(row: dict, rows: list[dict]) -> dict[str, float]:
    """The loop's figures after `row`: its value, the best so far, kept changes and the keep rate."""
    counts = standings.tally(rows)
    best = standings.best_value(rows)
    series = {f"loop/{standings.metric_of(row)}": standings.row_value(row), "loop/best_so_far": best,
              "loop/kept_changes": float(counts["kept"]),
              "loop/keep_rate": counts["kept"] / counts["candidates"] if counts["candidates"] else None}
    return {k: v for k, v in series.items() if v is not None}
