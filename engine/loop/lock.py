"""One loop per repository: an flock held for the loop's life.

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
