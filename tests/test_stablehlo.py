"""engine/training/stablehlo.py: FLOPs, constants and custom calls read from exported programs."""
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from engine.errors import UserError
from engine.training import stablehlo, trainer
from engine.training.contract import Budget

N = 64
MATMUL = 2 * N ** 3
x = jax.ShapeDtypeStruct((N, N), jnp.float32)


def unrolled(a, w):
    for _ in range(8):
        a = a @ w
    return a


def scanned(a, w):
    return jax.lax.scan(lambda c, _: (c @ w, None), a, None, length=8)[0]


def nested(a, w):
    inner = lambda c, _: (jax.lax.scan(lambda c2, _: (c2 @ w, None), c, None, length=4)[0], None)
    return jax.lax.scan(inner, a, None, length=2)[0]


def fori(a, w):
    return jax.lax.fori_loop(0, 8, lambda i, c: c @ w, a)


def facts(fn, *args):
    return stablehlo.read(jax.export.export(jax.jit(fn))(*args).mlir_module())


def test_a_program_without_loops_counts_as_xla_does():
    lowered = jax.jit(unrolled).lower(x, x)
    assert facts(unrolled, x, x).flops == lowered.cost_analysis()["flops"]


@pytest.mark.parametrize("fn", [scanned, nested, fori], ids=["scan", "nested", "fori"])
def test_loops_count_like_their_unrolled_program(fn):
    counted = facts(fn, x, x)
    assert counted.flops == pytest.approx(8 * MATMUL, rel=0.01)
    assert counted.uncounted == ()


def test_gradients_through_a_scan_are_counted_per_iteration():
    grad_scanned = lambda a, w: jax.grad(lambda w: scanned(a, w).sum())(w)
    # 8 forward matmuls, then per iteration one for dw and one for dc
    assert facts(grad_scanned, x, x).flops == pytest.approx(24 * MATMUL, rel=0.02)


def test_a_loop_of_unknown_length_is_named_not_hidden():
    def data_dependent(a, w):
        return jax.lax.while_loop(lambda c: c[0, 0] < 1e6, lambda c: c @ w, a)
    assert facts(data_dependent, x, x).uncounted == ("while (trip count unknown)",)


def test_a_lapack_call_is_uncounted_not_free():
    """XLA counts jnp.linalg.svd (a LAPACK custom call) as about zero FLOPs."""
    counted = facts(lambda a: jnp.linalg.svd(a)[0], x)
    assert any(name.startswith("lapack_") for name in counted.uncounted)
    assert counted.custom_calls == counted.uncounted


def test_constants_baked_into_a_program_are_measured():
    table = np.arange(N * N, dtype=np.float32).reshape(N, N)
    assert facts(lambda a: a + table, x).constant_bytes == N * N * 4
    assert facts(lambda a: a + 1.0, x).constant_bytes == 4  # a scalar carries one value


def test_every_constant_counts_at_its_types_real_width():
    """Splats and scalars count one element; complex elements count both parts; i1 one bit."""
    complex_table = (np.arange(N * N) + 1j).astype(np.complex64).reshape(N, N)
    assert facts(lambda a: (a.astype(jnp.complex64) * complex_table).real, x).constant_bytes == N * N * 8
    flags = np.arange(N * N).reshape(N, N) % 3 == 0
    assert facts(lambda a: jnp.where(flags, a, 0.0), x).constant_bytes == N * N // 8 + 4  # bits, then 0.0
    many_scalars = facts(lambda a: sum(a * float(i) for i in range(2, 200)), x).constant_bytes
    assert many_scalars >= 198 * 4  # data spelled out as scalars is data too


def test_element_widths():
    widths = {"f32": 32, "bf16": 16, "f16": 16, "f64": 64, "f8E4M3FN": 8, "f4E2M1FN": 4, "i1": 1, "i4": 4,
              "ui8": 8, "si32": 32, "i64": 64, "complex<f32>": 64, "complex<f64>": 128, "index": 64}
    assert {t: stablehlo.element_bits(t) for t in widths} == widths


def test_a_flops_budget_refuses_a_step_it_cannot_count():
    compiled = types.SimpleNamespace(flops_uncounted=("lapack_sgesdd_ffi",))
    with pytest.raises(UserError, match="lapack_sgesdd_ffi.*cannot count"):
        trainer.check_flops_countable(compiled, Budget("flops", 1e12))
    trainer.check_flops_countable(compiled, Budget("time", 10))  # only a note on stderr


def test_a_shard_map_body_counts_once_per_device():
    """A shard_map body is written at one device's shapes: counted at them, it would be 1/devices."""
    from jax.sharding import AbstractMesh, PartitionSpec as P

    mesh = AbstractMesh((4,), ("data",))
    body = lambda a, w: a @ w
    mapped = jax.shard_map(body, mesh=mesh, in_specs=(P("data"), P()), out_specs=P("data"))
    rows = jax.ShapeDtypeStruct((4 * N, N), jnp.float32)
    assert facts(mapped, rows, x).flops == pytest.approx(4 * MATMUL, rel=0.01)


def test_a_loop_whose_condition_is_not_its_counter_is_not_counted_by_the_counter():
    """A condition with a counted compare in it (i < 2) that returns something else ((i < 2) | (j < n))
    runs n times, not 2: counted as 2 trips, a flops budget would let n - 2 iterations run free."""
    def hidden(a, w):
        def body(carry):
            i, j, c = carry
            return i + 1, j + 1, c @ w
        cond = lambda carry: (carry[0] < 2) | (carry[1] < 8)
        return jax.lax.while_loop(cond, body, (0, 0, a))[2]
    counted = facts(hidden, x, x)
    assert counted.uncounted == ("while (trip count unknown)",)


def test_a_loop_counting_past_its_limit_is_not_counted_as_empty():
    """`not (i < 10)` from i = 20 runs until i wraps around (about 32k iterations in int16), not 0."""
    def wraps(a, w):
        cond = lambda carry: ~(carry[0] < jnp.int16(10))
        body = lambda carry: (carry[0] + jnp.int16(1), carry[1] @ w)
        return jax.lax.while_loop(cond, body, (jnp.int16(20), a))[1]
    assert facts(wraps, x, x).uncounted == ("while (trip count unknown)",)

