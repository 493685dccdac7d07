"""Progress while a run trains: a line for the person watching, a small file for the loop.

The trainer reports each step's loss when it learns it (one step late, so reporting never
waits on the device). On a terminal the line is rewritten in place; piped into a log, a
line is printed every PIPED_INTERVAL seconds, so logs stay short. With a run directory,
`progress.json` there (written atomically) holds the same figures for `autoresearch loop`
and `autoresearch status` (docs/internals.md, "Loop run directory"), and `history.jsonl`
the training curve (one JSON line per recorded step, appended with the progress file) that
the loop turns into TensorBoard events (engine/tracking). Every step is recorded until
HISTORY_POINTS of them; then every second step, every fourth, ...: a night-long run's curve
stays a few thousand lines.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

PROGRESS_FILE = "progress.json"
TTY_INTERVAL = 0.25  # seconds between rewrites of the line on a terminal
PIPED_INTERVAL = 10.0  # seconds between lines in a log
FILE_INTERVAL = 1.0  # seconds between writes of progress.json
HISTORY_FILE = "history.jsonl"
HISTORY_POINTS = 1000  # steps recorded one by one before the stride doubles


class Progress:
    """`update(clock, loss)` after each completed step; `close()` when training ends.

    clock: an engine.training.clock.BudgetClock (completed steps, training seconds, budget).
    flops_per_token and peak_flops (of all devices together) give MFU; None where unknown.
    """

    def __init__(self, flops_per_token: float | None = None, peak_flops: float | None = None,
                 stream=None, interactive: bool | None = None, run_dir: str | Path | None = None,
                 show: bool = True, now=time.monotonic):
        self.show = show  # False on every host but the first: one line, one file
        self.stream = stream if stream is not None else sys.stdout
        self.interactive = _is_tty(self.stream) if interactive is None else interactive
        self.path = Path(run_dir) / PROGRESS_FILE if run_dir else None
        self.flops_per_token, self.peak_flops = flops_per_token, peak_flops
        self._now = now
        self._printed_at = self._written_at = -math.inf
        self._rate_mark = (0, 0.0)  # (tokens, seconds) where the shown rate starts
        self._open_line = False
        self.figures: dict | None = None
        self._history: list[dict] = []  # recorded steps not yet appended to history.jsonl
        self._history_stride, self._history_kept, self._history_mark = 1, 0, (0, 0.0)

    def update(self, clock, loss: float) -> None:
        if not self.show:
            return
        self._remember(clock, loss)
        now = self._now()
        due_print = now - self._printed_at >= (TTY_INTERVAL if self.interactive else PIPED_INTERVAL)
        due_file = self.path is not None and now - self._written_at >= FILE_INTERVAL
        if not (due_print or due_file):
            return
        self.figures = self._figures(clock, loss)
        if due_print:
            self._print(self.figures)
            self._printed_at = now
            self._rate_mark = (clock.tokens, clock.seconds)
        if due_file:
            self._write({**self.figures, "phase": "training"})
            self._append_history()
            self._written_at = now

    def close(self, clock=None, loss: float | None = None) -> None:
        """The last figures on their own line; the file then says the run is being scored."""
        if not self.show:
            return
        if clock is not None and loss is not None and clock.completed:
            self.figures = self._figures(clock, loss)
            self._print(self.figures)
        if self._open_line:
            self.stream.write("\n")
            self.stream.flush()
            self._open_line = False
        if self.path is not None and self.figures is not None:
            self._write({**self.figures, "phase": "scoring"})
        self._append_history()

    def scoring(self, tokens: int, total: int, seconds: float) -> None:
        """After each scored batch: tokens scored of `total` after `seconds` (probe and metric
        in one sweep), on the line and in progress.json, with the time left at this pace."""
        if not self.show:
            return
        now = self._now()
        last = tokens >= total
        due_print = last or now - self._printed_at >= (TTY_INTERVAL if self.interactive else PIPED_INTERVAL)
        due_file = self.path is not None and (last or now - self._written_at >= FILE_INTERVAL)
        left = seconds * (total - tokens) / tokens if tokens > 0 else None
        figures = {"phase": "scoring", "tokens_scored": tokens, "tokens_total": total,
                   "scoring_seconds": seconds, "remaining_seconds": left, "updated": time.time()}
        if due_print:
            self._print_text(format_scoring_line(figures))
            self._printed_at = now
            if last and self._open_line:
                self.stream.write("\n")
                self._open_line = False
        if due_file:
            self._write({**(self.figures or {}), **figures})
            self._written_at = now

    def _figures(self, clock, loss: float) -> dict:
        tokens, seconds = clock.tokens, clock.seconds
        mark_tokens, mark_seconds = self._rate_mark
        if seconds - mark_seconds > 0 and tokens > mark_tokens:
            rate = (tokens - mark_tokens) / (seconds - mark_seconds)
        else:
            rate = tokens / seconds if seconds > 0 else None
        mfu = (100.0 * self.flops_per_token * rate / self.peak_flops
               if rate and self.flops_per_token and self.peak_flops else None)
        fraction = done_fraction(clock)
        return {"step": clock.completed, "loss": float(loss), "tokens_per_second": rate, "mfu_percent": mfu,
                "elapsed_seconds": seconds, "fraction": fraction,
                "remaining_seconds": remaining_seconds(clock, fraction), "budget": clock.budget.describe(),
                "updated": time.time()}

    def _print(self, figures: dict) -> None:
        self._print_text(format_line(figures))

    def _print_text(self, line: str) -> None:
        if self.interactive:
            self.stream.write(f"\r{line}\033[K")
            self._open_line = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def _write(self, figures: dict) -> None:
        tmp = self.path.with_name(f"{self.path.name}.tmp{os.getpid()}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(figures, allow_nan=False))
            os.replace(tmp, self.path)
        except (OSError, ValueError):  # progress is a courtesy: it never stops a run
            tmp.unlink(missing_ok=True)


    def _remember(self, clock, loss: float) -> None:
        """One point of the curve, for every step while there are few, then every stride-th."""
        if self.path is None or clock.completed % self._history_stride:
            return
        tokens, seconds = clock.tokens, clock.seconds
        mark_tokens, mark_seconds = self._history_mark
        rate = (tokens - mark_tokens) / (seconds - mark_seconds) if seconds > mark_seconds else None
        mfu = (100.0 * self.flops_per_token * rate / self.peak_flops
               if rate and self.flops_per_token and self.peak_flops else None)
        self._history.append({"step": clock.completed, "loss": float(loss), "tokens": tokens, "seconds": seconds,
                              "fraction": done_fraction(clock), "tokens_per_second": rate, "mfu_percent": mfu})
        self._history_mark = (tokens, seconds)
        self._history_kept += 1
        if self._history_kept >= HISTORY_POINTS:
            self._history_stride *= 2
            self._history_kept = HISTORY_POINTS // 2

    def _append_history(self) -> None:
        if not self._history:
            return
        lines = "".join(json.dumps(point) + "\n" for point in self._history
                        if math.isfinite(point["loss"]))  # a NaN loss ends the run; its step is not drawn
        self._history = []
        try:
            with open(self.path.with_name(HISTORY_FILE), "a", encoding="utf-8") as f:
                f.write(lines)
        except OSError:  # like progress.json: a courtesy, never a reason to stop a run
            pass


def done_fraction(clock) -> float:
    """The fraction of the budget the completed steps used."""
    budget = clock.budget
    used = {"time": clock.seconds, "tokens": clock.tokens, "flops": clock.flops}[budget.mode]
    return min(1.0, max(0.0, used / budget.value))


def remaining_seconds(clock, fraction: float) -> float | None:
    """Training seconds left: exact for a time budget, extrapolated from the pace for the others."""
    if clock.budget.mode == "time":
        return max(0.0, clock.budget.value - clock.seconds)
    if fraction <= 0:
        return None
    return clock.seconds * (1.0 - fraction) / fraction


def format_line(figures: dict) -> str:
    """E.g. `step   120 | loss 3.2145 | 45.2k tok/s | MFU 41.3% | 45 s, 15% of time 300 s, ~255 s left`."""
    rate = figures.get("tokens_per_second")
    mfu = figures.get("mfu_percent")
    left = figures.get("remaining_seconds")
    parts = [f"step {figures['step']:>5}", f"loss {figures['loss']:.4f}",
             f"{_si(rate)} tok/s" if rate else "- tok/s"]
    if mfu is not None:
        parts.append(f"MFU {mfu:.1f}%")
    parts.append(f"{figures['elapsed_seconds']:.0f} s, {100 * figures['fraction']:.0f}% of {figures['budget']}"
                 + (f", ~{left:.0f} s left" if left is not None else ""))
    return " | ".join(parts)


def format_scoring_line(figures: dict) -> str:
    """E.g. `scoring | 65.5k of 131.1k tokens (50%) | 12 s, ~12 s left` (probe and metric together)."""
    tokens, total = figures["tokens_scored"], figures["tokens_total"]
    left = figures.get("remaining_seconds")
    return (f"scoring | {_si(tokens)} of {_si(total)} tokens ({100 * tokens / max(total, 1):.0f}%) | "
            f"{figures['scoring_seconds']:.0f} s" + (f", ~{left:.0f} s left" if left is not None else ""))


def _si(value: float) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.1f}{suffix}"
    return f"{value:.0f}"


def _is_tty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
