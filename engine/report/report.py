"""`autoresearch report`: the morning report of a loop.

Writes progress.png (every experiment's val_bpb, kept ones labelled, the best so
far) and report.md (hardware, budget, baseline vs best on val and held-out test,
rates, the kept changes with their diffs). `--json` prints the same facts.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from engine.report import heldout
from engine.errors import UserError
from engine.report.status import (baseline_rows, count_statuses, finite_bpb, is_baseline, is_kept,
                           parse_time, read_ledger, resolve_run_dir, running_loops, score)

MAX_DIFF_LINES = 200
# A kept change is suspect when test_bpb moves against val_bpb by more than this.
DISAGREEMENT_TOLERANCE = 1e-4


def main(args) -> int:
    run_dir = resolve_run_dir(args.tag)
    rows = read_ledger(run_dir)
    if not rows:
        raise UserError(f"loop {run_dir.name!r} has no finished experiment yet in {run_dir}: "
                        "wait for the baseline, or check `autoresearch status`")
    out = Path(args.out) if args.out else run_dir
    out.mkdir(parents=True, exist_ok=True)
    progress = None if args.json else (lambda message: print(message, file=sys.stderr))
    facts = gather_facts(run_dir, rows, repo_root=run_dir.parent.parent, log=progress)
    facts["files"] = {"progress_png": str(out / "progress.png"), "report_md": str(out / "report.md")}
    plot_progress(facts, out / "progress.png")
    (out / "report.md").write_text(render_markdown(facts), encoding="utf-8")
    if args.json:
        print(json.dumps(facts, indent=2))
    else:
        print("\n".join(summary_lines(facts)))
    return 0


# ---------------------------------------------------------------- facts

def gather_facts(run_dir: Path, rows: list[dict], repo_root: Path, log=None) -> dict:
    groups = kept_commits(rows)
    base_group = groups[0] if groups and is_baseline(groups[0]["kept_row"]) else None
    runs = [r for g in groups for r in g["runs"]]
    tests = heldout.test_figures(run_dir, runs, repo_root, log=log or (lambda m: None),
                                 busy=_accelerator_busy(run_dir))
    entries = [_group_entry(g, tests) for g in groups]
    baseline = entries[0] if base_group else _failed_baseline(rows)
    changes = entries[1:] if base_group else entries
    facts = {
        "tag": run_dir.name,
        "run_dir": str(run_dir),
        "hardware": _hardware(rows),
        "budget": _common(rows, "budget"),
        "manifest_fingerprint": _common(rows, "manifest_fingerprint"),
        **_pace(rows),
        "counts": count_statuses(rows),
        "counts_after_baseline": count_statuses(_after_baseline(rows)),
        "rates": _rates(rows),
        "agent_cost_usd": round(sum(float(r.get("cost_usd") or 0) for r in rows), 4),
        "noise": _number(rows[-1].get("noise")),
        "baseline": baseline,
        "best": min(entries, key=lambda e: e["val_bpb"]) if entries else None,
        "experiments": [_point(r) for r in rows],
    }
    facts["gain"] = _gains(facts["baseline"], facts["best"])
    facts["kept"] = _with_gains(changes, baseline, repo_root)
    facts["warnings"] = _warnings(facts)
    return facts


def _accelerator_busy(run_dir: Path) -> str | None:
    """A running loop holds the accelerator (a TPU admits one process)."""
    loops = running_loops(run_dir.parent)
    if not loops:
        return None
    return "a loop is running (" + ", ".join(f"tag {t}, pid {p}" for t, p in loops) + ")"


def kept_commits(rows: list[dict]) -> list[dict]:
    """Each commit the loop kept, in order, with every run of it that scored (a baseline or a
    change confirmed by a re-run has several)."""
    groups: dict[str, dict] = {}
    for row in rows:
        if is_kept(row) and score(row) is not None and row.get("commit"):
            groups.setdefault(row["commit"], {"commit": row["commit"]})["kept_row"] = row
    for group in groups.values():
        group["runs"] = [r for r in rows if r.get("commit") == group["commit"]
                         and finite_bpb(r) is not None]
    return list(groups.values())


def _group_entry(group: dict, tests: dict) -> dict:
    kept_row, runs = group["kept_row"], group["runs"]
    figures = [tests.get(r.get("experiment"), {}) for r in runs]
    values = [f["test_bpb"] for f in figures if f.get("test_bpb") is not None]
    errors = [f["error"] for f in figures if f.get("error")]
    return {"experiment": kept_row.get("experiment"),
            "experiments": [r.get("experiment") for r in runs],
            "commit": group["commit"],
            "description": runs[0].get("description") if runs else kept_row.get("description"),
            "val_bpb": score(kept_row),
            "test_bpb": round(sum(values) / len(values), 6) if values else None,
            "test_error": None if values else (errors[0] if errors else "not evaluated")}


def _failed_baseline(rows: list[dict]) -> dict | None:
    first = next(iter(baseline_rows(rows)), None)
    if first is None:
        return None
    return {"experiment": first.get("experiment"), "experiments": [first.get("experiment")],
            "commit": first.get("commit"), "description": first.get("description"),
            "val_bpb": None, "test_bpb": None, "test_error": f"the baseline {first.get('status')}"}


def _after_baseline(rows: list[dict]) -> list[dict]:
    return [r for r in rows if not is_baseline(r)]


def _hardware(rows: list[dict]) -> dict:
    row = next((r for r in rows if r.get("device")), {})
    return {key: row.get(key) for key in ("device", "platform", "num_devices", "num_processes")}


def _common(rows: list[dict], key: str):
    """The value every run shares; several values are reported as a list."""
    values = list(dict.fromkeys(r.get(key) for r in rows if r.get(key) is not None))
    if len(values) > 1:
        return values
    return values[0] if values else None


def _pace(rows: list[dict]) -> dict:
    starts = [t for t in (parse_time(r.get("started")) for r in rows) if t]
    ends = [t for t in (parse_time(r.get("finished")) for r in rows) if t]
    if not starts or not ends:
        return {"started": None, "finished": None, "hours": None, "experiments_per_hour": None}
    hours = max((max(ends) - min(starts)).total_seconds() / 3600, 1e-9)
    ran = sum(1 for r in rows if r.get("status") != "rejected")
    return {"started": min(starts).isoformat(), "finished": max(ends).isoformat(),
            "hours": round(hours, 4), "experiments_per_hour": round(ran / hours, 2)}


def _rates(rows: list[dict]) -> dict:
    """Shares of the experiments after the baseline that ran (rejected ones never ran)."""
    ran = [r for r in _after_baseline(rows) if r.get("status") != "rejected"]
    if not ran:
        return {"keep": None, "discard": None, "crash": None, "timeout": None, "invalid": None}
    share = lambda status: round(sum(r.get("status") == status for r in ran) / len(ran), 4)
    return {"keep": round(sum(is_kept(r) for r in ran) / len(ran), 4), "discard": share("discard"),
            "crash": share("crash"), "timeout": share("timeout"), "invalid": share("invalid")}


def _point(row: dict) -> dict:
    return {"experiment": row.get("experiment"), "status": row.get("status"),
            "baseline": is_baseline(row), "kept": is_kept(row), "val_bpb": finite_bpb(row), "score": score(row) if is_kept(row) else None,
            "best_after": _number(row.get("best_after")),
            "description": row.get("description", "")}


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and value == value else None


def _gains(base: dict | None, best: dict | None) -> dict:
    gains = {}
    for metric in ("val_bpb", "test_bpb"):
        before = base and base.get(metric)
        after = best and best.get(metric)
        if before and after is not None:
            gains[metric] = {"absolute": round(before - after, 6),
                             "relative": round((before - after) / before, 6)}
        else:
            gains[metric] = None
    return gains


def _with_gains(changes: list[dict], baseline: dict | None, repo_root: Path) -> list[dict]:
    """Each kept change's gain over the one before it (positive: lower bpb) and its diff."""
    previous = baseline
    for change in changes:
        for metric, key in (("val_bpb", "val_gain"), ("test_bpb", "test_gain")):
            before = previous and previous.get(metric)
            after = change.get(metric)
            change[key] = None if before is None or after is None else round(before - after, 6)
        change["diff"] = _diff(repo_root, previous and previous.get("commit"), change["commit"])
        previous = change
    return changes


