"""The fixed metric against an independent NumPy computation and a closed form."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from engine.scoring import metric
from engine.errors import UserError

VOCAB, SEQ_LEN, BOS = 37, 16, 1


def token_stream(length: int, seed: int = 0) -> np.ndarray:
    """Documents of random ids behind BOS, like a prepared split (specials 0..2)."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(3, VOCAB, length).astype(np.uint16)
    tokens[rng.random(length) < 0.05] = BOS
    tokens[0] = BOS
    return tokens


def byte_table(seed: int = 0) -> np.ndarray:
    table = np.random.default_rng(seed).integers(1, 5, VOCAB).astype(np.int32)
    table[:3] = 0  # specials stand for no bytes
    return table


def bigram_logits(table_VxV, inputs_BxL):
    return table_VxV[inputs_BxL]


STEP = jax.jit(metric.make_scoring_step(bigram_logits))


def numpy_bpb(table_VxV, tokens, token_bytes, eval_tokens):
    """Straight over the flat stream: target j+1 given token j, for the first eval_tokens targets."""
    n = (eval_tokens // SEQ_LEN) * SEQ_LEN
    inputs, targets = tokens[:n].astype(np.int64), tokens[1:n + 1].astype(np.int64)
    logits = np.asarray(table_VxV, np.float64)[inputs]
    logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
        - logits.max(-1, keepdims=True)
    nats = -logp[np.arange(n), targets]
    nbytes = token_bytes[targets]
    return nats[nbytes > 0].sum() / (math.log(2) * nbytes.sum())


def test_rows_overlap_by_one_token_and_cover_eval_tokens():
    tokens = np.arange(100)
    rows = metric.eval_rows(tokens, eval_tokens=40, sequence_length=8)
    assert rows.shape == (5, 9) and rows.dtype == np.int32
    assert rows[1, 0] == rows[0, -1] == 8
    targets = rows[:, 1:].ravel()
    assert np.array_equal(targets, np.arange(1, 41))


def test_split_too_short_is_a_user_error():
    with pytest.raises(UserError, match="needs 41"):
        metric.eval_rows(np.arange(40), eval_tokens=40, sequence_length=8)


@pytest.mark.parametrize("batch_size", [4, 5])  # 5 does not divide 12 rows: padding must score nothing
def test_matches_independent_numpy(batch_size):
    tokens, token_bytes = token_stream(400), byte_table()
    table = jax.random.normal(jax.random.key(1), (VOCAB, VOCAB))
    got = metric.evaluate_bpb(STEP, table, tokens, token_bytes, eval_tokens=192,
                              sequence_length=SEQ_LEN, batch_size=batch_size, pad_id=BOS)
    assert got.tokens == 192
    assert got.bytes == int(token_bytes[tokens[1:193].astype(int)].sum())
    assert got.bpb == pytest.approx(numpy_bpb(table, tokens, token_bytes, 192), rel=1e-5)


def test_uniform_model_has_closed_form_bpb():
    """Every target is ln V nats; with 2 bytes per ordinary token, bpb = log2(V) / 2."""
    tokens = token_stream(300, seed=3)
    token_bytes = np.where(np.arange(VOCAB) < 3, 0, 2).astype(np.int32)
    zeros = jnp.zeros((VOCAB, VOCAB))
    got = metric.evaluate_bpb(STEP, zeros, tokens, token_bytes, eval_tokens=256,
                              sequence_length=SEQ_LEN, batch_size=8, pad_id=BOS)
    assert got.bpb == pytest.approx(math.log2(VOCAB) / 2, rel=1e-6)


def test_special_targets_count_zero_in_both_sums():
    """Making the model terrible at predicting BOS must not move bpb."""
    tokens, token_bytes = token_stream(400, seed=5), byte_table(5)
    table = jax.random.normal(jax.random.key(2), (VOCAB, VOCAB))
    hates_bos = table.at[:, BOS].set(-50.0)
    kwargs = dict(eval_tokens=192, sequence_length=SEQ_LEN, batch_size=6, pad_id=BOS)
    a = metric.evaluate_bpb(STEP, table, tokens, token_bytes, **kwargs)
    b = metric.evaluate_bpb(STEP, hates_bos, tokens, token_bytes, **kwargs)
    assert a.bytes == b.bytes
    # Only the softmax normaliser moves (BOS's mass shrinks); that shifts non-BOS nats a little.
    assert abs(a.bpb - b.bpb) < 0.2
    assert b.bpb == pytest.approx(numpy_bpb(hates_bos, tokens, token_bytes, 192), rel=1e-5)


def test_compiled_step_is_used_as_given():
    tokens, token_bytes = token_stream(400), byte_table()
    table = jax.random.normal(jax.random.key(1), (VOCAB, VOCAB))
    calls = []

    def counting_step(*args):
        calls.append(args[1].shape)
        return STEP(*args)

    got = metric.evaluate_bpb(counting_step, table, tokens, token_bytes, eval_tokens=192,
                              sequence_length=SEQ_LEN, batch_size=4, pad_id=BOS)
    assert calls == [(4, SEQ_LEN + 1)] * 3
    assert got.bpb == pytest.approx(numpy_bpb(table, tokens, token_bytes, 192), rel=1e-5)


def test_loss_is_the_engines_whatever_scale_the_logits_come_in():
    """A model's logits scaled by a temperature are a different model: the engine's
    log-softmax scores exactly that model, never a loss train.py chose."""
    tokens, token_bytes = token_stream(400), byte_table()
    table = jax.random.normal(jax.random.key(1), (VOCAB, VOCAB))
    kwargs = dict(eval_tokens=192, sequence_length=SEQ_LEN, batch_size=4, pad_id=BOS)
    sharp = metric.evaluate_bpb(STEP, 3.0 * table, tokens, token_bytes, **kwargs)
    assert sharp.bpb == pytest.approx(numpy_bpb(3.0 * table, tokens, token_bytes, 192), rel=1e-5)
    shifted = metric.evaluate_bpb(STEP, table + 7.0, tokens, token_bytes, **kwargs)  # softmax-invariant
    plain = metric.evaluate_bpb(STEP, table, tokens, token_bytes, **kwargs)
    assert shifted.bpb == pytest.approx(plain.bpb, rel=1e-5)


def test_non_finite_logits_give_a_non_finite_score():
    tokens, token_bytes = token_stream(400), byte_table()
    table = jnp.full((VOCAB, VOCAB), jnp.nan)
    got = metric.evaluate_bpb(STEP, table, tokens, token_bytes, eval_tokens=192,
                              sequence_length=SEQ_LEN, batch_size=4, pad_id=BOS)
    assert not math.isfinite(got.bpb)
