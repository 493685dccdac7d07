"""The chart's data: every experiment as a point, the running best, the noise band, the
held-out figures and the y range, as plain JSON (`report --json`'s "chart"); chart.py draws it.

Every scored experiment is a point at its own value. The y range covers every point; only a
far outlier (beyond the middle half of the values by more than OUTLIER_SPANS times its width)
is clipped to the edge, and it keeps its value to be written beside it. Failed runs (crash,
timeout, invalid, unscored, rejected) have no value: they sit on the top edge, by kind.
"""
from __future__ import annotations

from engine.loop.standings import FAILED, finite, is_baseline, is_kept_change, status_word

OUTLIER_SPANS = 3.0
FAILED_KINDS = (*FAILED, "stale")


def point_kind(row: dict) -> str:
    """baseline, kept (a kept change), confirm, discard (a candidate not kept), or a failure's status."""
    word = status_word(row)
    if word in FAILED_KINDS:
        return word
    if is_baseline(row):
        return "baseline"
    if is_kept_change(row):
        return "kept"
    if word in ("confirm", "adopted"):
        return "confirm"
    return "discard"


def chart_data(points: list[dict], noise_sigma: float | None, baseline: dict | None, best: dict | None) -> dict:
    """points: report facts' experiments (experiment, val_bpb, kind, best_after, baseline, description)."""
    marks = [{"experiment": p["experiment"], "x": _x(p, i), "value": p["val_bpb"], "kind": p["kind"],
              "description": p.get("description") or ""} for i, p in enumerate(points)]
    tests = [entry.get("test_bpb") for entry in (baseline, best) if entry and entry.get("test_bpb") is not None]
    low, high = _limits([m["value"] for m in marks if m["value"] is not None] + tests)
    for mark in marks:
        value = mark["value"]
        mark["clipped"] = value is not None and not low <= value <= high
        mark["shown_at"] = None if value is None else min(max(value, low), high)
    best_line = _best_line(points)
    return {"points": marks, "best_line": best_line,
            "noise_sigma": noise_sigma,
            "band": [[x, y - noise_sigma, y + noise_sigma] for x, y in best_line] if noise_sigma else [],
            "test_bpb": {"baseline": (baseline or {}).get("test_bpb"), "best": (best or {}).get("test_bpb"),
                         "baseline_x": _last(baseline), "best_x": _last(best)},
            "y_limits": [low, high]}


def _limits(values: list[float]) -> tuple[float, float]:
    if not values:
        return 0.0, 1.0
    ordered = sorted(values)
    q1, q3 = _quantile(ordered, 0.25), _quantile(ordered, 0.75)
    spread = max(q3 - q1, 1e-3 * abs(_quantile(ordered, 0.5)), 1e-9)
    lowest = max(ordered[0], q1 - OUTLIER_SPANS * spread)
    highest = min(ordered[-1], q3 + OUTLIER_SPANS * spread)
    margin = 0.08 * max(highest - lowest, spread)
    return (lowest - margin if lowest == ordered[0] else lowest,
            highest + margin if highest == ordered[-1] else highest)


def _quantile(ordered: list[float], q: float) -> float:
    position = q * (len(ordered) - 1)
    below = int(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def _best_line(points: list[dict]) -> list[list[float]]:
    """The loop's best after each experiment, from the last baseline run on (where its mean is known)."""
    baseline_runs = [i for i, p in enumerate(points) if p["baseline"]]
    line, best = [], None
    for i, p in enumerate(points[baseline_runs[-1] if baseline_runs else 0:], start=baseline_runs[-1] if baseline_runs else 0):
        after = finite(p.get("best_after"))
        best = after if after is not None else best
        if best is not None:
            line.append([_x(p, i), best])
    return line


def _x(point: dict, index: int) -> int:
    experiment = point.get("experiment")
    return experiment if isinstance(experiment, int) else index


def _last(entry: dict | None) -> int | None:
    runs = (entry or {}).get("experiments") or []
    return runs[-1] if runs else None
