"""Causal self-attention, dispatched per backend with the same numerics.

    cudnn   NVIDIA GPUs, bf16/fp16: cuDNN flash attention via jax.nn.dot_product_attention
    splash  TPUs: the Pallas splash-attention kernel (block-sparse causal flash attention)
    xla     everywhere else, and the fallback when a kernel cannot take the shapes

Arrays are `[batch, time, heads, head_dim]`; keys and values may have fewer heads
than queries (grouped-query attention) as long as they divide the query heads.
`window=W` limits each query to itself and the W - 1 keys before it (sliding window):
a model trained on length W then sees no longer distances when evaluated on longer text.
"""
from __future__ import annotations

import contextlib
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

IMPLEMENTATIONS = ("xla", "cudnn", "splash")
# Splash tiles the sequence in blocks of this many positions on both axes.
SPLASH_BLOCK = 128
# A large finite negative, not -inf: a fully masked row must not turn into NaN.
MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


def causal_attention(q_BTNH, k_BTKH, v_BTKH, *, implementation: str | None = None,
                     scale: float | None = None, window: int | None = None):
    """softmax(q k^T * scale, causal [, sliding window]) v, by the best kernel for this backend."""
    scale = 1.0 / math.sqrt(q_BTNH.shape[-1]) if scale is None else scale
    if window is not None and window >= q_BTNH.shape[1]:
        window = None  # the window covers the whole sequence: plain causal, cheapest everywhere
    implementation = implementation or default_implementation(q_BTNH)
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"attention implementation {implementation!r}: choose one of {IMPLEMENTATIONS}")
    if implementation == "cudnn":
        local = None if window is None else (window - 1, 0)
        return jax.nn.dot_product_attention(q_BTNH, k_BTKH, v_BTKH, scale=scale, is_causal=True,
                                            local_window_size=local, implementation="cudnn")
    if implementation == "splash":
        return splash_attention(q_BTNH, k_BTKH, v_BTKH, scale=scale, window=window)
    return xla_attention(q_BTNH, k_BTKH, v_BTKH, scale=scale, window=window)


_reference_only = False
_target: tuple[str, int] | None = None  # (platform, device count) the programs are lowered for


def set_target(platform: str, num_devices: int) -> None:
    """Choose kernels for `platform` ("cpu", "gpu", "tpu") over `num_devices` devices rather
    than for this process's devices: the engine's tracer lowers TPU programs on a CPU."""
    global _target
    _target = (platform, int(num_devices))


def _platform_and_kind() -> tuple[str, str]:
    if _target is not None:
        kind = "nvidia" if _target[0] == "gpu" else _target[0]
        return _target[0], kind
    device = jax.devices()[0]
    return device.platform, device.device_kind.lower()


@contextlib.contextmanager
def reference_implementation():
    """Within it, attention traces as plain XLA on every backend: the engine counts FLOPs
    this way, since XLA sees no FLOPs inside fused kernels."""
    global _reference_only
    before, _reference_only = _reference_only, True
    try:
        yield
    finally:
        _reference_only = before


def default_implementation(q_BTNH) -> str:
    """The fastest implementation that accepts these shapes on the default backend."""
    if _reference_only:
        return "xla"
    platform, kind = _platform_and_kind()
    _, T, _, H = q_BTNH.shape
    if platform == "gpu" and "nvidia" in kind and cudnn_accepts(q_BTNH):
        return "cudnn"
    if platform == "tpu" and T % SPLASH_BLOCK == 0 and H % 128 == 0 and _splash_module():
        return "splash"
    return "xla"


def cudnn_accepts(q_BTNH) -> bool:
    head_dim = q_BTNH.shape[-1]
    return q_BTNH.dtype in (jnp.bfloat16, jnp.float16) and head_dim % 8 == 0 and head_dim <= 128


def visible_TS(seq_len: int, window: int | None):
    """mask[t, s]: may query t attend key s."""
    t, s = jnp.arange(seq_len)[:, None], jnp.arange(seq_len)[None, :]
    return (s <= t) if window is None else (s <= t) & (s > t - window)


