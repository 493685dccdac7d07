"""Step FLOPs: loop bodies count once per iteration, what cannot be counted is named."""
import types

import jax
import jax.numpy as jnp
import pytest

from engine.training import trainer
from engine.training.compile import lowered_flops
from engine.errors import UserError
from engine.training.contract import Budget
from engine.training.flop_count import count_flops
from model import attention

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


def count(fn, *args):
    return count_flops(fn, *args, xla_flops=lowered_flops)


@pytest.mark.parametrize("fn", [scanned, nested, fori, jax.jit(scanned)], ids=["scan", "nested", "fori", "jit"])
def test_loops_count_like_their_unrolled_program(fn):
    expected = count(unrolled, x, x)
    assert expected.flops == pytest.approx(8 * MATMUL, rel=0.01)
    assert count(fn, x, x).flops == pytest.approx(expected.flops, rel=0.01)
    assert count(fn, x, x).uncounted == ()


def test_gradients_through_a_scan_are_counted_per_iteration():
    grad_scanned = lambda a, w: jax.grad(lambda w: scanned(a, w).sum())(w)
    grad_unrolled = lambda a, w: jax.grad(lambda w: unrolled(a, w).sum())(w)
    # 8 forward matmuls, then per iteration one for dw and one for dc: the scan's backward
    # body computes dc of the first iteration too, which the unrolled program prunes.
    assert count(grad_scanned, x, x).flops == pytest.approx(24 * MATMUL, rel=0.02)
    assert count(grad_unrolled, x, x).flops == pytest.approx(22 * MATMUL, rel=0.02)


def test_a_loop_of_unknown_length_is_named_not_hidden():
    def data_dependent(a, w):
        return jax.lax.while_loop(lambda c: c[0, 0] < 1e6, lambda c: c @ w, a)
    assert count(data_dependent, x, x).uncounted == ("while",)


def test_a_flops_budget_refuses_a_step_it_cannot_count():
    compiled = types.SimpleNamespace(flops_uncounted=("while",))
    with pytest.raises(UserError, match="while.*cannot count"):
        trainer.check_flops_countable(compiled, Budget("flops", 1e12))
    trainer.check_flops_countable(compiled, Budget("time", 10))  # only a note on stderr


def test_flops_are_counted_on_the_xla_attention_everywhere():
    q = jnp.zeros((1, 256, 2, 128), jnp.bfloat16)
    with attention.reference_implementation():
        assert attention.default_implementation(q) == "xla"
