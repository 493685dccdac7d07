"""The causality probe on small hand-made models: causal ones pass, leaky ones are named."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from engine.scoring import probe

VOCAB, B, T, BATCHES = 23, 8, 16, 5
TABLE = jax.random.normal(jax.random.key(0), (VOCAB, VOCAB))
OLD_CUTS = (0, T // 4, T // 2, 3 * T // 4, T - 2)  # the fixed cut points of the probe before this one


def layout(seed: int = 0, rows: int = B, length: int = T, batches: int = BATCHES) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB, (rows * batches, length)).astype(np.int32)


def check(fn, rows: int = B, length: int = T, seed: int = 1, batches: int = BATCHES):
    jitted = jax.jit(fn)
    return probe.check(lambda x: jitted(jnp.asarray(x)), layout(rows=rows, length=length, batches=batches),
                       rows, VOCAB, seed)


def bigram(x):
    return TABLE[x]


def causal_average(x):
    """Each position sees the running mean of its own row's embeddings: causal, cross-position."""
    e = TABLE[x]
    return jnp.cumsum(e, axis=1) / jnp.arange(1, x.shape[1] + 1)[None, :, None]


def large_logits(x):
    return 1e4 * TABLE[x] + 1e6  # float32 steps of 0.06 nats: identical inputs still give identical outputs


def next_token(x):
    return jnp.roll(x, -1, axis=1)  # position t's next input token (the last wraps to the first)


def peeks_ahead(x):
    return TABLE[x] + 0.5 * TABLE[next_token(x)]


def peeks_ahead_at(position):
    """Only one position reads the next token: any position but the last."""
    return lambda x: TABLE[x].at[:, position].add(TABLE[x[:, position + 1]])


def last_position_reads_next_row(x):
    first_of_next_row = jnp.roll(x, -1, axis=0)[:, 0]  # in the metric: the last position's target
    return TABLE[x].at[:, -1].add(3 * jax.nn.one_hot(first_of_next_row, VOCAB))


def peeks_ahead_hidden_by_a_huge_position(x):
    """The old probe's tolerance was relative to the largest logit: 1e6 at one position made it 100."""
    return (TABLE[x] + 3 * jax.nn.one_hot(next_token(x), VOCAB)).at[:, 3].add(1e6)


def wrong_way_shift_gated_off_at_old_cuts(x):
    """A token shift the wrong way, switched off where the old probe looked."""
    gate = jnp.ones(x.shape[1]).at[jnp.array(OLD_CUTS)].set(0.0)
    return TABLE[x] + gate[None, :, None] * 3 * jax.nn.one_hot(next_token(x), VOCAB)


def sees_next_row(x):
    return TABLE[x] + 0.1 * TABLE[jnp.roll(x, -1, axis=0)]  # row i sees row i + 1 (the following text)


def batch_statistics(x):
    e = TABLE[x]
    return e - e.mean(axis=0, keepdims=True)  # batch norm at evaluation time


def one_pair_of_rows(x):
    return TABLE[x].at[5].add(TABLE[x[2]])  # only row 5 reads row 2


@pytest.mark.parametrize("model", [bigram, causal_average, large_logits])
def test_causal_models_pass(model):
    result = check(model)
    assert result.ok and result.reason is None and result.seed == 1
    assert result.passes == probe.passes_needed(B, T, BATCHES)


def test_a_leak_at_any_one_position_is_named_with_its_position():
    for position in np.random.default_rng().permutation(T - 1)[:4].tolist() + [0, T - 2]:
        result = check(peeks_ahead_at(position), seed=position)
        assert not result.ok, position
        assert f"prediction at position {position} changed when later tokens changed: it sees the future" \
            in result.reason
        assert f"the tokens after position {position} of that row changed" in result.reason


def test_the_last_position_reading_the_next_rows_first_token_is_named():
    result = check(last_position_reads_next_row)
    assert not result.ok
    assert "changed when other rows of the batch changed" in result.reason
    assert f"position {T - 1} of row " in result.reason
    row = int(result.reason.split(f"position {T - 1} of row ")[1].split()[0])
    assert f"all of row {(row + 1) % B}'s tokens changed, its own tokens did not" in result.reason