def xla_attention(q_BTNH, k_BTKH, v_BTKH, *, scale: float, window: int | None = None):
    """Plain batched matmuls with a mask: softmax in float32, matmuls in the input dtype."""
    B, T, N, H = q_BTNH.shape
    K = k_BTKH.shape[2]
    if K != N:  # grouped heads: share each key/value head among N // K query heads
        k_BTKH, v_BTKH = jnp.repeat(k_BTKH, N // K, axis=2), jnp.repeat(v_BTKH, N // K, axis=2)
    # heads-major layout: each einsum is a batched GEMM with one contracting axis (fast on CPU)
    q_BNTH, k_BNSH, v_BNSH = (jnp.swapaxes(a, 1, 2) for a in (q_BTNH, k_BTKH, v_BTKH))
    # the mask is added, not selected: its gradient is then the identity, one pass fewer on CPU
    bias_TS = jnp.where(visible_TS(T, window), 0.0, MASK_VALUE).astype(jnp.float32)
    logits_BNTS = jnp.einsum("bnth,bnsh->bnts", q_BNTH * jnp.asarray(scale, q_BTNH.dtype), k_BNSH,
                             preferred_element_type=jnp.float32) + bias_TS
    probs_BNTS = jax.nn.softmax(logits_BNTS, axis=-1).astype(v_BNSH.dtype)
    return jnp.swapaxes(jnp.einsum("bnts,bnsh->bnth", probs_BNTS, v_BNSH), 1, 2)


@functools.cache
def _splash_module():
    """The splash kernel module, or None where this JAX no longer ships it."""
    try:
        from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as kernel
        from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as mask
    except ImportError:
        return None
    return kernel, mask


def _splash_kernel(num_heads: int, seq_len: int, window: int | None, grouped: bool, interpret: bool):
    # built anew for each trace: a kernel object reused by a second top-level trace carries the
    # first trace's mask arrays, and jax.export then fails ("Too many leaves for PyTreeDef")
    kernel, mask = _splash_module()
    shape = (seq_len, seq_len)
    one = mask.CausalMask(shape) if window is None else mask.LocalMask(shape, (window - 1, 0), offset=0)
    causal = mask.MultiHeadMask([one for _ in range(num_heads)])
    block = min(SPLASH_BLOCK, seq_len)
    sizes = kernel.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block,
                              block_q_dkv=block, block_kv_dkv=block, block_kv_dkv_compute=block,
                              block_q_dq=block, block_kv_dq=block)
    make = kernel.make_splash_mqa if grouped else kernel.make_splash_mha
    return make(causal, block_sizes=sizes, head_shards=1, q_seq_shards=1, interpret=interpret)


def splash_attention(q_BTNH, k_BTKH, v_BTKH, *, scale: float, window: int | None = None,
                     interpret: bool = False):
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
    run = _splash_kernel(N, T, window, grouped, interpret)
    q_BNTH = jnp.swapaxes(q_BTNH * jnp.asarray(scale, q_BTNH.dtype), 1, 2)
    if grouped:
        k_in, v_in = k_BTKH[:, :, 0], v_BTKH[:, :, 0]  # [B, T, H]
    else:
        k_in, v_in = jnp.swapaxes(k_BTKH, 1, 2), jnp.swapaxes(v_BTKH, 1, 2)
    out_BNTH = _rows_per_device(jax.vmap(run), B)(q_BNTH, k_in, v_in)
    return jnp.swapaxes(out_BNTH, 1, 2)


def _rows_per_device(fn, rows: int):
    """Run fn on each device's rows. A Pallas kernel has no rule for splitting its work
    across devices: under a data-parallel jit, XLA would gather the whole batch onto every
    device. This maps it over the engine's mesh layout: one "data" axis of all devices."""
    count = _target[1] if _target is not None else len(jax.devices())
    if count == 1 or rows % count:
        return fn
    from jax.sharding import AbstractMesh, Mesh, PartitionSpec

    mesh = (AbstractMesh((count,), ("data",)) if _target is not None
            else Mesh(np.asarray(jax.devices()), ("data",)))
    rows_spec = PartitionSpec("data")
    return jax.shard_map(fn, mesh=mesh, in_specs=rows_spec, out_specs=rows_spec, check_vma=False)
