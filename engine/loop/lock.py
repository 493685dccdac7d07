"""One loop per repository, and no training child that outlives its loop.

The lock is an flock on runs/.loop.lock, held for the loop's life: the kernel drops
it when the process dies (kill -9 included), so a stale lock from a dead pid is simply
taken over. runs/<tag>/loop.lock names the holder (pid, tag) for people and `status`.
"""
from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

from engine.loop import runner
from engine.errors import UserError


class LoopLock:
    def __init__(self, runs_dir: Path, tag: str):
        self.runs_dir = Path(runs_dir)
        self.tag = tag
        self.path = self.runs_dir / ".loop.lock"
        self.holder = self.runs_dir / tag / "loop.lock"
        self._fd: int | None = None

    def acquire(self) -> "LoopLock":
        self.holder.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UserError(f"another loop is running in this repository ({self._describe_holder()}); "
                            "wait for it, or stop it, before starting one") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "tag": self.tag}).encode())
        self.holder.write_text(json.dumps({"pid": os.getpid(), "tag": self.tag, "since": time.time()}))
        self._fd = fd
        return self

    def _describe_holder(self) -> str:
        try:
            holder = json.loads(self.path.read_text())
            return f"pid {holder['pid']}, tag {holder['tag']!r}"
        except (OSError, ValueError, KeyError):
            return "holder unknown"

    def release(self) -> None:
        if self._fd is None:
            return
        self.holder.unlink(missing_ok=True)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "LoopLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def end_orphan(child_record: Path) -> int | None:
    """Kill the training child a dead loop left running; return its pid if there was one."""
    try:
        record = json.loads(child_record.read_text())
        pid, pgid = int(record["pid"]), int(record["pgid"])
    except (OSError, ValueError, KeyError):
        child_record.unlink(missing_ok=True)
        return None
    alive = runner.process_start_time(pid)
    if alive is not None and alive == record.get("start_time"):
        runner.kill_group(pgid)
        _reap(pid)
    else:
        pid = None
    child_record.unlink(missing_ok=True)
    return pid


def _reap(pid: int) -> None:
    """Wait until pid is gone (it may be our own child in tests)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and runner.process_start_time(pid) is not None:
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