def _diff(repo_root: Path, old: str | None, new: str | None) -> str:
    if not old or not new:
        return ""
    try:
        import git  # GitPython, only where it is used

        text = git.Repo(repo_root).git.diff(old, new)
    except Exception as error:  # a commit gone from the repository, or no repository
        return f"(diff unavailable: {str(error).splitlines()[0] if str(error) else error})"
    lines = text.splitlines()
    if len(lines) > MAX_DIFF_LINES:
        lines = lines[:MAX_DIFF_LINES] + [f"... ({len(lines) - MAX_DIFF_LINES} more lines)"]
    return "\n".join(lines)


def _warnings(facts: dict) -> list[str]:
    warnings = []
    for key, what in (("manifest_fingerprint", "datasets"), ("budget", "budgets")):
        if isinstance(facts[key], list):
            warnings.append(f"experiments ran on different {what} ({', '.join(map(str, facts[key]))}): "
                            "their val_bpb are not comparable")
    val, test = facts["gain"]["val_bpb"], facts["gain"]["test_bpb"]
    if val and test and val["absolute"] > 0:
        if test["absolute"] <= 0:
            warnings.append(f"val_bpb improved by {val['absolute']:.6f} but held-out test_bpb "
                            f"did not ({-test['absolute']:+.6f}): the validation set may be over-fitted")
        elif test["relative"] < 0.5 * val["relative"]:
            warnings.append(f"held-out test_bpb improved {test['relative']:.2%}, under half the "
                            f"val_bpb gain of {val['relative']:.2%}: part of the gain may be "
                            "over-fitting the validation set")
    for change in facts["kept"]:
        if (change["val_gain"] or 0) > 0 and (change["test_gain"] or 0) < -DISAGREEMENT_TOLERANCE:
            warnings.append(f"experiment {change['experiment']} ({change['description']!r}) improved "
                            f"val_bpb by {change['val_gain']:.6f} but worsened test_bpb by "
                            f"{-change['test_gain']:.6f}")
    for entry in [facts["baseline"], *facts["kept"]]:
        if entry and entry.get("test_error"):
            warnings.append(f"no test_bpb for experiment {entry['experiment']}: {entry['test_error']}")
    return warnings


