"""Gradient accumulation: a fixed global batch computed in micro-batches that fit a device.

A batch of B rows is sharded over the devices by rows. Micro-batch i takes rows i, i + A,
i + 2A, ... (A micro-batches), so every device keeps its own rows in every micro-batch and
nothing moves between devices. The micro-batches run in one `lax.scan`, which the engine's
FLOP count counts once per micro-batch: the step's FLOPs do not depend on A.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp


def micro_batch_count(rows: int, num_devices: int, device_rows: int) -> int:
    """Fewest micro-batches that keep each device at or under `device_rows` rows and split
    each device's share evenly. Raises ValueError when the rows do not split over the devices."""
    if rows % num_devices:
        raise ValueError(f"a batch of {rows} rows does not split over {num_devices} devices: "
                         f"make the batch a multiple of {num_devices} rows")
    per_device = rows // num_devices
    count = max(1, -(-per_device // max(1, device_rows)))
    while per_device % count:
        count += 1
    return count


def split_micro_batches(batch: dict, count: int) -> dict:
    """{name: [B, ...]} -> {name: [count, B / count, ...]}; micro-batch i holds rows i::count."""
    def split(x):
        rows = x.shape[0]
        return jnp.swapaxes(x.reshape(rows // count, count, *x.shape[1:]), 0, 1)
    return jax.tree.map(split, batch)


def value_and_grad(loss_fn: Callable[[Any, dict], Any], params, batch: dict, count: int):
    """(mean loss, mean gradient) of loss_fn(params, batch) over `count` equal micro-batches.

    With count 1 this is jax.value_and_grad(loss_fn)(params, batch). Gradients accumulate in
    the parameters' dtype (float32 master weights)."""
    grad_fn = jax.value_and_grad(loss_fn)
    if count == 1:
        return grad_fn(params, batch)

    def accumulate(carry, micro):
        loss_sum, grad_sum = carry
        loss, grads = grad_fn(params, micro)
        return (loss_sum + loss.astype(jnp.float32), jax.tree.map(jnp.add, grad_sum, grads)), None

    zeros = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, params))
    (loss_sum, grad_sum), _ = jax.lax.scan(accumulate, zeros, split_micro_batches(batch, count))
    return loss_sum / count, jax.tree.map(lambda g: g / count, grad_sum)