@pytest.mark.parametrize("model", [peeks_ahead, peeks_ahead_hidden_by_a_huge_position,
                                   wrong_way_shift_gated_off_at_old_cuts])
def test_seeing_later_tokens_is_refused_whatever_hides_it(model):
    result = check(model)
    assert not result.ok
    assert "changed when later tokens changed: it sees the future" in result.reason


@pytest.mark.parametrize("model", [sees_next_row, batch_statistics, one_pair_of_rows])
def test_mixing_rows_is_named(model):
    result = check(model)
    assert not result.ok
    assert "changed when other rows of the batch changed" in result.reason
    if model is one_pair_of_rows:
        assert "of row 5 of evaluation batch" in result.reason and "row 2's tokens" in result.reason


def shifts_one_logit(nats):
    """At position 7, the logit of the next token's id is raised by `nats`: a leak of one token."""
    return lambda x: TABLE[x].at[:, 7].add(nats * jax.nn.one_hot(x[:, 8], VOCAB))


ALPHABET = 4  # the text's tokens in the next test; the probe's replacements come from all VOCAB


def answers_changed_rows_with_a_huge_constant(x):
    """Reads the next token, and wherever a later token lies outside the text's alphabet (the
    probe's replacements are drawn from the whole vocabulary) answers 1e9 for every logit: in
    float32, 1e9 minus any base logit is 1e9, so the rounded change spreads by 0."""
    outside_later = jnp.flip(jnp.cumsum(jnp.flip(x >= ALPHABET, 1), 1), 1) - (x >= ALPHABET) > 0
    leak = 20.0 * jax.nn.one_hot(next_token(x), VOCAB)
    return jnp.where(outside_later[..., None], 1e9, leak).at[:, -1].set(0.0)



def test_a_huge_constant_answer_to_the_probes_rows_is_caught():
    text = np.random.default_rng(0).integers(0, ALPHABET, (B * BATCHES, T)).astype(np.int32)
    jitted = jax.jit(answers_changed_rows_with_a_huge_constant)
    result = probe.check(lambda x: jitted(jnp.asarray(x)), text, B, VOCAB, seed=1)
    assert not result.ok and "sees the future" in result.reason
    base = jnp.asarray(jitted(jnp.asarray(text[:B])))
    assert float(probe.movement_of(base, jnp.full(base.shape, 1e9))[:, :-1].min()) > 1.0  # all but the last


def test_the_smallest_leak_caught_is_the_tolerance_in_nats():
    assert not check(shifts_one_logit(1.2 * probe.TOLERANCE_NATS)).ok
    assert check(shifts_one_logit(0.5 * probe.TOLERANCE_NATS)).ok


def test_movement_bounds_every_log_probability_change_and_ignores_a_constant_shift():
    base = jax.random.normal(jax.random.key(1), (4, 6, VOCAB)) * 3
    changed = base + jax.random.normal(jax.random.key(2), base.shape) * jnp.array([0.0, 1e-3, 0.1, 2.0])[:, None, None]
    largest = jnp.abs(jax.nn.log_softmax(changed) - jax.nn.log_softmax(base)).max(axis=-1)
    moved = probe.movement_of(base, changed)
    assert bool(jnp.all(largest <= moved + 1e-5)) and bool(jnp.all(moved <= 2 * largest + 1e-5))
    assert float(probe.movement_of(base, base + 7.5).max()) < 1e-5  # the metric cannot see it
    assert float(probe.movement_of(base, base + 500.0).max()) < probe.TOLERANCE_NATS  # still exact enough
    assert float(probe.movement_of(base, base + 2000.0).min()) == pytest.approx(2000.0, rel=1e-3)  # too big to trust
    assert bool(probe._all_finite(base.astype(jnp.float8_e4m3fn)))  # a float type without infinities


@pytest.mark.parametrize("bad", [jnp.nan, jnp.inf, -jnp.inf])
@pytest.mark.parametrize("entry", [0, 4097, 8191])
def test_one_non_finite_logit_anywhere_counts_as_moved_and_as_not_finite(bad, entry):
    """At a real vocabulary's width, compiled, where XLA vectorizes the reduction."""
    base = jax.random.normal(jax.random.key(3), (2, 5, 8192))
    changed = base.at[1, 3, entry].set(bad)
    moved = np.asarray(jax.jit(probe.movement_of)(base, changed))
    assert not moved[1, 3] <= probe.TOLERANCE_NATS  # NaN or infinite: never within the tolerance
    assert (np.delete(moved.reshape(-1), 1 * 5 + 3) < 1e-6).all()  # nothing else moved
    assert bool(probe._all_finite(base)) and not bool(probe._all_finite(changed))


