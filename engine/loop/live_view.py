"""The loop's terminal view: one line per finished experiment and, on a terminal,
a status line rewritten in place while an experiment runs, with its step, loss and
time left read from the run's progress.json."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

# Written atomically in an experiment's directory by engine/training/progress.py.
PROGRESS_FILE = "progress.json"

from engine.loop.standings import keep_rate_words, metric_of, row_value, status_word, tally


def format_val(value) -> str:
    return f"{value:.6f}" if isinstance(value, (int, float)) else "-"


def keep_rate(rows: list[dict]) -> str:
    """Kept changes over decided candidates, e.g. "2 kept of 7 candidates" (engine/loop/standings.py
    counts them: baseline and confirmation runs are no candidates, a re-run series counts once)."""
    return keep_rate_words(tally(rows))


def read_progress(exp_dir: Path | str | None) -> dict | None:
    """The running experiment's latest figures, or None before its first step."""
    if exp_dir is None:
        return None
    try:
        figures = json.loads((Path(exp_dir) / PROGRESS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return figures if isinstance(figures, dict) and "step" in figures else None


def describe_progress(figures: dict) -> str:
    """E.g. "step 120, loss 3.2145, 40% of budget, ~180 s left" (or "..., scoring")."""
    parts = [f"step {figures.get('step')}"]
    if isinstance(figures.get("loss"), (int, float)):
        parts.append(f"loss {figures['loss']:.4f}")
    if figures.get("phase") == "scoring":
        return ", ".join(parts + [describe_scoring(figures)])
    if isinstance(figures.get("fraction"), (int, float)):
        parts.append(f"{100 * figures['fraction']:.0f}% of budget")
    if isinstance(figures.get("remaining_seconds"), (int, float)):
        parts.append(f"~{figures['remaining_seconds']:.0f} s left")
    return ", ".join(parts)


def describe_scoring(figures: dict) -> str:
    """E.g. "scoring 40% of 131k tokens, ~12 s left" (just "scoring" before the first batch)."""
    scored, total = figures.get("tokens_scored"), figures.get("tokens_total")
    if not (isinstance(scored, int) and isinstance(total, int) and total > 0):
        return "scoring"
    text = f"scoring {100 * scored / total:.0f}% of {total / 1000:.0f}k tokens"
    left = figures.get("remaining_seconds")
    return text + (f", ~{left:.0f} s left" if isinstance(left, (int, float)) else "")


class LiveView:
    def __init__(self, stream=None, interactive: bool | None = None, min_interval: float = 1.0):
        self.stream = stream or sys.stdout
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.min_interval = min_interval
        self._last_tick = 0.0
        self._line_open = False
        self.status = ""
        self.exp_dir: Path | None = None

    def say(self, text: str) -> None:
        self._clear()
        print(text, file=self.stream, flush=True)

    def start(self, experiment: int, description: str, budget: str, best, rows: list[dict],
              exp_dir: Path | str | None = None) -> None:
        self.exp_dir = Path(exp_dir) if exp_dir is not None else None
        self.status = (f"#{experiment} {description[:60]} | budget {budget} | best {format_val(best)} | "
                       f"{keep_rate(rows)}")
        self.say(f"#{experiment} running: {description}")

    def tick(self, elapsed: float) -> None:
        if not self.interactive or time.monotonic() - self._last_tick < self.min_interval:
            return
        self._last_tick = time.monotonic()
        figures = read_progress(self.exp_dir)
        shown = f" | {describe_progress(figures)}" if figures else ""
        self.stream.write(f"\r\033[K{elapsed:6.0f}s  {self.status}{shown}")
        self.stream.flush()
        self._line_open = True

    def finish(self, row: dict, best_after, rows: list[dict]) -> None:
        status = status_word(row)
        value = row_value(row)
        if value is not None:
            figure = f"{metric_of(row)} {format_val(value)}"
        elif status == "discard":  # a failed check: the decision below says why
            figure = "not scored"
        else:
            figure = row.get("error") or "not run"
        self.say(f"#{row['experiment']} {status:<8} {figure}  best {format_val(best_after)}  "
                 f"{keep_rate(rows)}  [{row.get('wall_seconds', 0):.0f} s] {row.get('decision', '')}".rstrip())

    def _clear(self) -> None:
        if self._line_open:
            self.stream.write("\r\033[K")
            self._line_open = False
