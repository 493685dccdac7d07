"""No child outlives its loop: a restarted loop ends the training run or the agent command
(its whole process group) that a killed loop left.

While a child runs, runs/<tag>/child.json names it (pid, process group, kernel start time),
so a later process with the same pid is never mistaken for it.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from engine.processes import end_recorded, process_start_time


def end_orphan(child_record: Path) -> int | None:
    """Kill the training child a dead loop left running; return its pid if there was one."""
    try:
        record = json.loads(child_record.read_text())
        pid, pgid = int(record["pid"]), int(record["pgid"])
    except (OSError, ValueError, KeyError):
        child_record.unlink(missing_ok=True)
        return None
    alive = process_start_time(pid)
    if alive is not None:
        ours = alive == record.get("start_time")
    else:  # the leader is gone (an agent's shell dies with the loop), its background children may not be;
        # Linux gives no new process a pid still in use as a process group id, so the group is ours;
        # a cgroup or a token names only the command's own processes
        ours = _group_exists(pgid) or bool(record.get("cgroup") or record.get("container"))
    if ours:
        end_recorded(record)  # its group, its cgroup and every process carrying its token
        _reap(pid)
    else:
        pid = None
    child_record.unlink(missing_ok=True)
    return pid


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's: not ours to end
        return False
    return True


def _reap(pid: int) -> None:
    """Wait until pid is gone (it may be our own child in tests)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and process_start_time(pid) is not None:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:
            pass
        stat = Path(f"/proc/{pid}/stat")
        try:
            if stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return
        except OSError:
            return
        time.sleep(0.05)