# ---------------------------------------------------------------- picture

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

    points = [dict(p, _x=_x(p, i)) for i, p in enumerate(facts["experiments"])]
    scored = [p for p in points if p["val_bpb"] is not None]
    fig, ax = plt.subplots(figsize=(13, 6.5), dpi=110)
    low, high = _y_range(scored, facts["baseline"])
    edge = high - 0.02 * (high - low)
    _plot_discarded(ax, scored, edge)
    _plot_best_line(ax, points)
    _plot_kept(ax, scored)
    _plot_failures(ax, points, edge)
    ax.set_ylim(low, high)
    xs = [p["_x"] for p in points]
    ax.set_xlim(min(xs) - 0.5, max(max(xs) + 0.5, 1))
    improvements = len(facts["kept"])
    ax.set_title(f"{facts['tag']}: {len(points)} experiments, {improvements} kept "
                 f"improvement{'s' if improvements != 1 else ''}"
                 f"{_title_gain(facts)}", fontsize=13)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("experiment #")
    ax.set_ylabel("validation bits per byte (lower is better)")
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


def _x(point: dict, index: int) -> int:
    experiment = point.get("experiment")
    return experiment if isinstance(experiment, int) else index


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
    return f"; val_bpb {base['val_bpb']:.4f} -> {best['val_bpb']:.4f}"


