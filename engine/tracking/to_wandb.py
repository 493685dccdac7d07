"""Weights & Biases: one W&B run per experiment, grouped by the loop's tag (`pip install -e ".[wandb]"`).

Offline by default (`mode: offline`): the runs are written under runs/TAG/wandb/ with no
network and sent later with `wandb sync runs/TAG/wandb/offline-run-*`. A run's config holds
the record's hyperparameters, its history the training curve by step, its summary the result,
phase seconds and the loop's series at that experiment.
"""
from __future__ import annotations

from pathlib import Path

from engine.tracking.records import ExperimentRecord
from engine.tracking.to_tensorboard import CURVE


class WandbTracker:
    name = "Weights & Biases"

    def __init__(self, run_dir: Path, project: str | None, entity: str | None, mode: str):
        import wandb  # fails here, once, when the extra is not installed

        self.wandb, self.dir, self.project, self.entity, self.mode = wandb, Path(run_dir), project, entity, mode

    def record(self, record: ExperimentRecord) -> None:
        run = self.wandb.init(project=self.project or f"autoresearch-{record.group}", entity=self.entity,
                              group=record.group, name=record.name.replace("/", "-"), dir=str(self.dir),
                              mode=self.mode, config=record.hparams, job_type=str(record.hparams.get("status")),
                              reinit="create_new")
        try:
            for point in record.curve:
                run.log({tag: point[key] for key, tag in CURVE.items() if isinstance(point.get(key), (int, float))},
                        step=point["step"])
            run.summary.update({**record.scalars, **record.loop, "experiment": record.experiment})
        finally:
            run.finish()

    def close(self) -> None:
        pass
