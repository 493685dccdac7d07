"""A swarm worker's heartbeat, and how it judges the others' without comparing two clocks.

A plain git remote assigns no times, and the workers' wall clocks may disagree by hours. So a
worker counts instead: its file beats/NAME.CLONE.json holds a counter that it raises at every
push of its files, and at least every `every` seconds of its own monotonic clock (a thread
pushes it while an experiment or an agent turn runs). Another worker (`Pulse`) notes, on ITS
own monotonic clock, when it first saw each value of that counter:

- `live`: the counter moved while this observer watched, and last moved less than
  DEAD_AFTER_BEATS of the worker's periods ago;
- `dead`: it was seen standing still for that long (a kill -9, a lost machine, a long network
  cut). Only what was seen counts: while this observer cannot fetch, time passing proves nothing,
  so a clone stays as last judged (claims then still lapse after their own hold time);
- `gone`: the worker said goodbye;
- `unknown`: seen once, not yet watched long enough to tell.

Only the observer's clock measures, and only the counter's movement is read from the other,
so a clock hours off makes no live worker look dead and no dead one look live.
"""
from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Callable, Iterable

DEAD_AFTER_BEATS = 4  # periods without a beat before a worker counts as dead
DEFAULT_EVERY_SECONDS = 60.0
PERIOD_BOUNDS = (0.1, 3600.0)  # a beat file's `every` is clamped to this (a reader trusts no value)


class Heartbeat:
    """This worker's beats. `record()` gives the next beat's text (every push carries one);
    the thread calls `push` whenever no beat went out for `every` seconds."""

    def __init__(self, name: str, clone: str, every: float = DEFAULT_EVERY_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self.name, self.clone, self.every, self.clock = name, clone, every, clock
        self.run = uuid.uuid4().hex[:8]  # a restarted process never repeats a value seen before
        self.count = 0
        self.last_sent: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def record(self, state: str = "running") -> str:
        self.count += 1
        return json.dumps({"worker": self.name, "clone": self.clone, "run": self.run, "beat": self.count,
                           "every": self.every, "state": state}) + "\n"

    def sent(self) -> None:
        self.last_sent = self.clock()

    def due(self) -> bool:
        return self.last_sent is None or self.clock() - self.last_sent >= self.every

    def start(self, push: Callable[[], None]) -> None:
        """Call push (which sends a beat) whenever one is due, until stop()."""
        def beat_while_running():
            while not self._stop.wait(self.every / 4):
                if self.due():
                    try:
                        push()
                    except Exception:  # an unreachable remote: the loop itself says so at its next sync
                        pass
        self._thread = threading.Thread(target=beat_while_running, name="swarm-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * 60)


class Pulse:
    """Other clones' liveness, from their beats as this machine saw them (see the module doc).
    Also how long ago this machine first saw any given thing (a claim), on the same clock."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.beats: dict[str, dict] = {}  # clone -> its latest beat record
        self._seen: dict[str, tuple[tuple, float, bool]] = {}  # clone -> (value, first seen, moved)
        self._looked: dict[str, float] = {}  # clone -> when its beat was last read
        self._first_seen: dict[str, float] = {}

    def observe(self, beats: Iterable[dict]) -> None:
        now = self.clock()
        for beat in beats:
            clone = str(beat.get("clone"))
            value = (beat.get("run"), beat.get("beat"), beat.get("state"))
            before = self._seen.get(clone)
            if before is None:
                self._seen[clone] = (value, now, False)
            elif before[0] != value:
                self._seen[clone] = (value, now, True)
            self.beats[clone] = beat
            self._looked[clone] = now

    def state(self, clone: str) -> str:
        """`live`, `dead`, `gone` or `unknown` (never seen counts as unknown), from the beats read
        so far: time since the last read counts for nothing (see the module doc)."""
        if clone not in self._seen:
            return "unknown"
        beat, (_, since, moved) = self.beats[clone], self._seen[clone]
        if beat.get("state") == "bye":
            return "gone"
        if self._looked[clone] - since > self.window(clone):
            return "dead"
        return "live" if moved else "unknown"

    def window(self, clone: str) -> float:
        """How long this clone's counter may stand still before it counts as dead (its own period)."""
        try:
            every = float(self.beats.get(clone, {}).get("every", DEFAULT_EVERY_SECONDS))
        except (TypeError, ValueError):
            every = DEFAULT_EVERY_SECONDS
        every = min(max(every, PERIOD_BOUNDS[0]), PERIOD_BOUNDS[1]) if every == every else DEFAULT_EVERY_SECONDS
        return DEAD_AFTER_BEATS * every

    def quiet_for(self, clone: str) -> float | None:
        """Seconds (this machine's clock) since the clone's counter was first seen at its value."""
        seen = self._seen.get(clone)
        return None if seen is None else self.clock() - seen[1]

    def age(self, key: str) -> float:
        """Seconds since this machine first asked about key (0 the first time)."""
        now = self.clock()
        return now - self._first_seen.setdefault(key, now)
