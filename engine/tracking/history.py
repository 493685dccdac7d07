"""An experiment's training curve, as engine/training/progress.py appends it: runs/TAG/exp-NNNN/history.jsonl.

One JSON object per recorded step: step, loss, tokens, seconds (training seconds so far),
fraction (of the budget), tokens_per_second and mfu_percent (None where unknown).
"""
from __future__ import annotations

import json
from pathlib import Path

HISTORY_FILE = "history.jsonl"  # engine/training/progress.py writes it (the loop never imports that side)


def read_history(exp_dir: Path | str | None) -> list[dict]:
    """The recorded steps, oldest first; [] when the run wrote none. A torn last line is left out."""
    return read_history_from(exp_dir, 0)[0]


def read_history_from(exp_dir: Path | str | None, offset: int) -> tuple[list[dict], int]:
    """The steps appended after byte `offset` (whole lines only: one being written waits for the next
    read), and the offset to read from next time."""
    if exp_dir is None:
        return [], offset
    try:
        with open(Path(exp_dir) / HISTORY_FILE, "rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return [], offset
    whole = data[: data.rfind(b"\n") + 1]
    return _points(whole.decode("utf-8", errors="replace")), offset + len(whole)


def _points(text: str) -> list[dict]:
    points = []
    for line in text.splitlines():
        try:
            point = json.loads(line)
        except ValueError:
            continue
        if isinstance(point, dict) and isinstance(point.get("step"), int):
            points.append(point)
    return points