def test_non_finite_logits_are_refused():
    result = check(lambda x: TABLE[x] / 0.0)
    assert not result.ok and "NaN or infinity" in result.reason


@pytest.mark.parametrize("rows,batches", [(B, BATCHES), (2, 40), (5, 3), (16, 1)])
def test_the_plan_covers_every_cut_every_batch_and_every_rows_neighbours(rows, batches):
    passes = probe.plan(seed=3, batches=batches, rows=rows, length=T)
    cuts = np.concatenate([p.cuts for p in passes])
    assert set(range(T - 1)) <= set(cuts.tolist())  # every position against the token after it
    assert [p.batch for p in passes] == sorted(p.batch for p in passes)  # in the metric's order
    for batch in range(batches):
        mine = [p.cuts for p in passes if p.batch == batch]
        assert any(((c >= 0) & (c < T - 1)).all() for c in mine), batch  # a cut pass in every batch
        for i in range(rows - 1):  # the last position of each row with its neighbour replaced, both ways
            assert any(c[i] == T - 1 and c[i + 1] == -1 for c in mine), (batch, i)
            assert any(c[i + 1] == T - 1 and c[i] == -1 for c in mine), (batch, i)
    full = [b for b in range(batches)
            if all(any(c[i] == T - 1 and c[j] == -1 for c in (p.cuts for p in passes if p.batch == b))
                   for i, j in itertools.permutations(range(rows), 2))]
    assert len(full) >= min(probe.FULL_ROW_BATCHES, batches)
    assert len(passes) + batches == probe.passes_needed(rows, T, batches)


def test_the_seed_draws_the_plan_and_repeats_it():
    one, again, other = (probe.plan(s, BATCHES, B, T) for s in (3, 3, 4))
    assert all(a.batch == b.batch and (a.cuts == b.cuts).all() for a, b in zip(one, again))
    assert any(a.batch != b.batch or (a.cuts != b.cuts).any() for a, b in zip(one, other))
    assert probe.draw_seed() != probe.draw_seed() or probe.draw_seed() != probe.draw_seed()


def test_one_row_one_position_and_one_batch():
    assert check(bigram, rows=1).ok
    assert not check(peeks_ahead, rows=1).ok
    assert check(bigram, length=1).ok
    assert check(bigram, batches=1).ok and not check(sees_next_row, batches=1).ok


def test_passes_are_the_forward_calls():
    calls = []
    jitted = jax.jit(bigram)
    probe.check(lambda x: calls.append(1) or jitted(jnp.asarray(x)), layout(), B, VOCAB, seed=5)
    # 5 batches (the metric's own calls); 15 cuts in 2 passes, but a cut pass in each of the 5
    # batches; row passes: the full code (5 passes, C(5, 2) >= 8 rows) in 4 batches, 2 in the last
    assert len(calls) == probe.passes_needed(B, T, BATCHES) == 5 + 5 + 4 * 5 + 2


def first_batch_only(rows: int):
    """Leaks the next token, but only on the first batch of the metric (recognised by its
    first row's tokens), whatever the batch size: the rest of the metric sees a causal model."""
    first = layout(rows=rows, batches=BATCHES * B // rows)[0]

    def model(x):
        is_first = jnp.any(jnp.all(x == first[None, :], axis=1))
        return TABLE[x] + jnp.where(is_first, 3.0, 0.0) * jax.nn.one_hot(next_token(x), VOCAB)
    return model


@pytest.mark.parametrize("rows", [1, 2, 4, 8])
def test_a_leak_on_the_first_batch_alone_is_caught_at_any_batch_size(rows):
    batches = BATCHES * B // rows
    for seed in range(3):
        result = check(first_batch_only(rows), rows=rows, batches=batches, seed=seed)
        assert not result.ok, (rows, seed)
        assert "evaluation batch 0" in result.reason and "it sees the future" in result.reason
