"""Save the final state with Orbax (outside the clock) and restore it onto any mesh.

Layout: <checkpoint>/state/ (Orbax) and <checkpoint>/meta.json (what produced it).
"""
from __future__ import annotations

import json
from pathlib import Path

import jax

from engine.errors import UserError

STATE_DIR = "state"
META_FILE = "meta.json"


def save(directory: str | Path, state, meta: dict) -> Path:
    import orbax.checkpoint as ocp  # heavy; only runs that save pay for it

    directory = Path(directory).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(directory / STATE_DIR, state, force=True)
        checkpointer.wait_until_finished()
    if jax.process_index() == 0:
        (directory / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return directory


def restore(directory: str | Path, abstract_state, shardings):
    """The saved state, placed with `shardings` (which may differ from the ones it was saved with)."""
    import orbax.checkpoint as ocp

    directory = Path(directory).absolute()
    if not (directory / STATE_DIR).is_dir():
        raise UserError(f"{directory} is not a checkpoint written by `autoresearch train` "
                        f"(no {STATE_DIR}/ inside): pass the run's checkpoint directory")
    target = jax.tree.map(lambda leaf, sh: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sh),
                          abstract_state, shardings)
    with ocp.StandardCheckpointer() as checkpointer:
        try:
            return checkpointer.restore(directory / STATE_DIR, target)
        except (ValueError, KeyError) as error:
            raise UserError(f"the checkpoint in {directory} does not fit this train.py's state "
                            f"({error}): evaluate with the train.py that wrote it") from error


def read_meta(directory: str | Path) -> dict:
    path = Path(directory) / META_FILE
    return json.loads(path.read_text()) if path.exists() else {}
