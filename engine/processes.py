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


def die_with_parent() -> None:
    """In a child before exec: its own process group, and SIGKILL if the loop dies."""
    os.setsid()
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the restarted loop ends orphans instead (engine/loop/orphans.py)


def record_child(path: Path | None, pid: int, **extra) -> None:
    """Name a child's process group in `path` (pid, pgid, kernel start time) while it runs, so a
    loop restarted after a kill -9 can end it (engine/loop/orphans.py)."""
    if path is None:
        return
    from engine.files import write_atomic
    import json
    record = {"pid": pid, "pgid": pid, "start_time": process_start_time(pid), **extra}
    write_atomic(Path(path), json.dumps(record, default=str))


def kill_group(pgid: int, grace: float = KILL_GRACE_SECONDS) -> None:
    """SIGTERM the whole group, then SIGKILL what is left after `grace` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 0)):
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


_bytecode_prefix: Path | None = None  # set by the loop (engine/loop/bytecode.py)


def set_bytecode_prefix(path: Path | None) -> None:
    """The folder engine processes started from here keep their compiled bytecode in."""
    global _bytecode_prefix
    _bytecode_prefix = None if path is None else Path(path)


def bytecode_prefix() -> Path | None:
    """This process's prefix: the loop's, or the one this process was itself started with."""
    import sys
    if _bytecode_prefix is not None:
        return _bytecode_prefix
    return Path(sys.pycache_prefix) if sys.pycache_prefix else None


def engine_command(*args: str) -> list[str]:
    """`autoresearch ARGS` as a child process of this Python. -P keeps the working directory
    (a repository that an agent and train.py write in) off the child's import path, so a file
    named like a module there (numpy.py, jax.py) cannot stand in for it in the scorer. Under a
    loop, `-X pycache_prefix` makes the child read bytecode only from the loop's private prefix
    (engine/loop/bytecode.py), never from a `__pycache__/` an agent can write, and `-B` keeps it
    from writing there; its own engine children inherit the prefix."""
    import sys
    prefix = bytecode_prefix()
    # -B: read the prefix, never write it (the loop warmed and froze it; root ignores the freeze)
    flags = ["-B", "-X", f"pycache_prefix={prefix}"] if prefix is not None else []
    return [sys.executable, "-P", *flags, "-m", "engine.cli", *args]
