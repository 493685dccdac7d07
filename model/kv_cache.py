"""A key/value cache for decoding one token at a time (`autoresearch sample`).

A layer's cache holds keys and values for `capacity` positions, `[rows, capacity, kv_heads,
head_dim]`. Decoding writes the new tokens' keys and values at their positions and lets each
query see every cached position up to its own (and, with a window, no further back than the
training attention would): the same attention as model/attention.py's, one query at a time.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from model.attention import MASK_VALUE


def init(layers: int, rows: int, capacity: int, kv_heads: int, head_dim: int, dtype) -> list[dict]:
    """An empty cache: per layer {"k", "v"} of zeros [rows, capacity, kv_heads, head_dim]."""
    shape = (rows, capacity, kv_heads, head_dim)
    return [{"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)} for _ in range(layers)]


def write(layer: dict, k_BTKH, v_BTKH, position) -> dict:
    """The layer's cache with T new keys and values stored at positions position .. position + T - 1."""
    start = (0, position, 0, 0)
    return {"k": jax.lax.dynamic_update_slice(layer["k"], k_BTKH.astype(layer["k"].dtype), start),
            "v": jax.lax.dynamic_update_slice(layer["v"], v_BTKH.astype(layer["v"].dtype), start)}


def attend(q_BTNH, layer: dict, position, *, scale: float | None = None, window: int | None = None):
    """Causal attention of T queries at positions position + t over the cached keys and values."""
    B, T, N, H = q_BTNH.shape
    k_BSKH, v_BSKH = layer["k"], layer["v"]
    S, K = k_BSKH.shape[1], k_BSKH.shape[2]
    if K != N:  # grouped heads, as in model/attention.py
        k_BSKH, v_BSKH = jnp.repeat(k_BSKH, N // K, axis=2), jnp.repeat(v_BSKH, N // K, axis=2)
    scale = 1.0 / math.sqrt(H) if scale is None else scale
    logits_BNTS = jnp.einsum("btnh,bsnh->bnts", q_BTNH * jnp.asarray(scale, q_BTNH.dtype),
                             k_BSKH.astype(q_BTNH.dtype), preferred_element_type=jnp.float32)
    query_T1 = position + jnp.arange(T)[:, None]
    key_1S = jnp.arange(S)[None, :]
    visible_TS = key_1S <= query_T1
    if window is not None:
        visible_TS &= key_1S > query_T1 - window
    logits_BNTS = jnp.where(visible_TS, logits_BNTS, MASK_VALUE)
    probs_BNTS = jax.nn.softmax(logits_BNTS, axis=-1).astype(q_BTNH.dtype)
    return jnp.einsum("bnts,bsnh->btnh", probs_BNTS, v_BSKH.astype(q_BTNH.dtype))
