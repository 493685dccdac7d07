"""TensorBoard event files of a loop: runs/TAG/tensorboard/<run>/ per experiment, and loop/ for the loop.

Each experiment's directory holds its training curve per step (train/loss, train/progress,
train/tokens_per_second, train/mfu_percent), its result and phase seconds (result/*,
seconds/*) and its hyperparameters as an HParams session, so TensorBoard's HParams table
compares every experiment. loop/ holds the loop's series with the experiment number as step.
Written with tensorboardX (no TensorFlow); `tensorboard --logdir runs/TAG` reads it live.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from engine.tracking.records import ExperimentRecord

CURVE = {"loss": "train/loss", "fraction": "train/progress", "tokens_per_second": "train/tokens_per_second",
         "mfu_percent": "train/mfu_percent"}
LOOP_RUN = "loop"
FOLDER = "tensorboard"


class TensorBoardTracker:
    name = "TensorBoard"

    def __init__(self, run_dir: Path):
        from tensorboardX import SummaryWriter  # noqa: F401 (fails here, once, when not installed)

        self.root = Path(run_dir) / FOLDER
        self._loop = None

    def record(self, record: ExperimentRecord) -> None:
        from tensorboardX import SummaryWriter
        from tensorboardX.summary import hparams

        folder = self.root / record.name
        shutil.rmtree(folder, ignore_errors=True)  # a run recorded again (a resumed loop) replaces its events
        writer = SummaryWriter(logdir=str(folder), flush_secs=5)
        try:
            for point in record.curve:
                for key, tag in CURVE.items():
                    if isinstance(point.get(key), (int, float)):
                        writer.add_scalar(tag, point[key], point["step"])
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

            self._loop = SummaryWriter(logdir=str(self.root / LOOP_RUN), flush_secs=5)
        return self._loop

    def close(self) -> None:
        if self._loop is not None:
            self._loop.close()
            self._loop = None
