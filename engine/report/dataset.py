"""The data a loop trained on, named from its manifest, and whether its runs were long enough to learn."""
from __future__ import annotations

import json
import math
from pathlib import Path

from engine.tracking.history import read_history

MIN_STEPS = 50  # fewer steps than this and a change's effect is mostly the first steps' noise
MIN_LOSS_DROP = 0.10  # the loss fell less than this share of where it started: barely learned


def dataset(fingerprint) -> dict | None:
    """Source, vocabulary and tokens per split of the prepared cache with this manifest fingerprint;
    None when the fingerprint is unknown or mixed, or the cache is not on this machine."""
    if not isinstance(fingerprint, str):
        return None
    from engine import paths

    try:
        data = paths.find_data_dir(fingerprint)
        manifest = json.loads((Path(data) / "manifest.json").read_text()) if data else None
    except (OSError, ValueError):
        manifest = None
    if not isinstance(manifest, dict):
        return {"fingerprint": fingerprint, "name": None, "source": None, "vocab_size": None, "tokens": {}}
    spec = manifest.get("spec") or {}
    splits = manifest.get("splits") or {}
    return {"fingerprint": fingerprint, "name": manifest.get("name"),
            "source": spec.get("dataset") or manifest.get("source"),
            "vocab_size": manifest.get("vocab_size") or spec.get("vocab_size"),
            "sequence_length": (manifest.get("constants") or {}).get("sequence_length"),
            "tokens": {split: figures.get("tokens") for split, figures in splits.items() if isinstance(figures, dict)}}


def short_runs(experiments: list[dict], run_dir: Path, data: dict | None) -> str | None:
    """A sentence when the scored runs were too short to learn: a median under MIN_STEPS steps, or a
    training loss that fell less than MIN_LOSS_DROP of its start (the start read from the runs'
    history.jsonl, else the loss of uniform guessing, ln(vocabulary))."""
    trained = [e for e in experiments if e["val_bpb"] is not None and isinstance(e.get("steps"), int)]
    if not trained:
        return None
    steps = sorted(e["steps"] for e in trained)[len(trained) // 2]
    drops = [d for d in (_loss_drop(e, run_dir, data) for e in trained) if d is not None]
    drop = sorted(d[0] for d in drops)[len(drops) // 2] if drops else None
    problems = []
    if steps < MIN_STEPS:
        problems.append(f"a median of {steps} training steps")
    if drop is not None and drop < MIN_LOSS_DROP:
        first, last = next(d[1:] for d in drops if d[0] == drop)
        problems.append(f"a training loss that barely moved (median run: {first:.3f} -> {last:.3f}, {drop:.0%} lower)")
    if not problems:
        return None
    return (f"The runs were too short to learn: {' and '.join(problems)}. Differences between experiments "
            "are then mostly noise of the first steps; give each run a larger budget (program.md's `## Budget`).")


def _loss_drop(experiment: dict, run_dir: Path, data: dict | None) -> tuple[float, float, float] | None:
    history = read_history(Path(run_dir) / f"exp-{experiment['experiment']:04d}") \
        if isinstance(experiment.get("experiment"), int) else []
    last = history[-1]["loss"] if history else experiment.get("final_loss")
    if history and len(history) > 1:
        first = history[0]["loss"]
    elif data and data.get("vocab_size"):
        first = math.log(data["vocab_size"])  # a model that has learned nothing guesses uniformly
    else:
        return None
    if not isinstance(last, (int, float)) or not first > 0:
        return None
    return (first - last) / first, first, last
