"""A command's output streamed to its log with a cap: the head and the tail kept, the middle elided.

A score, check, agent or training command may print a gigabyte (a debug print in a loop, a
coding agent streaming its transcript). The loop keeps at most HEAD_BYTES + TAIL_BYTES of it, on
disk and in memory: the first HEAD_BYTES go to the log as they come; after that the last
TAIL_BYTES are held (in chunks, so trimming costs nothing per byte) and rewritten after the head
about once a second, behind one line that says how many bytes were dropped. What a reader of the
log sees while the command runs is at most a second behind.
"""
from __future__ import annotations

import collections
import os
import time
from pathlib import Path

HEAD_BYTES = 1 << 20
TAIL_BYTES = 1 << 20
REWRITE_SECONDS = 1.0


def elision_note(dropped: int) -> bytes:
    return (f"\n[autoresearch: {dropped:,} bytes of output elided here; the first {HEAD_BYTES:,} and the "
            f"last {TAIL_BYTES:,} bytes are kept]\n").encode()


class BoundedLog:
    """Appends one command's output to `path` (after what the file holds) within the cap."""

    def __init__(self, path: Path, header: bytes = b"", head_bytes: int = HEAD_BYTES, tail_bytes: int = TAIL_BYTES):
        self.path, self.head_cap, self.tail_cap = Path(path), head_bytes, tail_bytes
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
        os.lseek(self.fd, 0, os.SEEK_END)
        self._write(header)
        self.head = bytearray()
        self.tail: collections.deque[bytes] = collections.deque()
        self.tail_size = 0
        self.total = 0
        self.head_end = 0  # file offset where the head ends (set once the head is full)
        self.last_rewrite = time.monotonic()
        self.error: OSError | None = None  # the first write that failed (a full disk); later output is dropped

    @property
    def dropped(self) -> int:
        return max(self.total - len(self.head) - self.tail_size, 0)

    def feed(self, chunk: bytes) -> None:
        """Take the next bytes of output; a write that fails is kept in `error`, never raised, so
        the command's pipe is still drained."""
        try:
            self._feed(chunk)
        except OSError as error:
            self.error = self.error or error

    def _feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.head_cap - len(self.head)
        if room > 0:
            part, chunk = chunk[:room], chunk[room:]
            self.head += part
            self._write(part)
            if len(self.head) == self.head_cap:
                self.head_end = os.lseek(self.fd, 0, os.SEEK_CUR)
        if not chunk:
            return
        self.tail.append(chunk)
        self.tail_size += len(chunk)
        while self.tail and self.tail_size - len(self.tail[0]) >= self.tail_cap:
            self.tail_size -= len(self.tail.popleft())
        if time.monotonic() - self.last_rewrite >= REWRITE_SECONDS:
            self._rewrite_tail()

    def tail_bytes(self) -> bytes:
        """The last TAIL_BYTES (or fewer) of the output after the head."""
        return b"".join(self.tail)[-self.tail_cap:]

    def text(self) -> str:
        """What was kept, as text: the head, then the tail (the elided middle left out)."""
        return (bytes(self.head) + b"\n" + self.tail_bytes()).decode(errors="replace") if self.tail else \
            bytes(self.head).decode(errors="replace")

    def close(self) -> None:
        try:
            if self.tail and self.error is None:
                self._rewrite_tail()
        except OSError as error:
            self.error = self.error or error
        finally:
            os.close(self.fd)

    def _rewrite_tail(self) -> None:
        os.lseek(self.fd, self.head_end, os.SEEK_SET)
        os.ftruncate(self.fd, self.head_end)
        self._write((elision_note(self.dropped) if self.dropped else b"") + self.tail_bytes())
        self.last_rewrite = time.monotonic()

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]