def _short(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


# ---------------------------------------------------------------- words

def render_markdown(facts: dict) -> str:
    parts = [f"# Research report: {facts['tag']}", "", *_setup_lines(facts), "",
             "## Result", "", *_result_table(facts), ""]
    if facts["warnings"]:
        parts += ["## Warnings", "", *[f"- **{w}**" for w in facts["warnings"]], ""]
    parts += ["## Experiments", "", *_counts_table(facts), "",
              "![val_bpb of every experiment](progress.png)", "",
              "## Kept changes", ""]
    parts += _kept_sections(facts) or ["No change beat the baseline."]
    return "\n".join(parts).rstrip() + "\n"


def _setup_lines(facts: dict) -> list[str]:
    hw = facts["hardware"]
    device = hw.get("device") or "unknown device"
    count = hw.get("num_devices")
    devices = f", {count} device{'s' if count != 1 else ''}" if count else ""
    extra = f" ({hw['platform']}{devices})" if hw.get("platform") else ""
    lines = [f"- Hardware: {device}{extra}",
             f"- Budget per experiment: {facts['budget'] or 'unknown'}",
             f"- Data: manifest {_fingerprint(facts['manifest_fingerprint'])}"]
    if facts["hours"] is not None:
        lines.append(f"- Ran {facts['started'][:16].replace('T', ' ')} to "
                     f"{facts['finished'][:16].replace('T', ' ')}: {facts['hours']:.2f} h, "
                     f"{facts['experiments_per_hour']:.1f} experiments per hour")
    if facts["noise"]:
        lines.append(f"- Run-to-run noise (spread of the baseline runs): {facts['noise']:.6f} bpb; "
                     "a smaller gain had to hold up in a re-run with another seed")
    if facts["agent_cost_usd"]:
        lines.append(f"- Agent cost: ${facts['agent_cost_usd']:.2f}")
    return lines


def _result_table(facts: dict) -> list[str]:
    base, best, gain = facts["baseline"], facts["best"], facts["gain"]
    rows = ["| | experiment | val_bpb | test_bpb (held out) |", "|---|---|---|---|"]
    for name, entry in (("baseline", base), ("best", best)):
        if entry:
            rows.append(f"| {name} | {_experiments(entry)} `{_commit(entry)}` | "
                        f"{_num(entry['val_bpb'])} | {_num(entry['test_bpb'])} |")
    rows.append(f"| gain | | {_gain(gain['val_bpb'])} | {_gain(gain['test_bpb'])} |")
    return rows


def _counts_table(facts: dict) -> list[str]:
    counts, rates = facts["counts_after_baseline"], facts["rates"]
    rows = ["| status | changes tried after the baseline | share of those that ran |",
            "|---|---|---|"]
    for status, count in counts.items():
        rate = rates.get(status)
        rows.append(f"| {status} | {count} | {'' if rate is None else f'{rate:.0%}'} |")
    return rows


def _kept_sections(facts: dict) -> list[str]:
    lines = []
    for n, change in enumerate(facts["kept"], 1):
        runs = "experiments" if len(change["experiments"]) > 1 else "experiment"
        lines += [f"### {n}. {runs} {_experiments(change)} `{_commit(change)}`: "
                  f"{change['description']}", "",
                  f"val_bpb {_num(change['val_bpb'])} (gain {_signed(change['val_gain'])}), "
                  f"test_bpb {_num(change['test_bpb'])} (gain {_signed(change['test_gain'])})", ""]
        if change["diff"]:
            lines += ["```diff", change["diff"], "```", ""]
    return lines


def summary_lines(facts: dict) -> list[str]:
    base, best = facts["baseline"] or {}, facts["best"] or {}
    lines = [f"report: {facts['files']['report_md']}",
             f"chart:  {facts['files']['progress_png']}",
             f"val_bpb  baseline {_num(base.get('val_bpb'))}  best {_num(best.get('val_bpb'))}  "
             f"gain {_gain(facts['gain']['val_bpb'])}",
             f"test_bpb baseline {_num(base.get('test_bpb'))}  best {_num(best.get('test_bpb'))}  "
             f"gain {_gain(facts['gain']['test_bpb'])}"]
    return lines + [f"warning: {w}" for w in facts["warnings"]]


def _num(value) -> str:
    return "-" if value is None else f"{value:.6f}"


def _signed(value) -> str:
    return "-" if value is None else f"{value:+.6f}"


def _gain(gain: dict | None) -> str:
    return "-" if not gain else f"{gain['absolute']:+.6f} ({gain['relative']:+.2%})"


def _experiments(entry: dict) -> str:
    return ", ".join(str(e) for e in entry.get("experiments") or [entry.get("experiment")])


def _commit(entry: dict) -> str:
    return str(entry.get("commit") or "")[:7]


def _fingerprint(value) -> str:
    if isinstance(value, list):
        return ", ".join(str(v)[:12] for v in value)
    return str(value)[:12] if value else "unknown"
