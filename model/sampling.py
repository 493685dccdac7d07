"""Autoregressive sampling from any `logits(state, inputs) -> logits` function.

The whole generation is one compiled `lax.scan` over a fixed-size token window,
so nothing recompiles per token: the model always sees the same [1, W] shape.
While the window has room, tokens are written at the next free position (a causal
model ignores the unused tail); once full, it slides left by one token per step.

With a KV cache (`init_cache` and `decode`, see engine/training/contract.py) the prompt
is run once and each new token costs one position, for as long as the text fits the
window; once it would slide, positions shift under every cached key, so the rest is
recomputed per token as above. Both ways draw the same tokens.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

LogitsFn = Callable[[Any, jax.Array], jax.Array]  # (state, int32[B, T]) -> float[B, T, V]


def generate(logits_fn: LogitsFn, state: Any, prompt_ids, max_new_tokens: int,
             temperature: float = 0.8, top_k: int | None = 50, rng: jax.Array | None = None,
             context_length: int | None = None, cache: tuple[Callable, Callable] | None = None) -> np.ndarray:
    """Return int32[max_new_tokens]: the tokens that follow `prompt_ids`.

    temperature 0 is greedy decoding; otherwise logits are divided by the temperature
    and, when top_k is set, only the top_k most likely tokens may be drawn.
    context_length caps the window the model sees (the prompt keeps its last tokens).
    cache: (init_cache, decode) of the experiment, to decode with a KV cache.
    """
    prompt = np.asarray(prompt_ids, dtype=np.int32).reshape(-1)
    if prompt.size == 0:
        raise ValueError("generate needs at least one prompt token (e.g. BOS)")
    if max_new_tokens <= 0:
        return np.zeros((0,), np.int32)
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    total = prompt.size + max_new_tokens
    width = min(total, context_length) if context_length else total
    prompt = prompt[-width:]
    step_rngs = jax.random.split(jax.random.key(0) if rng is None else rng, max_new_tokens)
    cached = np.zeros((0,), np.int32)
    if cache is not None:  # the tokens drawn before the window would slide
        count = min(max_new_tokens, width - prompt.size + 1)
        run = _compiled_cached_generation(*cache, width, float(temperature), top_k or 0)
        cached = np.asarray(run(state, jnp.asarray(prompt), step_rngs[:count]), np.int32)
        prompt, step_rngs = np.concatenate([prompt, cached])[-width:], step_rngs[count:]
        if len(step_rngs) == 0:
            return cached
    window = np.zeros((width,), np.int32)
    window[: prompt.size] = prompt
    run = _compiled_generation(logits_fn, float(temperature), top_k or 0)
    new_tokens = run(state, jnp.asarray(window), jnp.int32(prompt.size), step_rngs)
    return np.concatenate([cached, np.asarray(new_tokens, dtype=np.int32)])


def _compiled_cached_generation(init_cache: Callable, decode: Callable, capacity: int, temperature: float,
                                top_k: int):
    """prompt [P], step keys [n] -> n tokens: the prompt in one call, then one position per token."""
    def run(state, prompt_P, step_rngs):
        cache = init_cache(state, 1, capacity)
        logits_1xPxV, cache = decode(state, cache, prompt_P[None, :], jnp.int32(0))
        first = _choose(logits_1xPxV[0, -1].astype(jnp.float32), temperature, top_k, step_rngs[0])

        def step(carry, step_rng):
            cache, token, position = carry
            logits_1x1xV, cache = decode(state, cache, token.reshape(1, 1), position)
            token = _choose(logits_1x1xV[0, 0].astype(jnp.float32), temperature, top_k, step_rng)
            return (cache, token, position + 1), token

        _, rest = jax.lax.scan(step, (cache, first, jnp.int32(prompt_P.shape[0])), step_rngs[1:])
        return jnp.concatenate([first[None], rest])

    return jax.jit(run)


def _compiled_generation(logits_fn: LogitsFn, temperature: float, top_k: int):
    def run(state, window_W, filled, step_rngs):
        def step(carry, step_rng):
            window_W, filled = carry
            logits_1xWxV = logits_fn(state, window_W[None, :])
            next_logits_V = jnp.take(logits_1xWxV[0], filled - 1, axis=0).astype(jnp.float32)
            token = _choose(next_logits_V, temperature, top_k, step_rng)
            window_W, filled = _append(window_W, filled, token)
            return (window_W, filled), token

        _, tokens = jax.lax.scan(step, (window_W, filled), step_rngs)
        return tokens

    return jax.jit(run)


def _choose(logits_V: jax.Array, temperature: float, top_k: int, rng: jax.Array) -> jax.Array:
    if temperature == 0.0:
        return jnp.argmax(logits_V).astype(jnp.int32)
    logits_V = logits_V / temperature
    if 0 < top_k < logits_V.shape[-1]:
        kth_largest = jax.lax.top_k(logits_V, top_k)[0][-1]
        logits_V = jnp.where(logits_V < kth_largest, -jnp.inf, logits_V)
    return jax.random.categorical(rng, logits_V).astype(jnp.int32)


def _append(window_W: jax.Array, filled: jax.Array, token: jax.Array):
    width = window_W.shape[0]
    has_room = filled < width
    written = window_W.at[jnp.minimum(filled, width - 1)].set(token)
    slid = jnp.roll(window_W, -1).at[width - 1].set(token)
    return jnp.where(has_room, written, slid), jnp.minimum(filled + 1, width)
