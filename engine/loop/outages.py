"""An agent that fails (a non-zero exit, its service down) is waited for, not given up on at once.

A rate-limited coding agent exits 1 for a minute; a model's service is down for an hour. Each
failure in a row waits longer (60 s, doubling, at most 10 min); the loop gives up only when
the agent has failed for `max_agent_failure_minutes` (program.md or the flag; default 30) in a
row. A turn that proposes something ends the outage.

A full disk is an outage too, of the machine: the loop stops with one line (what filled up, how
much is free, how to resume) and records nothing against the experiment that met it, which runs
again when the loop is started after space was freed.
"""
from __future__ import annotations

import contextlib
import errno
import shutil
import time
from pathlib import Path

from engine.errors import UserError

FIRST_WAIT_SECONDS = 60.0
MAX_WAIT_SECONDS = 600.0
sleep = time.sleep  # tests replace it
clock = time.monotonic


class Outages:
    def __init__(self, limit_minutes: float):
        self.limit_seconds = limit_minutes * 60.0
        self.count = 0
        self.since: float | None = None
        self.reason: str | None = None

    def failed(self) -> None:
        """One more failure in a row; past the limit, the loop gives up (give_up_reason)."""
        self.count += 1
        if self.since is None:
            self.since = clock()
        if self.failing_for() >= self.limit_seconds:
            self.reason = (f"the agent failed {self.count} times in a row over {self.failing_for() / 60:.1f} min "
                           f"(max_agent_failure_minutes {self.limit_seconds / 60:g})")

    def ended(self) -> None:
        self.count, self.since, self.reason = 0, None, None

    def failing_for(self) -> float:
        return 0.0 if self.since is None else clock() - self.since

    def after_turn(self, outcome: str, say) -> None:
        """An agent that was unavailable counts a failure and waits (unless it is time to give
        up); any other outcome ends the outage."""
        if outcome != "unavailable":
            self.ended()
            return
        self.failed()
        if self.give_up_reason() is None:
            self.wait(say)

    def give_up_reason(self) -> str | None:
        """Why the loop stops: the agent's latest failure came after failing for the whole limit."""
        return self.reason

    def wait(self, say) -> None:
        """Sleep before asking again: 60 s doubling per failure, at most 10 min, never past the limit."""
        if self.since is None:
            return
        backoff = min(FIRST_WAIT_SECONDS * 2 ** (self.count - 1), MAX_WAIT_SECONDS)
        seconds = max(min(backoff, self.limit_seconds - self.failing_for()), 0.0)
        say(f"the agent failed ({self.count} in a row, for {self.failing_for():.0f} s): asking again in {seconds:.0f} s")
        sleep(seconds)


def agent_failed(agent) -> bool:
    """Whether the agent's last turn failed (it says so in last_outcome) rather than proposing nothing."""
    return getattr(agent, "last_outcome", "") == "unavailable"


# --- a full disk ---------------------------------------------------------------------------


FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
FULL_WORDS = ("No space left on device", "Disk quota exceeded")
LOW_FREE_BYTES = 16 << 20  # a failed run with less than this free met the full disk, not a bug


class DiskFull(UserError):
    """The disk the loop writes on filled up: an outage, never the fault of the experiment that met it."""


def disk_full_message(where: Path) -> str:
    where = Path(where)
    usage = _usage(where)
    free = f"{_size(usage.free)} free of {_size(usage.total)}" if usage else "free space unknown"
    return (f"the disk holding {where} is full ({free}): the loop stopped and recorded nothing against the "
            "experiment that met it. Free some space there, then run the same command again: it resumes "
            "where it stopped, and that experiment runs again")


def is_disk_full(error: BaseException) -> bool:
    """Whether an exception (an OSError, GitPython's GitCommandError) came from a full disk."""
    if isinstance(error, OSError) and error.errno in FULL_ERRNOS:
        return True
    return any(words in str(error) for words in FULL_WORDS)


def run_met_full_disk(outcome, where: Path) -> bool:
    """Whether a failed run failed because the disk filled up under it: less than LOW_FREE_BYTES
    left, and not by the run's own files. What the run printed is not evidence (train.py can print
    "No space left on device"), and a run whose own folder holds most of the used space filled the
    disk itself: that is its crash, or the loop would stop on it again at every restart."""
    if outcome.status == "ok":
        return False
    usage = _usage(Path(where))
    if usage is None or usage.free >= LOW_FREE_BYTES:
        return False
    own = _folder_bytes(Path(outcome.log_path).parent) if outcome.log_path else 0
    return own < (usage.total - usage.free) / 2


def _folder_bytes(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_size
        except OSError:
            continue
    return total


def check_run(outcome, where: Path) -> None:
    """Raise DiskFull instead of letting a run that met a full disk be recorded as its crash."""
    if run_met_full_disk(outcome, where):
        raise DiskFull(disk_full_message(where))


@contextlib.contextmanager
def full_disk_stops(where: Path):
    """Around a whole loop: an error from a full disk (a write, a git command) ends it with one line."""
    try:
        yield
    except DiskFull:
        raise
    except Exception as error:
        if not is_disk_full(error):
            raise
        raise DiskFull(disk_full_message(where)) from None


def _usage(where: Path):
    for place in (where, *where.parents):
        try:
            return shutil.disk_usage(place)
        except OSError:
            continue
    return None


def _size(count: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    return str(count)
