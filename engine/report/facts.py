"""The facts of a loop's report, gathered from its ledger, git and the held-out scores.

One dict (`gather_facts`) feeds report.md, progress.png and `report --json` alike.
"""
from __future__ import annotations

from pathlib import Path

from engine.loop.ledger import STATUSES
from engine.loop.standings import (is_kept_change, noise_estimate, baseline_rows, count_statuses, direction_of, gain,
                                   candidate_outcomes, is_baseline, is_candidate, is_kept, metric_name,
                                   objective_conflicts, row_value, score, series_of, side_of, status_word, tag_objective,
                                   tally)
from engine.report import heldout, holdout_command, lanes
from engine.report.chart_data import chart_data, point_kind
from engine.report.dataset import dataset, short_runs
from engine.tracking.records import phase_seconds
from engine.report.runs import parse_time, running_loops

MAX_DIFF_LINES = 200
# A kept change is suspect when test_bpb moves against val_bpb by more than this.
DISAGREEMENT_TOLERANCE = 1e-4


def gather_facts(run_dir: Path, rows: list[dict], repo_root: Path, log=None) -> dict:
    groups = kept_commits(rows)
    base_group = groups[0] if groups and is_baseline(groups[0]["kept_row"]) else None
    runs = [r for g in groups for r in g["runs"]]
    direction, command_task = direction_of(rows), any(r.get("task") == "command" for r in rows)
    if command_task:  # the held-out figure of a command task comes from its holdout command
        tests = holdout_command.holdout_figures(run_dir, runs, repo_root, log=log or (lambda m: None))
    else:
        tests = heldout.test_figures(run_dir, runs, repo_root, log=log or (lambda m: None),
                                     busy=_accelerator_busy(run_dir))
    entries = [_group_entry(g, tests) for g in groups]
    baseline = entries[0] if base_group else _failed_baseline(rows)
    changes = entries[1:] if base_group else entries
    facts = {
        "tag": run_dir.name,
        "run_dir": str(run_dir),
        # For a command task, the entries' val_bpb and test_bpb hold its metric on the scored
        # set and on the holdout; "metric" names it and "direction" says which way is better.
        "task": "command" if command_task else "train",
        "metric": metric_name(rows),
        "direction": direction,
        "hardware": _hardware(rows),
        "budget": _common(rows, "budget"),
        "manifest_fingerprint": _common(rows, "manifest_fingerprint"),
        **_pace(rows),
        "counts": count_statuses(rows, STATUSES),
        "counts_after_baseline": count_statuses(candidate_outcomes(rows), STATUSES),
        "rates": _rates(rows),
        "agent_cost_usd": round(sum(float(r.get("cost_usd") or 0) for r in rows), 4),
        "noise": _number(noise_estimate(rows).sigma) if noise_estimate(rows).known else None,
        "noise_df": noise_estimate(rows).df,
        "baseline": baseline,
        "best": _best(entries, direction),
        "experiments": [_point(r, direction, before) for r, before in zip(rows, _bests_before(rows))],
        "tally": tally(rows),
        "dataset": dataset(_common(rows, "manifest_fingerprint")),
    }
    facts["gain"] = _gains(facts["baseline"], facts["best"], direction)
    facts["kept"] = _with_gains(changes, baseline, repo_root, direction)
    facts["short_runs"] = short_runs(facts["experiments"], run_dir, facts["dataset"])
    facts["chart"] = chart_data(facts["experiments"], facts["noise"], facts["baseline"], facts["best"])
    facts["warnings"] = _warnings(facts)
    conflicts = objective_conflicts(rows)
    if conflicts:  # a ledger from before the loop refused a changed objective
        metric, direction = tag_objective(rows)
        facts["warnings"].append(f"the tag's objective is {metric} ({direction}) since its first row, but rows "
                                 f"were recorded under another ({'; '.join(conflicts[:3])}): their keeps do not "
                                 "form one chain")
    _add_workers(facts, run_dir, rows)
    return facts


def _add_workers(facts: dict, run_dir: Path, rows: list[dict]) -> None:
    """Parallel workers or a swarm: a lane per worker, and who found each kept change."""
    union = lanes.union_rows(run_dir, rows)
    facts["lanes"] = lanes.lane_facts(union)
    for change in facts["kept"]:
        change["found_by"] = lanes.found_by(union, change["commit"])


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
                         and row_value(r) is not None]
    return list(groups.values())


