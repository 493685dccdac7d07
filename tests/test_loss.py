"""The fused head + cross-entropy against plain autodiff of the reference."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model import loss


def inputs(M=64, D=16, V=50, scale=3.0):
    h = scale * jax.random.normal(jax.random.key(0), (M, D))
    w = jax.random.normal(jax.random.key(1), (D, V))
    y = jax.random.randint(jax.random.key(2), (M,), 0, V)
    return h, w, y


def test_cross_entropy_matches_log_softmax():
    logits = jax.random.normal(jax.random.key(3), (5, 7)) * 4
    targets = jnp.array([0, 6, 3, 3, 1])
    expected = -jax.nn.log_softmax(logits)[jnp.arange(5), targets]
    np.testing.assert_allclose(loss.cross_entropy(logits, targets), expected, rtol=1e-6, atol=1e-6)


def test_uniform_logits_cost_log_vocab():
    h, w, y = inputs()
    assert float(jnp.mean(loss.head_cross_entropy(h, 0 * w, y, 15.0))) == pytest.approx(math.log(50), rel=1e-6)


@pytest.mark.parametrize("cap,chunk", [(None, 16), (5.0, 16), (5.0, 64), (5.0, 48)])
def test_fused_mean_and_gradients_match_autodiff(cap, chunk):
    h, w, y = inputs()
    reference = lambda h, w: 2.0 * jnp.mean(loss.head_cross_entropy(h, w, y, cap))
    fused = lambda h, w: 2.0 * loss.fused_head_cross_entropy_mean(h, w, y, cap, chunk)
    want_value, want_grads = jax.value_and_grad(reference, (0, 1))(h, w)
    got_value, got_grads = jax.jit(jax.value_and_grad(fused, (0, 1)))(h, w)
    np.testing.assert_allclose(got_value, want_value, rtol=1e-5)
    for got, want in zip(got_grads, want_grads):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_fused_without_differentiation_is_the_mean():
    h, w, y = inputs()
    want = jnp.mean(loss.head_cross_entropy(h, w, y, 5.0))
    np.testing.assert_allclose(jax.jit(lambda h, w: loss.fused_head_cross_entropy_mean(h, w, y, 5.0, 16))(h, w),
                               want, rtol=1e-5)


def test_fused_keeps_bfloat16_gradients_in_bfloat16():
    h, w, y = inputs()
    h16, w16 = h.astype(jnp.bfloat16), w.astype(jnp.bfloat16)
    grads = jax.grad(lambda h, w: loss.fused_head_cross_entropy_mean(h, w, y, 5.0, 16), (0, 1))(h16, w16)
    assert [g.dtype for g in grads] == [jnp.bfloat16, jnp.bfloat16]
    want = jax.grad(lambda h, w: jnp.mean(loss.head_cross_entropy(h, w, y, 5.0)), (0, 1))(h, w)
    for got, ref in zip(grads, want):
        np.testing.assert_allclose(np.asarray(got, np.float32), ref, atol=0.02 * float(jnp.abs(ref).max()))
