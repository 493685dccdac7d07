"""model/sampling.py against tiny pure-JAX logits functions with known answers."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model.sampling import generate

VOCAB = 11


def successor_logits(table, inputs_BxT):
    """A bigram model: the next token is a fixed function of the current one."""
    return table[inputs_BxT]


def successor_table(vocab=VOCAB):
    return 10.0 * jax.nn.one_hot((jnp.arange(vocab) + 1) % vocab, vocab)


def running_sum_logits(_, inputs_BxT):
    """Causal and whole-context: the next token is the sum of all tokens so far, mod VOCAB."""
    return 10.0 * jax.nn.one_hot(jnp.cumsum(inputs_BxT, axis=1) % VOCAB, VOCAB)


def test_greedy_follows_the_most_likely_token():
    out = generate(successor_logits, successor_table(), [3], 6, temperature=0.0)
    np.testing.assert_array_equal(out, [4, 5, 6, 7, 8, 9])
    assert out.dtype == np.int32


def test_greedy_reads_the_whole_prompt_not_the_unused_tail():
    prompt = [2, 5, 1]
    out = generate(running_sum_logits, None, prompt, 4, temperature=0.0)
    expected, history = [], list(prompt)
    for _ in range(4):
        history.append(sum(history) % VOCAB)
        expected.append(history[-1])
    np.testing.assert_array_equal(out, expected)


def test_window_slides_when_context_is_shorter_than_the_text():
    prompt = [1, 2, 3, 4, 5]
    out = generate(running_sum_logits, None, prompt, 6, temperature=0.0, context_length=4)
    history = list(prompt)
    expected = []
    for _ in range(6):
        history.append(sum(history[-4:]) % VOCAB)
        expected.append(history[-1])
    np.testing.assert_array_equal(out, expected)


def test_one_compile_for_all_tokens():
    traces = []

    def counting_logits(state, inputs_BxT):
        traces.append(inputs_BxT.shape)
        return successor_logits(state, inputs_BxT)

    generate(counting_logits, successor_table(), [0, 1], 20, temperature=1.0, top_k=3,
             rng=jax.random.key(1))
    assert traces == [(1, 22)]


def test_top_k_one_is_greedy_at_any_temperature():
    table = jax.random.normal(jax.random.key(0), (VOCAB, VOCAB))
    greedy = generate(successor_logits, table, [7], 10, temperature=0.0)
    top1 = generate(successor_logits, table, [7], 10, temperature=2.0, top_k=1,
                    rng=jax.random.key(5))
    np.testing.assert_array_equal(greedy, top1)


def test_top_k_only_draws_the_k_most_likely():
    # Every token's row prefers 0 > 1 > 2 > ... ; with top_k=2 only 0 and 1 may appear.
    row = -jnp.arange(VOCAB, dtype=jnp.float32) * 0.1
    table = jnp.tile(row, (VOCAB, 1))
    out = generate(successor_logits, table, [5], 200, temperature=1.0, top_k=2,
                   rng=jax.random.key(3))
    assert set(out.tolist()) == {0, 1}


def test_sampling_is_reproducible_and_depends_on_the_seed():
    table = jnp.zeros((VOCAB, VOCAB))
    first = generate(successor_logits, table, [1], 50, temperature=1.0, top_k=None,
                     rng=jax.random.key(9))
    again = generate(successor_logits, table, [1], 50, temperature=1.0, top_k=None,
                     rng=jax.random.key(9))
    other = generate(successor_logits, table, [1], 50, temperature=1.0, top_k=None,
                     rng=jax.random.key(10))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert len(set(first.tolist())) > 3  # uniform logits spread over the vocabulary


def test_long_prompt_keeps_its_last_tokens():
    out = generate(running_sum_logits, None, list(range(1, 10)), 1, temperature=0.0,
                   context_length=3)
    assert out.tolist() == [(7 + 8 + 9) % VOCAB]


def test_empty_prompt_is_refused():
    with pytest.raises(ValueError, match="prompt"):
        generate(successor_logits, successor_table(), [], 3)
