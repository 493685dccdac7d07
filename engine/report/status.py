"""`autoresearch status`: what a loop is doing, read from its ledger and lock.

Read-only and tolerant of a loop writing at the same moment: a half-written last
ledger line is skipped, never an error. Shows val_bpb only; test_bpb belongs to
the report.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import time
from pathlib import Path

from engine.errors import UserError
from engine.loop.live_view import describe_progress, read_progress
from engine.loop.processes import process_alive

LEDGER = "results.jsonl"
LOCK = "loop.lock"
STATUSES = ("keep", "discard", "crash", "timeout", "rejected")


def runs_root(start: Path | None = None) -> Path:
    """runs/ at the top of the git repository holding `start` (the current directory)."""
    start = Path(start or Path.cwd())
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=start, check=True,
                             capture_output=True, text=True).stdout.strip()
        return Path(top) / "runs"
    except (subprocess.CalledProcessError, FileNotFoundError):
        return start / "runs"


def loop_tags(root: Path) -> list[str]:
    """Tags of every loop under root, most recently active last."""
    if not root.is_dir():
        return []
    runs = [d for d in root.iterdir() if d.is_dir() and _is_loop_dir(d)]
    return [d.name for d in sorted(runs, key=_last_activity)]


def resolve_run_dir(tag: str | None, root: Path | None = None) -> Path:
    root = root or runs_root()
    tags = loop_tags(root)
    if tag is None:
        if not tags:
            raise UserError(f"no loop runs under {root}: start one with "
                            "`autoresearch loop --tag NAME`")
        return root / tags[-1]
    if tag not in tags:
        known = ", ".join(tags) or "none"
        raise UserError(f"no loop with tag {tag!r} under {root} (tags there: {known}); "
                        "pass one of those to --tag")
    return root / tag


def read_ledger(run_dir: Path) -> list[dict]:
    """results.jsonl rows, oldest first; a line still being written is skipped."""
    path = Path(run_dir) / LEDGER
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def is_kept(row: dict) -> bool:
    return bool(row.get("kept", row.get("status") == "keep"))


def finite_bpb(row: dict) -> float | None:
    value = row.get("val_bpb")
    if isinstance(value, (int, float)) and value == value and abs(value) != float("inf"):
        return float(value)
    return None


def score(row: dict) -> float | None:
    """The figure the loop compared: for a kept row, the best after it (a mean over runs
    for the baseline and for a change confirmed by a re-run); else its own val_bpb."""
    after = row.get("best_after")
    if is_kept(row) and isinstance(after, (int, float)) and after == after:
        return float(after)
    return finite_bpb(row)


def best_kept(rows: list[dict]) -> dict | None:
    """The branch's head: the loop keeps a row only when it beats the best so far, so the
    last kept row is the best. (The lowest single run is not: the first baseline run can
    be below the baseline's mean, which is what later rows had to beat.)"""
    kept = [r for r in rows if is_kept(r) and score(r) is not None]
    return kept[-1] if kept else None


def is_baseline(row: dict) -> bool:
    return row.get("role") == "baseline" if "role" in row else row.get("experiment") == 0


def baseline_rows(rows: list[dict]) -> list[dict]:
    """Every run of the starting commit (the loop runs it more than once to measure noise)."""
    return [r for r in rows if is_baseline(r)]


def baseline_val(rows: list[dict]) -> float | None:
    values = [v for v in (finite_bpb(r) for r in baseline_rows(rows)) if v is not None]
    return sum(values) / len(values) if values else None


def count_statuses(rows: list[dict]) -> dict[str, int]:
    counts = {status: 0 for status in STATUSES}
    for row in rows:
        status = str(row.get("status", "unknown"))
        counts[status] = counts.get(status, 0) + 1
    return counts


def lock_holder(run_dir: Path) -> tuple[int | None, bool]:
    """(pid in loop.lock or None, whether that process is alive)."""
    path = Path(run_dir) / LOCK
    try:
        text = path.read_text()
    except OSError:
        return None, False
    pid = _pid_in(text)
    return (pid, process_alive(pid)) if pid is not None else (None, False)


def _pid_in(text: str) -> int | None:
    """loop.lock holds JSON with a "pid" (engine/loop/lock.py); a bare number is read too."""
    try:
        pid = json.loads(text).get("pid")
    except (ValueError, AttributeError):
        match = re.fullmatch(r"\s*(\d+)\s*", text)
        pid = match and match.group(1)
    try:
        return int(pid) if pid is not None else None
    except (TypeError, ValueError):
        return None


def running_loops(root: Path) -> list[tuple[str, int]]:
    """(tag, pid) of every loop under root whose process is alive."""
    found = []
    for tag in loop_tags(root):
        pid, alive = lock_holder(root / tag)
        if alive:
            found.append((tag, pid))
    return found


def experiment_in_progress(run_dir: Path, rows: list[dict]) -> Path | None:
    """The newest exp-NNNN directory that has no ledger row yet."""
    recorded = {r.get("experiment") for r in rows}
    pending = [d for d in Path(run_dir).glob("exp-[0-9]*")
               if d.is_dir() and _experiment_number(d) not in recorded]
    return max(pending, key=_experiment_number) if pending else None


def main(args) -> int:
    run_dir = resolve_run_dir(args.tag)
    print("\n".join(status_lines(run_dir)))
    others = [t for t in loop_tags(run_dir.parent) if t != run_dir.name]
    if others:
        print(f"other loops: {', '.join(others)}")
    return 0


def status_lines(run_dir: Path, now: float | None = None) -> list[str]:
    now = time.time() if now is None else now
    rows = read_ledger(run_dir)
    lines = [f"loop {run_dir.name}  ({run_dir})"]
    lines += _running_lines(run_dir, rows, now)
    lines.append(_counts_line(rows))
    lines += _scores_lines(rows)
    if rows:
        lines.append(_last_line(rows[-1], now))
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
    counts = count_statuses(rows)
    parts = ", ".join(f"{status} {n}" for status, n in counts.items())
    return f"done:     {len(rows)} experiments ({parts})"


def _scores_lines(rows: list[dict]) -> list[str]:
    base, runs, best = baseline_val(rows), baseline_rows(rows), best_kept(rows)
    lines = []
    if runs:
        mean = f" (mean of {len(runs)} runs)" if len(runs) > 1 else ""
        shown = f"val_bpb {base:.6f}" if base is not None else f"val_bpb - ({runs[0].get('status')})"
        lines.append(f"baseline: {shown}{mean}")
    if best is not None:
        gain = f"  {(score(best) - base) / base:+.2%} vs baseline" if base else ""
        lines.append(f"best:     val_bpb {score(best):.6f}  (experiment {best.get('experiment')}, "
                     f"{str(best.get('commit', ''))[:7]}) {best.get('description', '')!r}{gain}")
    return lines


def _last_line(row: dict, now: float) -> str:
    when = ""
    finished = parse_time(row.get("finished"))
    if finished is not None:
        when = f", finished {_ago(now - finished.timestamp())} ago"
    return (f"last:     experiment {row.get('experiment')} {row.get('status')} {_bpb(row)} "
            f"{row.get('description', '')!r}{when}")


def _bpb(row: dict) -> str:
    value = finite_bpb(row)
    return f"val_bpb {value:.6f}" if value is not None else "val_bpb -"


def _is_loop_dir(path: Path) -> bool:
    return any((path / name).exists() for name in (LEDGER, "results.tsv", LOCK))


def _last_activity(path: Path) -> float:
    stamps = [(path / name).stat().st_mtime for name in (LEDGER, "results.tsv", LOCK)
              if (path / name).exists()]
    return max(stamps, default=path.stat().st_mtime)


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


def parse_time(value) -> dt.datetime | None:
    """A ledger's ISO time, as an aware datetime (local time when it names no zone)."""
    if not isinstance(value, str):
        return None
    try:
        stamp = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.astimezone()


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
