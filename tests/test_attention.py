"""Every attention implementation against a plain per-position reference, on CPU."""
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model import attention


def reference_attention(q, k, v, window=None):
    """Loop over query positions: softmax over keys 0..t (or the last `window` of them), float64."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    B, T, N, H = q.shape
    group = N // k.shape[2]
    out = np.zeros_like(q)
    for t in range(T):
        for n in range(N):
            first = 0 if window is None else max(0, t - window + 1)
            keys = slice(first, t + 1)
            scores = np.einsum("bh,bsh->bs", q[:, t, n], k[:, keys, n // group]) / math.sqrt(H)
            weights = np.exp(scores - scores.max(-1, keepdims=True))
            weights /= weights.sum(-1, keepdims=True)
            out[:, t, n] = np.einsum("bs,bsh->bh", weights, v[:, keys, n // group])
    return out


def qkv(B=2, T=16, N=4, K=4, H=32, seed=0, dtype=jnp.float32):
    kq, kk, kv = jax.random.split(jax.random.key(seed), 3)
    return (jax.random.normal(kq, (B, T, N, H), dtype), jax.random.normal(kk, (B, T, K, H), dtype),
            jax.random.normal(kv, (B, T, K, H), dtype))


@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (4, 2), (4, 1)])
def test_xla_matches_reference(heads, kv_heads):
    q, k, v = qkv(N=heads, K=kv_heads)
    out = attention.causal_attention(q, k, v, implementation="xla")
    np.testing.assert_allclose(out, reference_attention(q, k, v), atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("window", [1, 5, 16, 100])
def test_sliding_window_matches_reference(window):
    q, k, v = qkv(N=4, K=2)
    out = attention.causal_attention(q, k, v, implementation="xla", window=window)
    np.testing.assert_allclose(out, reference_attention(q, k, v, window=window), atol=2e-5, rtol=2e-5)


def test_first_position_sees_only_itself():
    q, k, v = qkv()
    out = attention.causal_attention(q, k, v, implementation="xla")
    np.testing.assert_allclose(out[:, 0], v[:, 0], atol=1e-6)


def test_future_tokens_do_not_leak():
    q, k, v = qkv(T=12)
    changed_v = v.at[:, 8:].set(100.0)
    before = attention.causal_attention(q, k, v, implementation="xla")
    after = attention.causal_attention(q, k, changed_v, implementation="xla")
    np.testing.assert_array_equal(before[:, :8], after[:, :8])
    assert not np.allclose(before[:, 8:], after[:, 8:])


def test_default_on_cpu_is_xla():
    q, _, _ = qkv()
    assert attention.default_implementation(q) == "xla"
    q16, _, _ = qkv(dtype=jnp.bfloat16)
    assert not attention.cudnn_accepts(q) and attention.cudnn_accepts(q16)


def test_bfloat16_inputs_stay_close():
    q, k, v = qkv()
    exact = reference_attention(q, k, v)
    out = attention.causal_attention(q.astype(jnp.bfloat16), k.astype(jnp.bfloat16),
                                     v.astype(jnp.bfloat16), implementation="xla")
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out, np.float32), exact, atol=0.08)


def test_unknown_implementation_is_refused():
    q, k, v = qkv()
    with pytest.raises(ValueError, match="flash3"):
        attention.causal_attention(q, k, v, implementation="flash3")


@pytest.mark.skipif(attention._splash_module() is None, reason="this JAX ships no splash kernel")
@pytest.mark.parametrize("kv_heads,window", [(2, None), (1, None), (2, 100)])
def test_tpu_splash_kernel_in_interpret_mode_matches_xla(kv_heads, window):
    """The TPU path's own Pallas kernel, run by the Pallas interpreter: values and gradients."""
    q, k, v = qkv(B=1, T=256, N=2, K=kv_heads, H=128)
    scale = 128 ** -0.5
    splash = lambda q, k, v: attention.splash_attention(q, k, v, scale=scale, window=window, interpret=True)
    xla = lambda q, k, v: attention.xla_attention(q, k, v, scale=scale, window=window)
    np.testing.assert_allclose(splash(q, k, v), xla(q, k, v), atol=1e-5, rtol=1e-5)
    loss = lambda f: lambda *a: jnp.sum(f(*a) ** 2)
    grads_splash = jax.grad(loss(splash), argnums=(0, 1, 2))(q, k, v)
    grads_xla = jax.grad(loss(xla), argnums=(0, 1, 2))(q, k, v)
    for got, want in zip(grads_splash, grads_xla):
        np.testing.assert_allclose(got, want, atol=1e-3, rtol=1e-3)


def test_gradients_match_reference_autodiff():
    q, k, v = qkv(T=8, N=2, K=2, H=16)
    loss = lambda q, k, v: jnp.sum(jnp.sin(attention.causal_attention(q, k, v, implementation="xla")))

    def reference_loss(q, k, v):  # dense softmax with an explicit -inf mask, written independently
        T = q.shape[1]
        scores = jnp.einsum("btnh,bsnh->bnts", q, k) / math.sqrt(q.shape[-1])
        scores = jnp.where(jnp.arange(T)[:, None] >= jnp.arange(T)[None, :], scores, -jnp.inf)
        return jnp.sum(jnp.sin(jnp.einsum("bnts,bsnh->btnh", jax.nn.softmax(scores, -1), v)))

    got_grads = jax.jit(jax.grad(loss, (0, 1, 2)))(q, k, v)
    want_grads = jax.jit(jax.grad(reference_loss, (0, 1, 2)))(q, k, v)
    for got, want in zip(got_grads, want_grads):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


SPLASH_DATA_PARALLEL = """
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from model import attention
rows = NamedSharding(Mesh(np.asarray(jax.devices()), ("data",)), PartitionSpec("data"))
q, k, v = (jax.device_put(jax.random.normal(key, (8, 128, 2, 128)), rows)
           for key in jax.random.split(jax.random.key(0), 3))
splash = jax.jit(lambda q, k, v: attention.splash_attention(q, k, v, scale=0.1, interpret=True),
                 in_shardings=(rows, rows, rows), out_shardings=rows)
compiled = splash.lower(q, k, v).compile().as_text()
assert "all-gather" not in compiled, "the kernel's inputs were gathered onto every device"
error = float(jnp.abs(splash(q, k, v) - attention.xla_attention(q, k, v, scale=0.1)).max())
assert error < 1e-5, error
print("ok")
"""


@pytest.mark.skipif(attention._splash_module() is None, reason="this JAX ships no splash kernel")
def test_splash_kernel_runs_on_each_devices_rows():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    run = subprocess.run([sys.executable, "-c", SPLASH_DATA_PARALLEL], env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stderr[-3000:]
