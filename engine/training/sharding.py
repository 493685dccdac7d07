"""The mesh and where arrays live on it: one axis, "data", over every device of every host.

Batches split along their rows over "data". State follows the experiment's rule:
"replicated", "fsdp" (each large array split along its largest divisible dimension), or a
function (path, shape, data_axis_size) -> PartitionSpec.
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from engine.errors import UserError

DATA_AXIS = "data"
# Arrays with fewer elements stay replicated under "fsdp": splitting them saves no
# memory worth the extra collectives.
FSDP_MIN_ELEMENTS = 2**12


def make_mesh(devices=None) -> Mesh:
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def data_axis_size(mesh: Mesh) -> int:
    return mesh.shape[DATA_AXIS]


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Rows over the data axis; the rest of each row on the same device."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_divisible(rows: int, mesh: Mesh, what: str) -> None:
    """A batch must split evenly over every device and every host, or the run stops with what to change."""
    devices = data_axis_size(mesh)
    processes = jax.process_count()
    if rows <= 0 or rows % devices or rows % processes:
        raise UserError(f"{what} = {rows} cannot be split evenly over {devices} devices "
                        f"({processes} processes): make it a positive multiple of {devices}")


def fsdp_spec(shape: tuple, axis_size: int) -> PartitionSpec:
    """Split the largest dimension that the data axis divides; replicate small arrays."""
    if axis_size == 1 or int(np.prod(shape, dtype=np.int64)) < FSDP_MIN_ELEMENTS:
        return PartitionSpec()
    for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
        if shape[dim] % axis_size == 0:
            spec = [None] * len(shape)
            spec[dim] = DATA_AXIS
            return PartitionSpec(*spec)
    return PartitionSpec()


def state_specs(abstract_state, rule, axis_size: int) -> list[PartitionSpec]:
    """A PartitionSpec for every leaf of the state (in leaf order), as the experiment's rule
    asks, for a data axis of `axis_size` devices (no devices needed: the tracer calls it)."""

    def spec_for(path, leaf) -> PartitionSpec:
        shape = tuple(leaf.shape)
        if rule == "replicated":
            return PartitionSpec()
        if rule == "fsdp":
            return fsdp_spec(shape, axis_size)
        if callable(rule):
            return _checked_spec(rule(jax.tree_util.keystr(path), shape, axis_size), path, shape, axis_size)
        raise UserError(f"Experiment.sharding = {rule!r} is not a rule: use \"replicated\", \"fsdp\" "
                        "or a function (path, shape, data_axis_size) -> PartitionSpec")

    return [spec_for(path, leaf) for path, leaf in jax.tree_util.tree_flatten_with_path(abstract_state)[0]]


def state_shardings(abstract_state, rule, mesh: Mesh):
    """A NamedSharding for every leaf of the state, as the experiment's rule asks."""
    specs = iter(state_specs(abstract_state, rule, data_axis_size(mesh)))
    return jax.tree.map(lambda _leaf: NamedSharding(mesh, next(specs)), abstract_state)


def _checked_spec(spec, path, shape: tuple, axis_size: int) -> PartitionSpec:
    where = jax.tree_util.keystr(path)
    if spec is None:
        return PartitionSpec()
    if not isinstance(spec, PartitionSpec):
        raise UserError(f"the sharding rule returned {spec!r} for state{where}: return a "
                        "jax.sharding.PartitionSpec (or None to replicate)")
    if len(spec) > len(shape):
        raise UserError(f"the sharding rule returned {spec} for state{where} of shape {shape}: "
                        "more entries than dimensions")
    for dim, axis in enumerate(spec):
        if axis is not None and shape[dim] % axis_size:
            raise UserError(f"the sharding rule splits dimension {dim} of state{where} (shape {shape}) "
                            f"over {axis_size} devices, which does not divide it")
    return spec


def global_batch(local_rows: np.ndarray, mesh: Mesh, global_rows: int) -> jax.Array:
    """One global array from this host's rows; each host passes its own share."""
    global_shape = (global_rows,) + tuple(local_rows.shape[1:])
    return jax.make_array_from_process_local_data(batch_sharding(mesh), local_rows, global_shape)


def process_share(rows: np.ndarray) -> np.ndarray:
    """This host's contiguous share of rows that every host holds in full."""
    per_process = rows.shape[0] // jax.process_count()
    start = jax.process_index() * per_process
    return rows[start:start + per_process]
