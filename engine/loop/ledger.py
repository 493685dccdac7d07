"""The ledger of a loop: runs/<tag>/results.jsonl (every figure) and results.tsv (the summary).

results.jsonl is the record of truth: one JSON object per line, each appended with a
single write and fsynced, so a kill at any moment leaves whole rows and at most one
torn tail, which `Ledger` cuts off when it opens. results.tsv is derived from it and
rebuilt whenever the two disagree.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from engine.files import write_atomic
from engine.loop import standings

TSV_COLUMNS = ("commit", "val_bpb", "memory_gb", "status", "description")
# invalid: the scorer refused the model (it saw later tokens or other rows, or its logits are
# not finite); stale: a parallel candidate whose change no longer applies to the best;
# baseline, confirm, adopted: runs that measure the best without proposing a change
# (engine/loop/standings.py's status_word), never counted as kept changes.
STATUSES = ("keep", "discard", "crash", "timeout", "rejected", "invalid", "stale", "unscored",
            "baseline", "confirm", "adopted")


def tsv_line(row: dict) -> str:
    """One results.tsv line: the reference's columns; the status is the row's status word, so an
    older ledger's baseline rows (recorded as keep) read `baseline` here too."""
    val = standings.row_value(row)
    val_text = f"{val:.6f}" if isinstance(val, (int, float)) and math.isfinite(val) else "0.000000"
    memory = row.get("memory_gb")
    memory_text = f"{memory:.1f}" if isinstance(memory, (int, float)) else "0.0"
    description = " ".join(str(row.get("description", "")).split())
    return "\t".join([str(row.get("commit") or "-")[:7], val_text, memory_text, standings.status_word(row), description]) + "\n"


def _append(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _finite(value):
    """JSON has no NaN or infinity: such figures are written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def read_rows(jsonl: Path) -> list[dict]:
    """Every whole row, oldest first. A line that is not a JSON object (the torn tail of a
    kill mid-write, or a line still being written while a reader looks) is left out."""
    try:
        text = Path(jsonl).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    rows = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def tsv_header(metric: str = "val_bpb") -> str:
    """results.tsv's header: the second column is named after the task's metric."""
    return "\t".join((TSV_COLUMNS[0], metric, *TSV_COLUMNS[2:])) + "\n"


class Ledger:
    """The tag's ledger, loaded and repaired on open; rows are appended, never rewritten.
    `metric` names results.tsv's second column (a command task's metric; val_bpb otherwise)."""
    def __init__(self, run_dir: Path, metric: str = "val_bpb"):
        self.run_dir = Path(run_dir)
        self.metric = metric
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = self.run_dir / "results.jsonl"
        self.tsv = self.run_dir / "results.tsv"
        self.rows = read_rows(self.jsonl)
        self._repair()

    def restore(self) -> bool:
        """Rewrite both files from the rows this loop recorded; True if they differed (an agent's
        shell edited them: a changed or added row would be believed by a resumed loop and the report)."""
        before = [path.read_bytes() if path.exists() else None for path in (self.jsonl, self.tsv)]
        self._repair()
        return before != [path.read_bytes() if path.exists() else None for path in (self.jsonl, self.tsv)]

    def _repair(self) -> None:
        whole = "".join(json.dumps(row) + "\n" for row in self.rows)
        if self.jsonl.exists() and self.jsonl.read_text() != whole:
            write_atomic(self.jsonl, whole, durable=True)
        expected = tsv_header(self.metric) + "".join(tsv_line(row) for row in self.rows)
        if not self.tsv.exists() or self.tsv.read_text() != expected:
            write_atomic(self.tsv, expected, durable=True)

    def append(self, row: dict) -> dict:
        """Append one decided row. Refuses an unknown status and any experiment number but the
        next, so a resumed loop can never record an experiment twice or skip one."""
        if row.get("status") not in STATUSES:
            raise ValueError(f"status {row.get('status')!r} is not one of {STATUSES}")
        if row.get("experiment") != len(self.rows):
            raise ValueError(f"row for experiment {row.get('experiment')} but {len(self.rows)} are recorded")
        row = _finite(row)
        _append(self.jsonl, json.dumps(row, allow_nan=False, default=str) + "\n")
        _append(self.tsv, tsv_line(row))
        self.rows.append(row)
        return row

    # Facts derived from the rows: engine/loop/standings.py defines them once.

    def next_experiment(self) -> int:
        return len(self.rows)

    def best_commit(self) -> str | None:
        return standings.best_commit(self.rows)

    def best_value(self) -> float | None:
        return standings.best_value(self.rows)

    def noise(self) -> float:
        """One run's standard deviation, pooled over every commit run more than once."""
        return standings.noise(self.rows)

    def noise_estimate(self):
        """The pooled noise with its degrees of freedom (engine/loop/noise.py's Noise)."""
        return standings.noise_estimate(self.rows)

    def total_cost(self) -> float:
        return standings.total_cost(self.rows)

    def misses_in_a_row(self) -> int:
        return standings.misses_in_a_row(self.rows)
