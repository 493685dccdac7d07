"""Causal self-attention, dispatched per backend with the same numerics.

    cudnn   NVIDIA GPUs, bf16/fp16: cuDNN flash attention via jax.nn.dot_product_attention
    splash  TPUs: the Pallas splash-attention kernel (block-sparse causal flash attention)
    xla     everywhere else, and the fallback when a kernel cannot take the shapes

Arrays are `[batch, time, heads, head_dim]`; keys and values may have fewer heads
than queries (grouped-query attention) as long as they divide the query heads.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

IMPLEMENTATIONS = ("xla", "cudnn", "splash")
# Splash tiles the sequence in blocks of this many positions on both axes.
SPLASH_BLOCK = 128
# A large finite negative, not -inf: a fully masked row must not turn into NaN.
MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


def causal_attention(q_BTNH, k_BTKH, v_BTKH, *, implementation: str | None = None,
                     scale: float | None = None):
    """softmax(q k^T * scale, causal) v, computed by the best kernel for this backend."""
    scale = 1.0 / math.sqrt(q_BTNH.shape[-1]) if scale is None else scale
    implementation = implementation or default_implementation(q_BTNH)
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"attention implementation {implementation!r}: choose one of {IMPLEMENTATIONS}")
    if implementation == "cudnn":
        return jax.nn.dot_product_attention(q_BTNH, k_BTKH, v_BTKH, scale=scale, is_causal=True,
                                            implementation="cudnn")
    if implementation == "splash":
        return splash_attention(q_BTNH, k_BTKH, v_BTKH, scale=scale)
    return xla_attention(q_BTNH, k_BTKH, v_BTKH, scale=scale)


def default_implementation(q_BTNH) -> str:
    """The fastest implementation that accepts these shapes on the default backend."""
    device = jax.devices()[0]
    _, T, _, H = q_BTNH.shape
    if device.platform == "gpu" and "nvidia" in device.device_kind.lower() and cudnn_accepts(q_BTNH):
        return "cudnn"
    if device.platform == "tpu" and T % SPLASH_BLOCK == 0 and H % 128 == 0 and _splash_module():
        return "splash"
    return "xla"


def cudnn_accepts(q_BTNH) -> bool:
    head_dim = q_BTNH.shape[-1]
    return q_BTNH.dtype in (jnp.bfloat16, jnp.float16) and head_dim % 8 == 0 and head_dim <= 128


def xla_attention(q_BTNH, k_BTKH, v_BTKH, *, scale: float):
    """Plain einsums with a causal mask: softmax in float32, matmuls in the input dtype."""
    B, T, N, H = q_BTNH.shape
    K = k_BTKH.shape[2]
    q_BTKGH = q_BTNH.reshape(B, T, K, N // K, H)
    logits_BKGTS = jnp.einsum("btkgh,bskh->bkgts", q_BTKGH * jnp.asarray(scale, q_BTNH.dtype), k_BTKH,
                              preferred_element_type=jnp.float32)
    causal_TS = jnp.tril(jnp.ones((T, T), dtype=bool))
    logits_BKGTS = jnp.where(causal_TS, logits_BKGTS, MASK_VALUE)
    probs_BKGTS = jax.nn.softmax(logits_BKGTS, axis=-1).astype(v_BTKH.dtype)
    out_BTKGH = jnp.einsum("bkgts,bskh->btkgh", probs_BKGTS, v_BTKH)
    return out_BTKGH.reshape(B, T, N, H)


@functools.cache
def _splash_module():
    """The splash kernel module, or None where this JAX no longer ships it."""
    try:
        from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as kernel
        from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as mask
    except ImportError:
        return None
    return kernel, mask


@functools.cache
def _splash_kernel(num_heads: int, seq_len: int, grouped: bool, interpret: bool):
    kernel, mask = _splash_module()
    causal = mask.MultiHeadMask([mask.CausalMask((seq_len, seq_len)) for _ in range(num_heads)])
    block = min(SPLASH_BLOCK, seq_len)
    sizes = kernel.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block,
                              block_q_dkv=block, block_kv_dkv=block, block_kv_dkv_compute=block,
                              block_q_dq=block, block_kv_dq=block)
    make = kernel.make_splash_mqa if grouped else kernel.make_splash_mha
    return make(causal, block_sizes=sizes, head_shards=1, q_seq_shards=1, interpret=interpret)


def splash_attention(q_BTNH, k_BTKH, v_BTKH, *, scale: float, interpret: bool = False):
    """Pallas splash attention (TPU; `interpret=True` runs it, slowly, anywhere)."""
    if _splash_module() is None:
        raise ValueError("this JAX has no Pallas splash-attention kernel: use implementation='xla'")
    B, T, N, H = q_BTNH.shape
    K = k_BTKH.shape[2]
    if K not in (1, N):  # splash takes one shared key head (MQA) or one per query head
        k_BTKH = jnp.repeat(k_BTKH, N // K, axis=2)
        v_BTKH = jnp.repeat(v_BTKH, N // K, axis=2)
        K = N
    grouped = K == 1 and N > 1
    run = _splash_kernel(N, T, grouped, interpret)
    q_BNTH = jnp.swapaxes(q_BTNH * jnp.asarray(scale, q_BTNH.dtype), 1, 2)
    if grouped:
        k_in, v_in = k_BTKH[:, :, 0], v_BTKH[:, :, 0]  # [B, T, H]
    else:
        k_in, v_in = jnp.swapaxes(k_BTKH, 1, 2), jnp.swapaxes(v_BTKH, 1, 2)
    out_BNTH = jax.vmap(run)(q_BNTH, k_in, v_in)
    return jnp.swapaxes(out_BNTH, 1, 2)
