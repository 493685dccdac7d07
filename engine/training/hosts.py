"""Several hosts, one run: open their connections before the clock, and let every host
follow host 0's clock, so none decides to stop a step before the others."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from engine.training import clock, sharding


def warm_up(mesh, bos_id: int) -> None:
    """Across hosts, the first collective sets up connections (seconds with gloo): not training time."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils
    rows = np.full((sharding.data_axis_size(mesh), 2), bos_id, np.int32)
    batch = sharding.global_batch(sharding.process_share(rows), mesh, len(rows))
    jax.block_until_ready(jax.jit(jnp.sum, out_shardings=sharding.replicated(mesh))(batch))
    multihost_utils.sync_global_devices("autoresearch: start the clock")


def agreement(budget_clock: clock.BudgetClock):
    """With several hosts and a time budget, all follow host 0's clock, or they would deadlock.

    Host 0 posts each decision in the coordinator's key-value store: host-to-host only, so
    no host waits for the device to drain a step.
    """
    if jax.process_count() == 1 or budget_clock.budget.mode != "time":
        return lambda stop, progress: (stop, progress)
    client = coordinator_client()
    if client is None:
        return agreement_by_broadcast()
    decisions = iter(range(2**62))

    def agree(stop: bool, progress: float):
        key = f"autoresearch/clock/{next(decisions)}"
        if jax.process_index() == 0:
            client.key_value_set(key, f"{int(stop)} {progress!r}")
        else:
            stop_text, progress_text = client.blocking_key_value_get(key, AGREE_TIMEOUT_MS).split()
            stop, progress = stop_text == "1", float(progress_text)
        return stop, progress
    return agree


AGREE_TIMEOUT_MS = 10 * 60 * 1000  # host 0 may be inside a long step


def coordinator_client():
    try:
        from jax._src import distributed  # the key-value store has no public handle
        client = distributed.global_state.client
        return client if hasattr(client, "blocking_key_value_get") else None
    except (ImportError, AttributeError):
        return None


def agreement_by_broadcast():
    from jax.experimental import multihost_utils

    def agree(stop: bool, progress: float):
        shared = multihost_utils.broadcast_one_to_all(np.array([float(stop), progress], np.float32))
        return bool(shared[0]), float(shared[1])
    return agree
