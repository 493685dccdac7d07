"""FLOPs of one training step, as XLA counts the unpartitioned program, loops unrolled.

XLA's cost analysis counts a loop body once, whatever its trip count, so a step that
chunks its loss with `lax.scan` (or hides its model in one) would be under-counted and
could stretch a flops budget. Here every `scan` body is counted `length` times, nested
loops included: for a program J with loops s,
    flops(J) = xla(J) + sum_s (length_s * flops(body_s) - xla(body_s)).
Attention is traced with its XLA implementation, so fused kernels (cuDNN, Pallas), which
XLA cannot see into, count the same on every backend. What still cannot be counted (a
`while_loop` of unknown trip count, an opaque kernel) is named in `uncounted`.
"""
from __future__ import annotations

import dataclasses

import jax
from jax.extend import core as jex

from model import attention

LOOP_PRIMITIVES = ("scan",)
UNKNOWN_TRIP_PRIMITIVES = ("while",)
OPAQUE_PRIMITIVES = ("pallas_call", "custom_call", "cudnn_dot_product_attention")


@dataclasses.dataclass(frozen=True)
class FlopCount:
    flops: float | None
    uncounted: tuple[str, ...]  # primitives whose FLOPs are missing from the count


def count_flops(fn, *abstract_args, xla_flops) -> FlopCount:
    """`xla_flops(lowered) -> float | None` is the backend's cost analysis of a lowered program."""
    with attention.reference_implementation():
        closed = jax.make_jaxpr(fn)(*abstract_args)
    once = _xla(closed, xla_flops)
    if once is None:  # no cost analysis on this backend
        return FlopCount(None, ())
    uncounted: list[str] = []
    flops = _unrolled(closed, once, xla_flops, uncounted)
    return FlopCount(flops, tuple(sorted(set(uncounted))))


def _unrolled(closed, once: float, xla_flops, uncounted: list[str]) -> float:
    """FLOPs of `closed` with every loop unrolled, given XLA's count `once` of it as written."""
    total = once
    for eqn in _nested_eqns(closed.jaxpr):
        name = eqn.primitive.name
        if name in LOOP_PRIMITIVES:
            body = eqn.params["jaxpr"]
            body_once = _xla(body, xla_flops) or 0.0
            total += eqn.params["length"] * _unrolled(body, body_once, xla_flops, uncounted) - body_once
        elif name in UNKNOWN_TRIP_PRIMITIVES or name in OPAQUE_PRIMITIVES:
            uncounted.append(name)
    return total


def _nested_eqns(jaxpr):
    """Equations of a jaxpr and of the jaxprs inside its calls, but not inside its loops."""
    for eqn in jaxpr.eqns:
        yield eqn
        if eqn.primitive.name in LOOP_PRIMITIVES + UNKNOWN_TRIP_PRIMITIVES:
            continue
        for sub in jex.jaxprs_in_params(eqn.params):
            yield from _nested_eqns(getattr(sub, "jaxpr", sub))


def _xla(closed, xla_flops) -> float | None:
    if not isinstance(closed, jex.ClosedJaxpr):
        closed = jex.ClosedJaxpr(closed, ())
    args = [jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype) for v in closed.jaxpr.invars]
    if not closed.jaxpr.eqns:
        return 0.0
    return xla_flops(jax.jit(jex.jaxpr_as_fun(closed)).lower(*args))
