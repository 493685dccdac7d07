"""The causality probe on small hand-made models: causal ones pass, leaky ones are named."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from engine.scoring import probe

VOCAB, B, T = 23, 8, 16
TABLE = jax.random.normal(jax.random.key(0), (VOCAB, VOCAB))


def inputs(seed: int = 0, rows: int = B, length: int = T) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB, (rows, length)).astype(np.int32)


def as_model(fn):
    jitted = jax.jit(fn)
    return lambda x: jitted(jnp.asarray(x))


def bigram(x):
    return TABLE[x]


def causal_average(x):
    """Each position sees the running mean of its own row's embeddings: causal, cross-position."""
    e = TABLE[x]
    return jnp.cumsum(e, axis=1) / jnp.arange(1, x.shape[1] + 1)[None, :, None]


def peeks_ahead(x):
    return TABLE[x] + 0.5 * TABLE[jnp.roll(x, -1, axis=1)]  # position t sees t + 1


def peeks_far_ahead_at_one_position(x):
    return TABLE[x].at[:, 5].add(TABLE[x[:, 11]])  # only position 5, only token 11


def sees_next_row(x):
    return TABLE[x] + 0.1 * TABLE[jnp.roll(x, -1, axis=0)]  # row i sees row i + 1 (the following text)


def batch_statistics(x):
    e = TABLE[x]
    return e - e.mean(axis=0, keepdims=True)  # batch norm at evaluation time


def one_pair_of_rows(x):
    return TABLE[x].at[5].add(TABLE[x[2]])  # only row 5 reads row 2


@pytest.mark.parametrize("model", [bigram, causal_average])
def test_causal_models_pass(model):
    result = probe.check(as_model(model), inputs(), VOCAB)
    assert result.ok and result.reason is None
    assert result.passes >= probe.MIN_PASSES + 1


@pytest.mark.parametrize("model, position", [(peeks_ahead, None), (peeks_far_ahead_at_one_position, 5)])
def test_seeing_later_tokens_is_named_with_its_position(model, position):
    result = probe.check(as_model(model), inputs(), VOCAB)
    assert not result.ok
    assert "changed when later tokens changed: it sees the future" in result.reason
    if position is not None:
        assert f"prediction at position {position} " in result.reason


@pytest.mark.parametrize("model", [sees_next_row, batch_statistics, one_pair_of_rows])
def test_mixing_rows_is_named(model):
    result = probe.check(as_model(model), inputs(), VOCAB)
    assert not result.ok
    assert "changed when other rows of the batch changed" in result.reason


def test_tiny_leaks_below_tolerance_pass_and_above_fail():
    def leak(scale):
        return lambda x: TABLE[x] + scale * TABLE[jnp.roll(x, -1, axis=1)]
    assert probe.check(as_model(leak(1e-7)), inputs(), VOCAB).ok
    assert not probe.check(as_model(leak(1e-2)), inputs(), VOCAB).ok


def test_non_finite_logits_are_refused():
    result = probe.check(as_model(lambda x: TABLE[x] / 0.0), inputs(), VOCAB)
    assert not result.ok and "NaN or infinity" in result.reason


def test_row_codes_separate_every_ordered_pair_of_rows():
    for rows in (2, 3, 8, 16, 64):
        codes = probe.row_codes(rows)
        assert len(set(codes)) == rows
        for i, j in itertools.permutations(range(rows), 2):
            assert codes[j] - codes[i], (rows, i, j)  # a pass replaces j and keeps i


def test_single_row_and_short_rows():
    assert probe.check(as_model(bigram), inputs(rows=1), VOCAB).ok
    assert not probe.check(as_model(peeks_ahead), inputs(rows=1), VOCAB).ok
    assert probe.cut_points(1) == [] and probe.cut_points(2) == [0]
    assert probe.check(as_model(bigram), inputs(length=1), VOCAB).ok


def test_passes_stay_few():
    """Each pass is one forward call of the exported program: the probe's whole cost."""
    calls = []
    model = as_model(bigram)
    probe.check(lambda x: calls.append(1) or model(x), inputs(rows=16), VOCAB)
    assert len(calls) == 7  # the batch itself and 6 changed copies
