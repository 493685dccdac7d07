"""TensorBoard event files of a loop: runs/TAG/tensorboard/<run>/ per experiment, and loop/ for the loop.

Each experiment's directory holds its training curve per step (train/loss, train/progress,
train/tokens_per_second, train/mfu_percent), its result and phase seconds (result/*,
seconds/*) and its hyperparameters as an HParams session, so TensorBoard's HParams table
compares every experiment. loop/ holds the loop's series with the experiment number as step.
While an experiment trains, `follow` adds the steps its history.jsonl gained since the last
look, so the curve grows live; `record` adds the rest when the row is recorded.
Written with tensorboardX (no TensorFlow); `tensorboard --logdir runs/TAG` reads it live.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from engine.tracking.history import read_history_from
from engine.tracking.records import ExperimentRecord

CURVE = {"loss": "train/loss", "fraction": "train/progress", "tokens_per_second": "train/tokens_per_second",
         "mfu_percent": "train/mfu_percent"}
LOOP_RUN = "loop"
FOLDER = "tensorboard"
FOLLOW_INTERVAL = 5.0  # seconds between looks at a running experiment's history.jsonl
FLUSH_SECONDS = 5.0  # tensorboardX writes from a thread: new points reach the file this late at most


class _Live:
    """A running experiment's writer: its history.jsonl read up to `offset`, its curve up to `step`."""

    def __init__(self, folder: Path):
        from tensorboardX import SummaryWriter

        shutil.rmtree(folder, ignore_errors=True)  # a run started again (a resumed loop) replaces its events
        self.writer = SummaryWriter(logdir=str(folder), flush_secs=FLUSH_SECONDS)
        self.offset, self.step, self.looked = 0, -1, -float("inf")

    def add_curve(self, points: list[dict]) -> None:
        for point in points:
            if point["step"] <= self.step:
                continue
            for key, tag in CURVE.items():
                if isinstance(point.get(key), (int, float)):
                    self.writer.add_scalar(tag, point[key], point["step"])
            self.step = point["step"]


class TensorBoardTracker:
    name = "TensorBoard"

    def __init__(self, run_dir: Path):
        from tensorboardX import SummaryWriter  # noqa: F401 (fails here, once, when not installed)

        self.root = Path(run_dir) / FOLDER
        self._loop = None
        self._live: dict[str, _Live] = {}

    def follow(self, name: str, exp_dir: Path) -> None:
        """Add the running experiment's new steps (at most every FOLLOW_INTERVAL seconds)."""
        if name not in self._live:
            self._live[name] = _Live(self.root / name)
        live = self._live[name]
        if time.monotonic() - live.looked < FOLLOW_INTERVAL:
            return
        points, live.offset = read_history_from(exp_dir, live.offset)
        live.add_curve(points)
        live.looked = time.monotonic()

    def record(self, record: ExperimentRecord) -> None:
        from tensorboardX.summary import hparams

        live = self._live.pop(record.name, None) or _Live(self.root / record.name)
        writer = live.writer
        try:
            live.add_curve(record.curve)
            last_step = record.curve[-1]["step"] if record.curve else 0
            for tag, value in record.scalars.items():
                writer.add_scalar(tag, value, last_step)
            _, session_start, session_end = hparams(record.hparams, {tag: value for tag, value in record.scalars.items()
                                                                     if tag.startswith("result/")})
            for summary in (session_start, session_end):
                writer.file_writer.add_summary(summary)
        finally:
            writer.close()
        self._loop_writer()
        for tag, value in record.loop.items():
            self._loop.add_scalar(tag, value, record.experiment)
        self._loop.flush()

    def _loop_writer(self):
        if self._loop is None:
            from tensorboardX import SummaryWriter

            self._loop = SummaryWriter(logdir=str(self.root / LOOP_RUN), flush_secs=FLUSH_SECONDS)
        return self._loop

    def close(self) -> None:
        for live in self._live.values():  # a run the loop was stopped in (it runs again on resume)
            live.writer.close()
        self._live = {}
        if self._loop is not None:
            self._loop.close()
            self._loop = None
