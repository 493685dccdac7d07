"""Standings: the facts every part derives from ledger rows, defined once.

"Best" means one thing everywhere (the loop, status, report, sample): the last kept row.
The loop keeps a row only when it beats the best so far, so the branch head is the last
kept row; its score is `best_after`, which for the baseline and for a change confirmed by
a re-run is a mean over runs, not the lowest single run.
"""
from __future__ import annotations

import math


def finite(value) -> float | None:
    """A real number, or None for missing, NaN or infinite figures."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def is_kept(row: dict) -> bool:
    return bool(row.get("kept", row.get("status") == "keep"))


def is_baseline(row: dict) -> bool:
    return row.get("role") == "baseline" if "role" in row else row.get("experiment") == 0


def metric_of(row: dict) -> str:
    """The name of the figure a row was judged by: val_bpb, or a command task's metric."""
    return str(row.get("metric") or "val_bpb")


def row_value(row: dict) -> float | None:
    """The row's own figure (val_bpb, or its command task's metric)."""
    return finite(row.get(metric_of(row)))


def direction_of(rows: list[dict]) -> str:
    """minimize or maximize: what the rows' task asked for (minimize when no row says)."""
    for row in reversed(rows):
        if row.get("direction") in ("minimize", "maximize"):
            return row["direction"]
    return "minimize"


def metric_name(rows: list[dict]) -> str:
    """The metric of a loop's rows: the one its scored rows name (val_bpb for a train task)."""
    for row in reversed(rows):
        if row.get("metric"):
            return str(row["metric"])
    return "val_bpb"


def row_objective(row: dict) -> tuple[str, str] | None:
    """(metric, direction) a row was recorded under, or None for a row of an older ledger that
    does not say (only scored rows of command tasks did)."""
    if row.get("metric") and row.get("direction") in ("minimize", "maximize"):
        return str(row["metric"]), str(row["direction"])
    return None


def tag_objective(rows: list[dict]) -> tuple[str, str] | None:
    """A tag's metric and direction, fixed by its first row (older ledgers: by the rows that say)."""
    if not rows:
        return None
    return row_objective(rows[0]) or (metric_name(rows), direction_of(rows))


def objective_conflicts(rows: list[dict]) -> list[str]:
    """Rows recorded under another metric or direction than the tag's first row, in words."""
    fixed = tag_objective(rows)
    return [f"experiment {row.get('experiment')}: {' '.join(other)}" for row in rows
            if (other := row_objective(row)) is not None and fixed is not None and other != fixed]


def gain(best: float, value: float, direction: str = "minimize") -> float:
    """How much value improves on best: positive is better, whichever way the metric points."""
    return value - best if direction == "maximize" else best - value


def score(row: dict) -> float | None:
    """The figure the loop compared: for a kept row the best after it, else its own value."""
    after = finite(row.get("best_after"))
    if is_kept(row) and after is not None:
        return after
    return row_value(row)


def best_row(rows: list[dict]) -> dict | None:
    """The best so far: the last kept row that has a score."""
    kept = [row for row in rows if is_kept(row) and score(row) is not None]
    return kept[-1] if kept else None


def best_value(rows: list[dict]) -> float | None:
    best = best_row(rows)
    return score(best) if best is not None else None


def best_commit(rows: list[dict]) -> str | None:
    best = best_row(rows)
    return best.get("commit") if best is not None else None


def baseline_rows(rows: list[dict]) -> list[dict]:
    """Every run of the starting commit (the loop runs it more than once to measure noise)."""
    return [row for row in rows if is_baseline(row)]


def baseline_value(rows: list[dict]) -> float | None:
    """The mean of the baseline's runs."""
    values = [v for v in (row_value(r) for r in baseline_rows(rows)) if v is not None]
    return sum(values) / len(values) if values else None


def noise(rows: list[dict]) -> float:
    """Run-to-run noise: the spread of the baseline's runs (0 with fewer than two)."""
    values = [v for v in (row_value(r) for r in baseline_rows(rows)) if v is not None]
    return max(values) - min(values) if len(values) > 1 else 0.0


def count_statuses(rows: list[dict], statuses: tuple[str, ...]) -> dict[str, int]:
    counts = {status: 0 for status in statuses}
    for row in rows:
        status = str(row.get("status", "unknown"))
        counts[status] = counts.get(status, 0) + 1
    return counts


def misses_in_a_row(rows: list[dict]) -> int:
    """Candidates since the last keep that did not improve (rejected ones included);
    a first run waiting for its re-run does not count."""
    count = 0
    for row in reversed(rows):
        if is_kept(row):
            break
        if not row.get("needs_rerun"):
            count += 1
    return count


def total_cost(rows: list[dict]) -> float:
    return sum(float(row.get("cost_usd") or 0.0) for row in rows)
