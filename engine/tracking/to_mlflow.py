"""MLflow: one MLflow run per experiment in the MLflow experiment named after the loop's tag.

The store defaults to runs/TAG/mlflow.db (a local SQLite store: `mlflow ui --backend-store-uri
sqlite:///runs/TAG/mlflow.db`; MLflow 3 keeps its file store in maintenance only);
`tracking_uri` sends the runs to a server or another store instead. Parameters are the
record's hyperparameters, metrics the training curve by step, the result, phase seconds and
the loop's series; tags its status, description and worker.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

from engine.tracking.records import ExperimentRecord
from engine.tracking.to_tensorboard import CURVE

STORE = "mlflow.db"
MAX_PARAM = 500  # MLflow refuses longer parameter values


class MlflowTracker:
    name = "MLflow"

    def __init__(self, run_dir: Path, tracking_uri: str | None):
        from mlflow.tracking import MlflowClient  # fails here, once, when not installed

        self.uri = tracking_uri or f"sqlite:///{Path(run_dir).resolve() / STORE}"
        self.client = MlflowClient(tracking_uri=self.uri)
        self._experiment_id = None

    def record(self, record: ExperimentRecord) -> None:
        from mlflow.entities import Metric, Param, RunTag

        run = self.client.create_run(self._experiment(record.group), run_name=record.name.replace("/", "-"),
                                     tags={"status": str(record.hparams.get("status")),
                                           "mlflow.note.content": str(record.hparams.get("description", ""))})
        now = int(time.time() * 1000)
        metrics = [Metric(_key(tag), float(point[key]), now, point["step"]) for point in record.curve
                   for key, tag in CURVE.items() if isinstance(point.get(key), (int, float))]
        metrics += [Metric(_key(tag), float(value), now, 0) for tag, value in {**record.scalars, **record.loop}.items()]
        params = [Param(_key(key), str(value)[:MAX_PARAM]) for key, value in record.hparams.items()]
        tags = [RunTag(key, str(record.hparams[key])) for key in ("worker", "node", "side") if key in record.hparams]
        try:  # MLflow takes at most 100 parameters and 1000 figures per batch
            for start in range(0, max(len(params), 1), 100):
                self.client.log_batch(run.info.run_id, params=params[start:start + 100], tags=tags if not start else [])
            for start in range(0, len(metrics), 1000):
                self.client.log_batch(run.info.run_id, metrics=metrics[start:start + 1000])
        finally:
            self.client.set_terminated(run.info.run_id)

    def _experiment(self, tag: str) -> str:
        if self._experiment_id is None:
            found = self.client.get_experiment_by_name(tag)
            self._experiment_id = found.experiment_id if found else self.client.create_experiment(tag)
        return self._experiment_id

    def close(self) -> None:
        pass


def _key(name: str) -> str:
    """MLflow's names allow letters, digits, _ - . / and spaces: anything else becomes _."""
    return re.sub(r"[^\w\-./ ]", "_", name)
