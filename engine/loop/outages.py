"""An agent that fails (a non-zero exit, its service down) is waited for, not given up on at once.

A rate-limited coding agent exits 1 for a minute; a model's service is down for an hour. Each
failure in a row waits longer (60 s, doubling, at most 10 min); the loop gives up only when
the agent has failed for `max_agent_failure_minutes` (program.md or the flag; default 30) in a
row. A turn that proposes something ends the outage.
"""
from __future__ import annotations

import time

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
