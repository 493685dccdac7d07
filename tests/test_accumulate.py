"""model/accumulate.py: a fixed global batch in micro-batches gives the same loss and gradient."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model import accumulate


@pytest.mark.parametrize("rows, devices, device_rows, count", [
    (64, 1, 64, 1), (64, 8, 64, 1), (64, 1, 16, 4), (64, 2, 10, 4), (48, 1, 20, 3), (6, 1, 4, 2), (7, 1, 4, 7),
])
def test_micro_batch_count_fits_each_device_and_splits_evenly(rows, devices, device_rows, count):
    assert accumulate.micro_batch_count(rows, devices, device_rows) == count


def test_a_batch_that_does_not_split_over_the_devices_is_named():
    with pytest.raises(ValueError, match="12 rows does not split over 8 devices"):
        accumulate.micro_batch_count(12, 8, 64)


def test_micro_batch_i_takes_every_count_th_row():
    batch = {"inputs": jnp.arange(12).reshape(6, 2)}
    split = accumulate.split_micro_batches(batch, 3)["inputs"]
    assert split.shape == (3, 2, 2)
    np.testing.assert_array_equal(split[1], batch["inputs"][1::3])


def loss_fn(params, batch):
    hidden = jnp.tanh(batch["inputs"] @ params["w"] + params["b"])
    return jnp.mean((hidden @ params["v"] - batch["targets"]) ** 2)


@pytest.mark.parametrize("count", [2, 4, 8])
def test_accumulated_loss_and_gradient_equal_the_whole_batch(count):
    keys = jax.random.split(jax.random.key(0), 5)
    params = {"w": jax.random.normal(keys[0], (5, 7)), "b": jax.random.normal(keys[1], (7,)),
              "v": jax.random.normal(keys[2], (7, 3))}
    batch = {"inputs": jax.random.normal(keys[3], (16, 5)), "targets": jax.random.normal(keys[4], (16, 3))}
    whole_loss, whole_grads = jax.value_and_grad(loss_fn)(params, batch)
    loss, grads = jax.jit(accumulate.value_and_grad, static_argnums=(0, 3))(loss_fn, params, batch, count)
    assert float(loss) == pytest.approx(float(whole_loss), rel=1e-5)
    for name in params:
        np.testing.assert_allclose(grads[name], whole_grads[name], rtol=1e-4, atol=1e-6)
