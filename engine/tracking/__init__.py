"""Tracking: every recorded experiment sent to experiment trackers, as the loop records it.

Owns the records (records.py: a run's curve from its history.jsonl, its score and phase
seconds, its hyperparameters from the editable files' UPPER_CASE constants, the loop's own
series) and one file per tracker: TensorBoard event files under runs/TAG/tensorboard/
(to_tensorboard.py, always on), Weights & Biases (to_wandb.py) and MLflow (to_mlflow.py) when
program.md's `## Trackers` or a flag asks. trackers.py fans a record out; a tracker that fails
warns once and is dropped, never stopping the loop. JAX-free (the loop side): imports
tensorboardX, wandb and mlflow only in the file of their tracker, when that tracker opens.
"""
from engine.tracking.trackers import TrackerSettings, Trackers

__all__ = ["TrackerSettings", "Trackers"]
