"""Analytic FLOPs per token against hand counts and against XLA's own count."""
import jax
import jax.numpy as jnp
import pytest

from model import flops


def test_dense_is_six_n():
    assert flops.dense_flops_per_token(1_000_000) == 6_000_000


def test_causal_attention_term_by_hand():
    # 2 layers, width 64, T = 4: queries see 1, 2, 3, 4 keys (2.5 on average);
    # per pair 2 matmuls x 2 FLOPs x width forward, x3 with backward.
    assert flops.causal_attention_flops_per_token(2, 64, 4) == 2 * 2.5 * 2 * 2 * 64 * 3


def test_total_adds_both_terms():
    assert flops.transformer_flops_per_token(10, 1, 8, 3) == 60 + 12 * 8 * 2


def test_count_params_excludes_named_subtrees():
    tree = {"embed": jnp.zeros((10, 4)), "blocks": {0: {"w": jnp.zeros((4, 4))}}, "head": jnp.zeros((4, 10))}
    assert flops.count_params(tree) == 40 + 16 + 40
    assert flops.count_params(tree, exclude=["embed"]) == 56
    assert flops.count_params(jax.eval_shape(lambda: tree), exclude=["head", "embed"]) == 16


def test_dense_count_agrees_with_xla_for_a_matmul_chain():
    """Forward + backward of y = x W1 W2 per row of x, as XLA counts it, is 6N."""
    d, rows = 32, 16
    w1, w2, x = jnp.ones((d, 2 * d)), jnp.ones((2 * d, d)), jnp.ones((rows, d))
    loss = lambda ws, x: jnp.sum(x @ ws[0] @ ws[1])
    # The input gradient of the first layer is not needed when x is data: count it out.
    step = jax.jit(jax.value_and_grad(loss))
    counted = step.lower((w1, w2), x).compile().cost_analysis()
    counted = counted[0] if isinstance(counted, list) else counted
    n = w1.size + w2.size
    per_row = counted["flops"] / rows
    assert per_row == pytest.approx(flops.dense_flops_per_token(n) - 2 * w1.size, rel=0.05)
