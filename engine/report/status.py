"""`autoresearch status`: what a loop is doing, read from its ledger and lock.

Read-only and tolerant of a loop writing at the same moment: a half-written last
ledger line is skipped, never an error. Shows val_bpb only; test_bpb belongs to
the report. A command task's rows show its metric instead.
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

from engine.loop.ledger import read_rows
from engine.loop.live_view import describe_progress, read_progress
from engine.loop.standings import (noise_estimate, baseline_rows, baseline_value, best_row, metric_name,
                                   metric_of, objective_conflicts, row_value, score, status_word, tag_objective,
                                   tally, tally_line)
from engine.report.lanes import lane_facts, union_rows
from engine.report.runs import LEDGER, LOCK, lock_holder, loop_tags, parse_time, resolve_run_dir


def experiment_in_progress(run_dir: Path, rows: list[dict]) -> Path | None:
    """The newest exp-NNNN directory that has no ledger row yet."""
    recorded = {r.get("experiment") for r in rows}
    pending = [d for d in Path(run_dir).glob("exp-[0-9]*")
               if d.is_dir() and _experiment_number(d) not in recorded]
    return max(pending, key=_experiment_number) if pending else None


def baseline_failure(runs: list[dict]) -> str:
    """Why no baseline run gave a score, from the last one, and where its log is."""
    last = runs[-1]
    why = f"{last.get('status')}: {last.get('error')}" if last.get("error") else str(last.get("status"))
    log = f"; its log: {last['log']}" if last.get("log") else ""
    hint = ("; a busy machine needs a longer --timeout" if last.get("status") == "timeout" else
            "; fix train.py, or the setting named, and start the loop again")
    return f"failed ({len(runs)} run{'s' if len(runs) > 1 else ''}, none scored): {why}{log}{hint}"


def main(args) -> int:
    run_dir = resolve_run_dir(args.tag)
    print("\n".join(status_lines(run_dir)))
    others = [t for t in loop_tags(run_dir.parent) if t != run_dir.name]
    if others:
        print(f"other loops: {', '.join(others)}")
    return 0


def status_lines(run_dir: Path, now: float | None = None) -> list[str]:
    now = time.time() if now is None else now
    rows = read_rows(run_dir / LEDGER)
    lines = [f"loop {run_dir.name}  ({run_dir})"]
    lines += _running_lines(run_dir, rows, now)
    lines.append(_counts_line(rows))
    lines += _scores_lines(rows)
    lines += _objective_lines(rows)
    if rows:
        lines.append(_last_line(rows[-1], now))
    lines += _worker_lines(run_dir, rows)
    return lines


def _objective_lines(rows: list[dict]) -> list[str]:
    """A warning when rows were recorded under another metric or direction than the first row's
    (a ledger from before the loop refused such a program.md)."""
    conflicts = objective_conflicts(rows)
    if not conflicts:
        return []
    metric, direction = tag_objective(rows)
    return [f"warning:  the tag's objective is {metric} ({direction}), but rows were recorded under another: "
            f"{'; '.join(conflicts[:3])}{' ...' if len(conflicts) > 3 else ''}"]


def _worker_lines(run_dir: Path, rows: list[dict]) -> list[str]:
    """Parallel workers or a swarm (as last fetched): one line per worker, then the total pace."""
    facts = lane_facts(union_rows(run_dir, rows))
    if facts is None:
        return []
    running = sorted(d.name.split("-", 2)[-1] for d in (Path(run_dir) / "inflight").glob("job-*") if d.is_dir())
    lines = [f"in flight: {len(running)} ({', '.join(running)})"] if running else []
    for lane in facts["workers"]:
        rate = lane["experiments_per_hour"]
        adopted = f", {len(lane['adoptions'])} adopted" if lane["adoptions"] else ""
        lines.append(f"worker:   {lane['worker']}: {lane['experiments']} experiments, {lane['kept']} kept{adopted}"
                     + (f", {rate:.1f}/h" if rate else ""))
    total = facts["experiments_per_hour"]
    lines.append(f"workers:  {len(facts['workers'])}, {facts['experiments']} experiments"
                 + (f", {total:.1f} per hour in total" if total else ""))
    return lines


def _running_lines(run_dir: Path, rows: list[dict], now: float) -> list[str]:
    pid, alive = lock_holder(run_dir)
    if pid is None:
        return ["running:  no"]
    if not alive:
        return [f"running:  no (stale {LOCK} from pid {pid}; the next loop start will resume)"]
    lines = [f"running:  yes, pid {pid}"]
    current = experiment_in_progress(run_dir, rows)
    if current is not None:
        age = _ago(now - current.stat().st_mtime)
        lines.append(f"now:      experiment {_experiment_number(current)}, started {age} ago")
        figures = read_progress(current)
        tail = describe_progress(figures) if figures else _last_log_line(current / "train.log")
        if tail:
            lines.append(f"          {tail}")
    return lines


def _counts_line(rows: list[dict]) -> str:
    return f"done:     {tally_line(tally(rows)) if rows else 'no experiment yet'}"


def _scores_lines(rows: list[dict]) -> list[str]:
    base, runs, best = baseline_value(rows), baseline_rows(rows), best_row(rows)
    metric, lines = metric_name(rows), []
    if runs:
        mean = f" (mean of {len(runs)} runs)" if len(runs) > 1 else ""
        shown = f"{metric} {base:.6f}{mean}" if base is not None else baseline_failure(runs)
        lines.append(f"baseline: {shown}")
    if best is not None:
        gain = f"  {(score(best) - base) / abs(base):+.2%} vs baseline" if base else ""
        lines.append(f"best:     {metric} {score(best):.6f}  (experiment {best.get('experiment')}, "
                     f"{str(best.get('commit', ''))[:7]}) {best.get('description', '')!r}{gain}")
    if runs:
        lines.append(f"noise:    {noise_estimate(rows).describe()}, pooled over every commit run more than once")
    return lines


def _last_line(row: dict, now: float) -> str:
    when = ""
    finished = parse_time(row.get("finished"))
    if finished is not None:
        when = f", finished {_ago(now - finished.timestamp())} ago"
    return (f"last:     experiment {row.get('experiment')} {status_word(row)} {_bpb(row)} "
            f"{row.get('description', '')!r}{when}")


def _bpb(row: dict) -> str:
    value = row_value(row)
    return f"{metric_of(row)} {value:.6f}" if value is not None else f"{metric_of(row)} -"


def _experiment_number(path: Path) -> int:
    return int(path.name.split("-", 1)[1])


def _last_log_line(path: Path, max_bytes: int = 4096) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - max_bytes))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = [line.strip() for line in re.split(r"[\r\n]", text) if line.strip()]
    return lines[-1][:160] if lines else ""


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