def _group_entry(group: dict, tests: dict) -> dict:
    kept_row, runs = group["kept_row"], group["runs"]
    figures = [tests.get(r.get("experiment"), {}) for r in runs]
    values = [f["test_bpb"] for f in figures if f.get("test_bpb") is not None]
    errors = [f["error"] for f in figures if f.get("error")]
    decider = next((r for r in runs if is_kept_change(r)), {})
    return {"experiment": kept_row.get("experiment"),
            "experiments": [r.get("experiment") for r in runs],
            # the sequential test's verdict: the gain over the best then, its confidence interval, its runs
            "test": {key: _number(decider.get(key)) for key in ("gain", "gain_low", "gain_high", "noise_sigma")}
            | {"runs": decider.get("look"), "noise_df": decider.get("noise_df")},
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
    """Shares of the decided candidates that ran (rejected ones never ran; a re-run series counts once)."""
    ran = [r for r in candidate_outcomes(rows) if r.get("status") != "rejected"]
    if not ran:
        return {"keep": None, "discard": None, "crash": None, "timeout": None, "invalid": None}
    share = lambda status: round(sum(r.get("status") == status for r in ran) / len(ran), 4)
    return {"keep": round(sum(is_kept_change(r) for r in ran) / len(ran), 4), "discard": share("discard"),
            "crash": share("crash"), "timeout": share("timeout"), "invalid": share("invalid")}


def _bests_before(rows: list[dict]) -> list[float | None]:
    """The best each row was judged against: its recorded best_before, else the best after the row before."""
    bests, best = [], None
    for row in rows:
        recorded = _number(row.get("best_before"))
        bests.append(recorded if recorded is not None else best)
        best = _number(row.get("best_after")) if _number(row.get("best_after")) is not None else best
    return bests


def _point(row: dict, direction: str, before: float | None) -> dict:
    """One experiment as the report's table and the chart show it."""
    value = row_value(row)
    candidate = is_candidate(row)
    return {"experiment": row.get("experiment"), "status": status_word(row), "kind": point_kind(row),
            "verdict": row.get("decision") or "", "side": side_of(row), "description": row.get("description", ""),
            "baseline": is_baseline(row), "kept": is_kept(row), "kept_change": is_kept_change(row),
            "val_bpb": value, "score": score(row) if is_kept(row) else None,
            # the gain over the best when it ran, positive is better (candidates only)
            "gain_over_best": round(gain(before, value, direction), 6)
            if candidate and value is not None and before is not None else None,
            "best_before": before, "best_after": _number(row.get("best_after")),
            "series": series_of(row), "rerun_of": row.get("rerun_of"),
            "steps": row.get("num_steps"), "tokens_M": _number(row.get("total_tokens_M")),
            "training_seconds": _number(row.get("training_seconds")), "wall_seconds": _number(row.get("wall_seconds")),
            "phase_seconds": phase_seconds(row), "final_loss": _number(row.get("final_loss")),
            "commit": row.get("commit"), "role": row.get("role"),
            **{key: row[key] for key in ("worker", "node") if row.get(key)}}


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and value == value else None


def _best(entries: list[dict], direction: str) -> dict | None:
    if not entries:
        return None
    pick = max if direction == "maximize" else min
    return pick(entries, key=lambda e: e["val_bpb"])


def _gains(base: dict | None, best: dict | None, direction: str = "minimize") -> dict:
    """Positive is better whichever way the metric points."""
    gains = {}
    for metric in ("val_bpb", "test_bpb"):
        before = base and base.get(metric)
        after = best and best.get(metric)
        if before and after is not None:
            gained = gain(before, after, direction)
            gains[metric] = {"absolute": round(gained, 6), "relative": round(gained / abs(before), 6)}
        else:
            gains[metric] = None
    return gains


def _with_gains(changes: list[dict], baseline: dict | None, repo_root: Path,
                direction: str = "minimize") -> list[dict]:
    """Each kept change's gain over the one before it (positive: better) and its diff."""
    previous = baseline
    for change in changes:
        for metric, key in (("val_bpb", "val_gain"), ("test_bpb", "test_gain")):
            before = previous and previous.get(metric)
            after = change.get(metric)
            change[key] = None if before is None or after is None else round(gain(before, after, direction), 6)
        change["diff"] = _diff(repo_root, previous and previous.get("commit"), change["commit"])
        previous = change
    return changes


def _diff(repo_root: Path, old: str | None, new: str | None) -> str:
    if not old or not new:
        return ""
    try:
        from engine.loop.repo import Repo

        text = Repo(repo_root).diff(old, new)
    except Exception as error:  # a commit gone from the repository, or no repository
        return f"(diff unavailable: {str(error).splitlines()[0] if str(error) else error})"
    lines = text.splitlines()
    if len(lines) > MAX_DIFF_LINES:
        lines = lines[:MAX_DIFF_LINES] + [f"... ({len(lines) - MAX_DIFF_LINES} more lines)"]
    return "\n".join(lines)


def figure_labels(facts: dict) -> tuple[str, str]:
    """What the entries' val_bpb and test_bpb are called: (val_bpb, test_bpb), or for a command
    task (its metric, "holdout METRIC")."""
    if facts.get("task") == "command":
        return facts["metric"], f"holdout {facts['metric']}"
    return "val_bpb", "test_bpb"


def _warnings(facts: dict) -> list[str]:
    warnings = []
    val_name, test_name = figure_labels(facts)
    held = test_name if facts.get("task") == "command" else f"held-out {test_name}"
    for key, what in (("manifest_fingerprint", "datasets"), ("budget", "budgets")):
        if isinstance(facts[key], list):
            warnings.append(f"experiments ran on different {what} ({', '.join(map(str, facts[key]))}): "
                            "their val_bpb are not comparable")
    val, test = facts["gain"]["val_bpb"], facts["gain"]["test_bpb"]
    if val and test and val["absolute"] > 0:
        if test["absolute"] <= 0:
            warnings.append(f"{val_name} improved by {val['absolute']:.6f} but {held} "
                            f"did not ({-test['absolute']:+.6f}): the validation set may be over-fitted")
        elif test["relative"] < 0.5 * val["relative"]:
            warnings.append(f"{held} improved {test['relative']:.2%}, under half the "
                            f"{val_name} gain of {val['relative']:.2%}: part of the gain may be "
                            "over-fitting the validation set")
    for change in facts["kept"]:
        if (change["val_gain"] or 0) > 0 and (change["test_gain"] or 0) < -DISAGREEMENT_TOLERANCE:
            warnings.append(f"experiment {change['experiment']} ({change['description']!r}) improved "
                            f"{val_name} by {change['val_gain']:.6f} but worsened {test_name} by "
                            f"{-change['test_gain']:.6f}")
    for entry in [facts["baseline"], *facts["kept"]]:
        if entry and entry.get("test_error"):
            warnings.append(f"no {test_name} for experiment {entry['experiment']}: {entry['test_error']}")
    return warnings
