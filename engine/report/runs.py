"""Where a loop's files are: the runs/ folder, its loops by tag, the holder of a loop's lock.

Read-only: safe while a loop writes.
"""
from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
from pathlib import Path

from engine.errors import UserError
from engine.processes import process_alive

LEDGER = "results.jsonl"
LOCK = "loop.lock"


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
    """The run directory of a tag; without one, the loop active most recently."""
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


def parse_time(value) -> dt.datetime | None:
    """A ledger's ISO time, as an aware datetime (local time when it names no zone)."""
    if not isinstance(value, str):
        return None
    try:
        stamp = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.astimezone()


def _is_loop_dir(path: Path) -> bool:
    return any((path / name).exists() for name in (LEDGER, "results.tsv", LOCK))


def _last_activity(path: Path) -> float:
    stamps = [(path / name).stat().st_mtime for name in (LEDGER, "results.tsv", LOCK)
              if (path / name).exists()]
    return max(stamps, default=path.stat().st_mtime)


def checkpoint_of(run_dir: Path, row: dict) -> Path:
    recorded = row.get("checkpoint")
    if recorded:
        path = Path(recorded)
        return path if path.is_absolute() else Path(run_dir).parent.parent / path
    return Path(run_dir) / f"exp-{int(row.get('experiment', 0)):04d}" / "checkpoint"

