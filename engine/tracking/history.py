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
    if exp_dir is None:
        return []
    try:
        text = (Path(exp_dir) / HISTORY_FILE).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    points = []
    for line in text.splitlines():
        try:
            point = json.loads(line)
        except ValueError:
            continue
        if isinstance(point, dict) and isinstance(point.get("step"), int):
            points.append(point)
    return points
