"""model/kv_cache.py: attention over a cache filled piece by piece equals attention over the whole sequence."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model import kv_cache
from model.attention import xla_attention


@pytest.mark.parametrize("window, kv_heads", [(None, 4), (5, 4), (None, 2)])
def test_prefill_then_one_token_at_a_time_matches_full_attention(window, kv_heads):
    B, T, N, H = 2, 12, 4, 8
    keys = jax.random.split(jax.random.key(0), 3)
    q = jax.random.normal(keys[0], (B, T, N, H))
    k = jax.random.normal(keys[1], (B, T, kv_heads, H))
    v = jax.random.normal(keys[2], (B, T, kv_heads, H))
    full = xla_attention(q, k, v, scale=H ** -0.5, window=window)
    layer = kv_cache.init(1, B, 16, kv_heads, H, jnp.float32)[0]
    prefill = 7
    layer = kv_cache.write(layer, k[:, :prefill], v[:, :prefill], 0)
    pieces = [kv_cache.attend(q[:, :prefill], layer, 0, window=window)]
    for t in range(prefill, T):
        layer = kv_cache.write(layer, k[:, t:t + 1], v[:, t:t + 1], jnp.int32(t))
        pieces.append(kv_cache.attend(q[:, t:t + 1], layer, jnp.int32(t), window=window))
    np.testing.assert_allclose(jnp.concatenate(pieces, axis=1), full, rtol=1e-5, atol=1e-5)


def test_init_shapes_and_dtype():
    cache = kv_cache.init(3, 2, 32, 4, 8, jnp.bfloat16)
    assert len(cache) == 3 and cache[0]["k"].shape == (2, 32, 4, 8) and cache[2]["v"].dtype == jnp.bfloat16
