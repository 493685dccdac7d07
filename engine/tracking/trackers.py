"""The trackers a loop sends its experiments to, and the settings that choose them.

program.md's `## Trackers` section (engine/loop/protocol.py) or the loop's flags set them:
TensorBoard always (unless `tensorboard: false`), W&B with `wandb: true` (offline unless
`wandb_mode: online`), MLflow with `mlflow: true`. A tracker that cannot open or fails to
record (not installed, no network, a bad key) is reported once through `say` and dropped:
tracking never stops the loop.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from engine.tracking.records import experiment_record

WANDB_MODES = ("offline", "online", "disabled")


@dataclasses.dataclass
class TrackerSettings:
    tensorboard: bool = True
    wandb: bool = False
    wandb_project: str | None = None  # default: autoresearch-TAG
    wandb_entity: str | None = None
    wandb_mode: str = "offline"  # sync later with `wandb sync runs/TAG/wandb/offline-run-*`
    mlflow: bool = False
    mlflow_tracking_uri: str | None = None  # default: a SQLite store, runs/TAG/mlflow.db


class Trackers:
    """`record(row, rows, exp_dir, sources)` after each ledger row; `close()` when the loop ends."""

    def __init__(self, run_dir: Path, settings: TrackerSettings, say=print):
        self.run_dir, self.tag, self.say = Path(run_dir), Path(run_dir).name, say
        self.active = [tracker for tracker in (self._open(name, settings) for name in _chosen(settings)) if tracker]

    def _open(self, name: str, settings: TrackerSettings):
        try:
            if name == "tensorboard":
                from engine.tracking.to_tensorboard import TensorBoardTracker
                return TensorBoardTracker(self.run_dir)
            if name == "wandb":
                from engine.tracking.to_wandb import WandbTracker
                return WandbTracker(self.run_dir, settings.wandb_project, settings.wandb_entity, settings.wandb_mode)
            from engine.tracking.to_mlflow import MlflowTracker
            return MlflowTracker(self.run_dir, settings.mlflow_tracking_uri)
        except Exception as error:  # noqa: BLE001 (an optional tracker must never stop the loop)
            self.say(f"tracking: {name} is off for this loop: {_reason(error)}"
                     + (f" (install it: pip install -e \".[{name}]\")" if isinstance(error, ImportError) else ""))
            return None

    def record(self, row: dict, rows: list[dict], exp_dir: Path | None, sources: dict[str, str]) -> None:
        if not self.active:
            return
        try:
            record = experiment_record(row, rows, exp_dir, sources, self.tag)
        except Exception as error:  # noqa: BLE001
            self.say(f"tracking: experiment {row.get('experiment')} not sent to the trackers: {_reason(error)}")
            return
        for tracker in list(self.active):
            try:
                tracker.record(record)
            except Exception as error:  # noqa: BLE001 (no network, a bad key, a full disk: warn once, go on)
                self.active.remove(tracker)
                self.say(f"tracking: {tracker.name} failed ({_reason(error)}); it is off for the rest of this loop")

    def follow(self, name: str, exp_dir: Path) -> None:
        """While experiment run `name` (records.run_name) trains: its new steps to the trackers that
        draw curves live (TensorBoard). Never raises."""
        for tracker in [t for t in self.active if hasattr(t, "follow")]:
            try:
                tracker.follow(name, exp_dir)
            except Exception as error:  # noqa: BLE001
                self.active.remove(tracker)
                self.say(f"tracking: {tracker.name} failed ({_reason(error)}); it is off for the rest of this loop")

    def close(self) -> None:
        for tracker in self.active:
            try:
                tracker.close()
            except Exception:  # noqa: BLE001
                pass
        self.active = []


def _chosen(settings: TrackerSettings) -> list[str]:
    return [name for name, on in (("tensorboard", settings.tensorboard), ("wandb", settings.wandb),
                                  ("mlflow", settings.mlflow)) if on]


def _reason(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200]}" if text else type(error).__name__
