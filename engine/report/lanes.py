"""Workers in the report and status: one lane per worker, its pace, its adoptions, who found what.

The rows come from the loop's own ledger (`--workers N` rows carry `worker`) and, for a swarm
worker, from the union of every worker's file as last fetched (refs/swarm/TAG/... in the
local repository, read with git, no network) plus its own outbox, which may be fresher; files
named workers/NAME.CLONE.jsonl and, from older versions, workers/NAME.jsonl alike, each row
counted once (engine/loop/swarm_files.py). Read-only, like the rest of the report.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

from engine.loop.standings import is_kept, is_kept_change, row_value, status_word
from engine.loop.swarm_files import union_rows as rows_of_files
from engine.report.runs import parse_time

LANE_COLOURS = {"keep": "#2ca02c", "discard": "#9e9e9e", "stale": "#9467bd", "crash": "#d62728",
                "timeout": "#ff7f0e", "rejected": "#bdbdbd", "invalid": "#8c564b"}


def union_rows(run_dir: Path, rows: list[dict]) -> list[dict]:
    """Every worker's rows: the swarm's union when this loop is a swarm worker, else its own."""
    files = _fetched_files(run_dir)
    for outbox in sorted((Path(run_dir) / "swarm").glob("*.jsonl")):
        files[outbox.stem] = outbox.read_text(errors="replace")  # this worker's own, freshest
    return rows_of_files(files.values()) if files else rows


def _fetched_files(run_dir: Path) -> dict[str, str]:
    tag = Path(run_dir).name
    ref = f"refs/swarm/{tag}/autoresearch/{tag}-ledger"
    git = lambda *args: subprocess.run(["git", *args], cwd=run_dir, capture_output=True, text=True)
    listing = git("ls-tree", "--full-tree", "--name-only", f"{ref}:workers")
    if listing.returncode != 0:
        return {}
    files = {}
    for name in listing.stdout.split():
        shown = git("cat-file", "blob", f"{ref}:workers/{name}")
        if shown.returncode == 0:
            files[name.removesuffix(".jsonl")] = shown.stdout
    return files


def lane_facts(rows: list[dict]) -> dict | None:
    """Per worker: experiments, kept, adoptions, experiments per hour; the total; None when no
    row names a worker (a single loop)."""
    workers = sorted({str(r["worker"]) for r in rows if r.get("worker")})
    if not workers:
        return None
    start = min((t for t in (parse_time(r.get("started")) for r in rows) if t), default=None)
    lanes = []
    for name in workers:
        mine = [r for r in rows if r.get("worker") == name]
        ran = [r for r in mine if r.get("role") != "adopted" and r.get("status") != "rejected"]
        lanes.append({"worker": name, "experiments": len(ran), "kept": sum(1 for r in ran if is_kept_change(r)),
                      "adoptions": [_adoption(r, start) for r in mine if r.get("adopted_from")],
                      "experiments_per_hour": _per_hour(ran),
                      "points": [_lane_point(r, start) for r in ran]})
    ran_all = [r for r in rows if r.get("role") != "adopted" and r.get("status") != "rejected"]
    return {"workers": lanes, "experiments_per_hour": _per_hour(ran_all), "experiments": len(ran_all)}


def found_by(rows: list[dict], commit: str | None) -> str | None:
    """The worker whose own run first kept this commit (an adoption points back to its source)."""
    for row in rows:
        if row.get("commit") == commit and is_kept(row) and row.get("role") != "adopted":
            return row.get("adopted_from") if row.get("verified_adoption") else row.get("worker")
    adopted = next((r for r in rows if r.get("commit") == commit and r.get("adopted_from")), None)
    return adopted.get("adopted_from") if adopted else None


def _per_hour(rows: list[dict]) -> float | None:
    starts = [t for t in (parse_time(r.get("started")) for r in rows) if t]
    ends = [t for t in (parse_time(r.get("finished")) for r in rows) if t]
    if not starts or not ends:
        return None
    hours = (max(ends) - min(starts)).total_seconds() / 3600
    return round(len(rows) / hours, 2) if hours > 0 else None


def _hours(row: dict, start) -> float | None:
    when = parse_time(row.get("finished"))
    return None if when is None or start is None else round((when - start).total_seconds() / 3600, 5)


def _lane_point(row: dict, start) -> dict:
    return {"experiment": row.get("experiment"), "status": status_word(row), "kept": is_kept_change(row),
            "val_bpb": row_value(row), "hours": _hours(row, start), "description": row.get("description", "")}


def _adoption(row: dict, start) -> dict:
    return {"from": row.get("adopted_from"), "commit": row.get("commit"), "hours": _hours(row, start),
            "verified": bool(row.get("verified_adoption"))}


def plot_lanes(ax, lanes: dict) -> None:
    """One row per worker along time: each run coloured by its status, adoptions as arrows
    from the lane of the worker whose best was taken."""
    names = [lane["worker"] for lane in lanes["workers"]]
    times = [p["hours"] for lane in lanes["workers"] for p in lane["points"] if p["hours"] is not None]
    scale, unit = (60.0, "minutes") if times and max(times) < 1 else (1.0, "hours")
    lanes = {**lanes, "workers": [_scaled(lane, scale) for lane in lanes["workers"]]}
    seen = set()
    for y, lane in enumerate(lanes["workers"]):
        for point in lane["points"]:
            if point["hours"] is None:
                continue
            status = "keep" if point["kept"] else point["status"]
            label = status if status not in seen else None
            seen.add(status)
            ax.scatter([point["hours"]], [y], s=40 if point["kept"] else 18, zorder=3, label=label,
                       color=LANE_COLOURS.get(status, "#9e9e9e"), edgecolors="black" if point["kept"] else "none")
        for adoption in lane["adoptions"]:
            if adoption["hours"] is None:
                continue
            source = names.index(adoption["from"]) if adoption["from"] in names else y
            ax.annotate("", xy=(adoption["hours"], y), xytext=(adoption["hours"], source),
                        arrowprops={"arrowstyle": "->", "color": "#1f77b4", "lw": 1.2}, zorder=2)
            ax.scatter([adoption["hours"]], [y], marker="*", s=110, color="#1f77b4", zorder=4,
                       label=None if "adopted" in seen else "adopted another's best")
            seen.add("adopted")
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels([f"{lane['worker']} ({lane['experiments_per_hour'] or 0:.0f}/h)" for lane in lanes["workers"]])
    ax.set_ylim(-0.7, len(names) - 0.3)
    ax.set_xlabel(f"{unit} since the first run")
    ax.set_title(f"workers: {lanes['experiments']} experiments, {lanes['experiments_per_hour'] or 0:.1f} per hour "
                 "in total", fontsize=11)
    ax.grid(alpha=0.25)
    ax.legend(loc="upper left", fontsize=8, ncol=4, framealpha=0.9)


def _scaled(lane: dict, scale: float) -> dict:
    times = lambda items: [{**i, "hours": None if i["hours"] is None else i["hours"] * scale} for i in items]
    return {**lane, "points": times(lane["points"]), "adoptions": times(lane["adoptions"])}


def markdown_lines(lanes: dict) -> list[str]:
    lines = ["| worker | experiments | kept | adoptions (from) | experiments per hour |", "|---|---|---|---|---|"]
    for lane in lanes["workers"]:
        sources = ", ".join(a["from"] for a in lane["adoptions"]) or "-"
        rate = lane["experiments_per_hour"]
        lines.append(f"| {lane['worker']} | {lane['experiments']} | {lane['kept']} | "
                     f"{len(lane['adoptions'])} ({sources}) | {'-' if rate is None else f'{rate:.1f}'} |")
    total = lanes["experiments_per_hour"]
    lines.append(f"| all | {lanes['experiments']} | | | {'-' if total is None else f'{total:.1f}'} |")
    return lines
