"""Other processes, by pid: whether one lives, when it started, and ending a whole group."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

KILL_GRACE_SECONDS = 5.0


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but someone else's
        return True
    return True


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of pid (to tell it from a later process with the same pid)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def kill_group(pgid: int) -> None:
    """SIGTERM the whole group, then SIGKILL what is left after a grace period."""
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_SECONDS), (signal.SIGKILL, 0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


def engine_command(*args: str) -> list[str]:
    """`autoresearch ARGS` as a child process of this Python. -P keeps the working directory
    (a repository that an agent and train.py write in) off the child's import path, so a file
    named like a module there (numpy.py, jax.py) cannot stand in for it in the scorer."""
    import sys
    return [sys.executable, "-P", "-m", "engine.cli", *args]
