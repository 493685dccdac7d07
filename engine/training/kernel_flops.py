"""FLOPs of the engine's attention kernels, counted as the plain XLA attention they replace.

XLA sees no FLOPs inside a fused kernel (Pallas splash on TPU, cuDNN on GPU). So that a
step counts the same on every backend (a flops budget means the same work everywhere),
each kernel call is counted as `model.attention.xla_attention` at the same shapes counts
(engine/training/stablehlo.py's count of that program): the forward kernel as its
forward, the backward kernels together as its backward (dq a quarter, dkv the rest).

A kernel is recognized by its custom-call target and, for Pallas, its kernel name; an
agent's own Pallas kernel under one of these names would be counted as attention at its
operand shapes (docs/guards.md).
"""
from __future__ import annotations

import functools
import re

from engine.training import stablehlo

_SPLASH_NAME = re.compile(r"splash_(mha|mqa)_(fwd|dq|dkv)")
DQ_SHARE = 0.25  # of the backward: dq is one of its four matmuls


def splash_flops(call: stablehlo.KernelCall) -> float | None:
    """tpu_custom_call of splash: q is the first float operand, [B, N, T, H] or (one row per
    device, no batch axis) [N, T, H]."""
    match = _SPLASH_NAME.search(call.config)
    if not match:
        return None
    q = next((shape for shape, kind in zip(call.operands, call.operand_types)
              if len(shape) in (3, 4) and re.search(r"x(bf16|f16|f32)>", kind)), None)
    if q is None:
        return None
    B, N, T, H = q if len(q) == 4 else (1, *q)
    dtype = _dtype_of(call, q)
    forward, backward = reference_flops(B, T, N, 1 if match.group(1) == "mqa" else N, H, dtype)
    return {"fwd": forward, "dq": DQ_SHARE * backward, "dkv": (1 - DQ_SHARE) * backward}[match.group(2)]


def cudnn_flops(call: stablehlo.KernelCall) -> float | None:
    """__cudnn$fmha* calls: q, k, v are operands [B, T, N, H] and [B, T, K, H]."""
    if len(call.operands) < 3 or any(len(shape) != 4 for shape in call.operands[:3]):
        return None
    (B, T, N, H), (_, _, K, _) = call.operands[0], call.operands[1]
    forward, backward = reference_flops(B, T, N, K, H, _dtype_of(call, call.operands[0]))
    return backward if "Backward" in call.target else forward


@functools.cache
def reference_flops(B: int, T: int, N: int, K: int, H: int, dtype: str) -> tuple[float, float]:
    """(forward, backward) FLOPs of causal XLA attention on q [B, T, N, H], k and v [B, T, K, H]."""
    import jax
    import jax.numpy as jnp

    from model import attention

    q = jax.ShapeDtypeStruct((B, T, N, H), jnp.dtype(dtype))
    kv = jax.ShapeDtypeStruct((B, T, K, H), jnp.dtype(dtype))
    scale = H ** -0.5
    forward_fn = lambda q, k, v: attention.xla_attention(q, k, v, scale=scale)

    def both(q, k, v, d):
        out, pullback = jax.vjp(forward_fn, q, k, v)
        return out, pullback(d)

    count = lambda fn, *args: stablehlo.read(
        jax.export.export(jax.jit(fn), platforms=["cpu"])(*args).mlir_module()).flops
    forward = count(forward_fn, q, kv, kv)
    return forward, count(both, q, kv, kv, q) - forward


def _dtype_of(call: stablehlo.KernelCall, shape: tuple) -> str:
    text = call.operand_types[call.operands.index(shape)]
    kind = re.search(r"x([a-z]+\d*)>", text)
    return {"bf16": "bfloat16", "f16": "float16", "f32": "float32"}.get(kind.group(1) if kind else "", "float32")


# custom-call target -> (KernelCall) -> FLOPs, or None when the call is not one the formula knows
FORMULAS = {
    "tpu_custom_call": splash_flops,
    **{target: cudnn_flops for target in (
        "__cudnn$fmhaSoftmax", "__cudnn$fmhaSoftmaxBackward", "__cudnn$fmhaScaleMaskSoftmax",
        "__cudnn$fmhaScaleMaskSoftmaxBackward", "__cudnn$fmhaScaleBiasSoftmax",
        "__cudnn$fmhaScaleBiasSoftmaxBackward", "__cudnn$fmhaSoftmaxDropout", "__cudnn$fmhaSoftmaxDropoutBackward")},
}
