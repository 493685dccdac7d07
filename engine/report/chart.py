"""progress.png: every experiment's val_bpb in order, kept ones labelled, the best so far."""
from __future__ import annotations

from pathlib import Path

from engine.report.lanes import plot_lanes

STATUS_STYLE = {  # status: (marker, colour, legend label), drawn along the top edge
    "crash": ("x", "#d62728", "crash"),
    "timeout": ("v", "#ff7f0e", "timeout"),
    "invalid": ("*", "#9467bd", "invalid (refused by the scorer)"),
    "rejected": ("|", "#bdbdbd", "rejected by the guard (not run)"),
}


def plot_progress(facts: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    # A maximized metric is drawn negated on a flipped axis, so "better" is up and the zoom
    # below (made for lower-is-better figures) holds for both directions.
    sign = -1.0 if facts.get("direction") == "maximize" else 1.0
    points = [_signed(dict(p, _x=_x(p, i)), sign) for i, p in enumerate(facts["experiments"])]
    scored = [p for p in points if p["val_bpb"] is not None]
    if facts.get("lanes"):  # parallel workers or a swarm: their lanes below, along time
        fig, (ax, lanes_ax) = plt.subplots(2, 1, figsize=(13, 9.5), dpi=110, height_ratios=[3, 1.4])
        plot_lanes(lanes_ax, facts["lanes"])
    else:
        fig, ax = plt.subplots(figsize=(13, 6.5), dpi=110)
    low, high = _y_range(scored, _signed(dict(facts["baseline"] or {}), sign))
    edge = high - 0.02 * (high - low)
    _plot_spread(ax, scored)
    _plot_discarded(ax, scored, edge)
    _plot_best_line(ax, points)
    _plot_kept(ax, scored)
    _plot_failures(ax, points, edge)
    ax.set_ylim(low, high)
    if sign < 0:
        from matplotlib.ticker import FuncFormatter
        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{-y:g}"))
        ax.invert_yaxis()
    xs = [p["_x"] for p in points]
    ax.set_xlim(min(xs) - 0.5, max(max(xs) + 0.5, 1))
    improvements = len(facts["kept"])
    ax.set_title(f"{facts['tag']}: {len(points)} experiments, {improvements} kept "
                 f"improvement{'s' if improvements != 1 else ''}"
                 f"{_title_gain(facts)}", fontsize=13)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("experiment #")
    ax.set_ylabel("validation bits per byte (lower is better)" if facts.get("task") != "command" else
                  f"{facts['metric']} ({'higher' if sign < 0 else 'lower'} is better)")
    ax.grid(alpha=0.25)
    ax.legend(loc="lower left", fontsize=9, framealpha=0.9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _y_range(scored: list[dict], baseline: dict | None) -> tuple[float, float]:
    """Zoom on the baseline and below: a few terrible runs must not flatten the rest."""
    if not scored:
        return 0.0, 1.0
    values = sorted(p["val_bpb"] for p in scored)
    bottom = values[0]
    top = (baseline or {}).get("val_bpb") or values[len(values) // 2]
    span = max(top - bottom, 1e-3 * abs(top), 1e-6)
    shown_top = max([top] + [v for v in values if v <= top + 1.5 * span])
    height = shown_top - bottom
    return bottom - 0.08 * height, shown_top + 0.12 * height


def _signed(point: dict, sign: float) -> dict:
    for key in ("val_bpb", "best_after"):
        if point.get(key) is not None:
            point[key] = sign * point[key]
    return point


def _x(point: dict, index: int) -> int:
    experiment = point.get("experiment")
    return experiment if isinstance(experiment, int) else index


def _plot_spread(ax, scored: list[dict]) -> None:
    """Each commit run more than once (baseline, re-runs, confirmations): its runs joined by a thin
    line and its range as a bar at its last run, so the run-to-run noise is seen beside the gains."""
    groups: dict[str, list[dict]] = {}
    for p in scored:
        if p.get("commit") and p.get("role") != "adopted":
            groups.setdefault(p["commit"], []).append(p)
    labelled = False
    for runs in groups.values():
        if len(runs) < 2:
            continue
        values = [p["val_bpb"] for p in runs]
        ax.plot([p["_x"] for p in runs], values, color="#7b68ee", linewidth=0.8, alpha=0.5, zorder=1)
        ax.vlines(runs[-1]["_x"], min(values), max(values), color="#7b68ee", linewidth=3, alpha=0.6, zorder=1,
                  label=None if labelled else "spread of a commit's repeated runs")
        labelled = True


def _plot_discarded(ax, scored: list[dict], high: float) -> None:
    shown = [p for p in scored if not p["kept"] and not p["baseline"]]
    inside = [p for p in shown if p["val_bpb"] <= high]
    above = [p for p in shown if p["val_bpb"] > high]
    if inside:
        ax.scatter([p["_x"] for p in inside], [p["val_bpb"] for p in inside], s=22,
                   color="#9e9e9e", alpha=0.7, label="discarded", zorder=2)
    if above:
        ax.scatter([p["_x"] for p in above], [high] * len(above), s=30, marker="^",
                   color="#9e9e9e", label="discarded, off the chart", zorder=2, clip_on=False)


def _plot_best_line(ax, points: list[dict]) -> None:
    """The loop's own best after each experiment (a mean where it averaged runs).

    It starts at the last baseline run, where the baseline's mean is known: drawn from
    the first run, it would rise as the mean came in and read as a regression."""
    baseline_runs = [i for i, p in enumerate(points) if p["baseline"]]
    xs, ys, best = [], [], None
    for p in points[baseline_runs[-1] if baseline_runs else 0:]:
        if p["score"] is not None and (best is None or p["score"] < best):
            best = p["score"]
        best = p["best_after"] if p["best_after"] is not None else best
        if best is not None:
            xs.append(p["_x"])
            ys.append(best)
    if xs:
        ax.step(xs, ys, where="post", color="#2ca02c", linewidth=1.8, alpha=0.8,
                label="best so far", zorder=3)


def _plot_kept(ax, scored: list[dict]) -> None:
    baseline = [p for p in scored if p["baseline"]]
    if baseline:
        ax.scatter([p["_x"] for p in baseline], [p["val_bpb"] for p in baseline], s=60, marker="s",
                   color="#1f77b4", edgecolors="black", linewidths=0.8,
                   label=f"baseline ({len(baseline)} run{'s' if len(baseline) > 1 else ''})", zorder=4)
        ax.annotate("baseline", (baseline[0]["_x"], baseline[0]["val_bpb"]), xytext=(6, 10),
                    textcoords="offset points", fontsize=8, rotation=25, color="#0d3c61", zorder=5)
    kept = [p for p in scored if p["kept"] and not p["baseline"]]
    if not kept:
        return
    ax.scatter([p["_x"] for p in kept], [p["val_bpb"] for p in kept], s=70, color="#2ca02c",
               edgecolors="black", linewidths=0.8, label="kept", zorder=4)
    middle = max(p["_x"] for p in scored) / 2
    for n, p in enumerate(kept):
        label = _short(p["description"] or f"experiment {p['experiment']}", 48)
        leftward = p["_x"] > middle  # labels in the right half run left, inside the axes
        ax.annotate(label, (p["_x"], p["val_bpb"]), xytext=(-6 if leftward else 6, 10 if n % 2 == 0 else -14),
                    textcoords="offset points", fontsize=8, rotation=-25 if leftward else 25,
                    color="#1b5e20", ha="right" if leftward else "left", rotation_mode="anchor", zorder=5)


def _plot_failures(ax, points: list[dict], high: float) -> None:
    for status, (marker, colour, label) in STATUS_STYLE.items():
        failed = [p for p in points if p["status"] == status]
        if failed:
            ax.scatter([p["_x"] for p in failed], [high] * len(failed), marker=marker, s=55,
                       color=colour, label=label, zorder=4, clip_on=False)


def _title_gain(facts: dict) -> str:
    base, best = facts["baseline"], facts["best"]
    if not base or not best or base.get("val_bpb") is None or best.get("val_bpb") is None:
        return ""
    name = "val_bpb" if facts.get("task") != "command" else facts["metric"]
    return f"; {name} {base['val_bpb']:.4f} -> {best['val_bpb']:.4f}"


def _short(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"
