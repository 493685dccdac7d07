"""progress.png: every experiment at its value, the kept changes as the running best, the noise
band around it, the held-out figures of the baseline and the best, failures marked by kind.

It draws facts["chart"] (engine/report/chart_data.py), the same data `report --json` prints.
"""
from __future__ import annotations

from pathlib import Path

from engine.report.lanes import plot_lanes

# kind: (marker, colour, size, legend label)
POINT_STYLE = {
    "discard": ("o", "#9e9e9e", 22, "discarded"),
    "confirm": (".", "#7b68ee", 40, "confirmation run of the best"),
    "baseline": ("s", "#1f77b4", 55, "baseline run"),
    "kept": ("o", "#2ca02c", 75, "kept change"),
}
FAILURE_STYLE = {  # drawn along the top edge: they have no value
    "crash": ("x", "#d62728", "crash (no score)"),
    "timeout": ("v", "#ff7f0e", "timeout (no score)"),
    "invalid": ("*", "#9467bd", "invalid (refused by the scorer)"),
    "unscored": ("d", "#8c564b", "unscored (trained; the scorer failed)"),
    "rejected": ("|", "#bdbdbd", "rejected by the guard (not run)"),
    "stale": ("_", "#9467bd", "stale (no longer applies)"),
}


def plot_progress(facts: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    chart = facts["chart"]
    if facts.get("lanes"):  # parallel workers or a swarm: their lanes below, along time
        fig, (ax, lanes_ax) = plt.subplots(2, 1, figsize=(15, 9.5), dpi=110, height_ratios=[3, 1.4])
        plot_lanes(lanes_ax, facts["lanes"])
    else:
        fig, ax = plt.subplots(figsize=(15, 6.5), dpi=110)
    low, high = chart["y_limits"]
    _plot_band_and_best(ax, chart)
    _plot_points(ax, chart["points"])
    _plot_clipped(ax, chart["points"], low, high)
    _plot_failures(ax, chart["points"], high)
    _plot_test(ax, chart, figure_name(facts, test=True))
    _label_kept(ax, chart["points"])
    ax.set_ylim(low, high)
    xs = [p["x"] for p in chart["points"]] or [0]
    ax.set_xlim(min(xs) - 0.6, max(max(xs) + 0.6, 1))
    kept = facts["tally"]["kept"]
    ax.set_title(f"{facts['tag']}: {len(chart['points'])} experiments, {kept} kept change{'s' if kept != 1 else ''}"
                 f"{_title_gain(facts)}", fontsize=13)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("experiment #")
    better = "higher" if facts.get("direction") == "maximize" else "lower"
    ax.set_ylabel(f"{figure_name(facts)} ({better} is better)")
    ax.grid(alpha=0.25)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8.5, framealpha=0.9, borderaxespad=0)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def figure_name(facts: dict, test: bool = False) -> str:
    if facts.get("task") == "command":
        return f"holdout {facts['metric']}" if test else facts["metric"]
    return "test_bpb" if test else "validation bits per byte"


def _plot_band_and_best(ax, chart: dict) -> None:
    line = chart["best_line"]
    if not line:
        return
    if chart["band"]:
        xs = [b[0] for b in chart["band"]]
        ax.fill_between(xs, [b[1] for b in chart["band"]], [b[2] for b in chart["band"]], step="post",
                        color="#2ca02c", alpha=0.12, linewidth=0, zorder=1,
                        label=f"noise band: best ± σ (σ {chart['noise_sigma']:.4g})")
    ax.step([p[0] for p in line], [p[1] for p in line], where="post", color="#2ca02c", linewidth=1.8,
            alpha=0.85, label="running best (kept changes; a mean where runs were repeated)", zorder=3)


def _plot_points(ax, points: list[dict]) -> None:
    for kind, (marker, colour, size, label) in POINT_STYLE.items():
        shown = [p for p in points if p["kind"] == kind and p["value"] is not None and not p["clipped"]]
        if shown:
            ax.scatter([p["x"] for p in shown], [p["value"] for p in shown], marker=marker, s=size, color=colour,
                       edgecolors="black" if kind in ("kept", "baseline") else "none", linewidths=0.7,
                       label=label, zorder=4 if kind == "kept" else 2, alpha=0.9)


def _plot_clipped(ax, points: list[dict], low: float, high: float) -> None:
    """A far outlier sits on the edge it passed, its value written beside it."""
    clipped = [p for p in points if p["clipped"]]
    for n, p in enumerate(clipped):
        above = p["value"] > high
        ax.scatter([p["x"]], [p["shown_at"]], marker="^" if above else "v", s=45,
                   color=POINT_STYLE.get(p["kind"], POINT_STYLE["discard"])[1], edgecolors="black", linewidths=0.6,
                   zorder=5, clip_on=False, label="off the scale (value written beside it)" if n == 0 else None)
        ax.annotate(f"{p['value']:.4f}", (p["x"], p["shown_at"]), xytext=(5, -11 if above else 5),
                    textcoords="offset points", fontsize=8, color="#424242", zorder=6)


def _plot_failures(ax, points: list[dict], high: float) -> None:
    for kind, (marker, colour, label) in FAILURE_STYLE.items():
        failed = [p for p in points if p["kind"] == kind]
        if failed:
            ax.scatter([p["x"] for p in failed], [high] * len(failed), marker=marker, s=60, color=colour,
                       label=label, zorder=5, clip_on=False)


def _plot_test(ax, chart: dict, name: str) -> None:
    """The held-out figures of the baseline and of the best, as hollow diamonds at their last run."""
    test = chart["test_bpb"]
    same = test.get("best_x") == test.get("baseline_x")  # no kept change: one diamond, not two on one spot
    for key, colour in (("baseline", "#1f77b4"), ("best", "#2ca02c")):
        if test.get(key) is None or test.get(f"{key}_x") is None or (same and key == "best"):
            continue
        whose = "the baseline (still the best)" if same else f"the {key}"
        ax.scatter([test[f"{key}_x"]], [test[key]], marker="D", s=60, facecolors="none", edgecolors=colour,
                   linewidths=1.6, zorder=5, label=f"{name} of {whose}: {test[key]:.4f}")


def _label_kept(ax, points: list[dict]) -> None:
    kept = [p for p in points if p["kind"] == "kept" and p["value"] is not None]
    if not kept:
        return
    middle = max(p["x"] for p in points) / 2
    for n, p in enumerate(kept):
        leftward = p["x"] > middle  # labels in the right half run left, inside the axes
        ax.annotate(_short(p["description"] or f"experiment {p['experiment']}", 48), (p["x"], p["shown_at"]),
                    xytext=(-6 if leftward else 6, 10 if n % 2 == 0 else -14), textcoords="offset points",
                    fontsize=8, rotation=-20 if leftward else 20, color="#1b5e20", ha="right" if leftward else "left",
                    rotation_mode="anchor", zorder=1.5)  # under the points: a label never hides one


def _title_gain(facts: dict) -> str:
    base, best = facts["baseline"], facts["best"]
    if not base or not best or base.get("val_bpb") is None or best.get("val_bpb") is None:
        return ""
    name = "val_bpb" if facts.get("task") != "command" else facts["metric"]
    return f"; {name} {base['val_bpb']:.4f} -> {best['val_bpb']:.4f}"


def _short(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"
