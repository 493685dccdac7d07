"""The loop's terminal view: one line per finished experiment and, on a terminal,
a status line rewritten in place while an experiment runs."""
from __future__ import annotations

import sys
import time


def format_val(value) -> str:
    return f"{value:.6f}" if isinstance(value, (int, float)) else "-"


def keep_rate(rows: list[dict]) -> str:
    """Kept candidates over tried ones, after the baseline; a first run awaiting its re-run is not counted."""
    candidates = [row for row in rows if row.get("role") != "baseline" and not row.get("needs_rerun")]
    kept = sum(1 for row in candidates if row.get("kept"))
    return f"{kept}/{len(candidates)} kept" if candidates else "0 kept"


class LiveView:
    def __init__(self, stream=None, interactive: bool | None = None, min_interval: float = 1.0):
        self.stream = stream or sys.stdout
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.min_interval = min_interval
        self._last_tick = 0.0
        self._line_open = False
        self.status = ""

    def say(self, text: str) -> None:
        self._clear()
        print(text, file=self.stream, flush=True)

    def start(self, experiment: int, description: str, budget: str, best, rows: list[dict]) -> None:
        self.status = (f"#{experiment} {description[:60]} | budget {budget} | best {format_val(best)} | "
                       f"{keep_rate(rows)}")
        self.say(f"#{experiment} running: {description}")

    def tick(self, elapsed: float) -> None:
        if not self.interactive or time.monotonic() - self._last_tick < self.min_interval:
            return
        self._last_tick = time.monotonic()
        self.stream.write(f"\r\033[K{elapsed:6.0f}s  {self.status}")
        self.stream.flush()
        self._line_open = True

    def finish(self, row: dict, best_after, rows: list[dict]) -> None:
        status = row["status"]
        figure = f"val_bpb {format_val(row.get('val_bpb'))}" if row.get("val_bpb") is not None else (
            row.get("error") or "not run")
        self.say(f"#{row['experiment']} {status:<8} {figure}  best {format_val(best_after)}  "
                 f"{keep_rate(rows)}  [{row.get('wall_seconds', 0):.0f} s] {row.get('decision', '')}".rstrip())

    def _clear(self) -> None:
        if self._line_open:
            self.stream.write("\r\033[K")
            self._line_open = False
