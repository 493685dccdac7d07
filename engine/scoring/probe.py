"""The causality probe: a prediction may depend only on earlier tokens of its own row.

The metric feeds rows of consecutive text, so a model that looks at later tokens, or at
other rows of the batch (the next row is the text that follows), would score far better
than it predicts. Before the metric, the scorer runs the model on one batch, then on
copies with tokens changed, and checks that the logits which must not move did not move:

- after a cut point p, every later token of a row is replaced: positions 0..p keep their logits;
- whole rows are replaced: the other rows keep all their logits. Each row gets its own
  subset of the passes (half of them) in which it is replaced, so any pair of rows has a
  pass that replaces one and keeps the other: 6 passes cover 16 rows, 8 cover 64.

Both checks share passes (replaced rows are not checked), so the probe costs a few
forward calls; only a failure runs extra calls, to say which of the two it was.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

# Logits may move by this much, relative to the largest logit, without counting as a change.
TOLERANCE = 1e-4
MIN_PASSES = 4  # cut points probed even when a batch needs fewer row passes
SEED = 20260401


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    ok: bool
    reason: str | None = None
    passes: int = 0


def check(logits_of: Callable, inputs_BT: np.ndarray, vocab: int, seed: int = SEED,
          fetch: Callable = np.asarray) -> ProbeResult:
    """Probe `logits_of(inputs int32[B, T]) -> logits [B, T, V]` (a device array) on inputs.
    `fetch` brings a small device result to the host (across hosts, gathered first)."""
    inputs_BT = np.asarray(inputs_BT, np.int32)
    B, T = inputs_BT.shape
    base = logits_of(inputs_BT)
    finite, scale = (float(fetch(x)) for x in _finite_and_scale(base))
    if not finite:
        return ProbeResult(False, "the model's logits hold NaN or infinity on validation text", 1)
    tolerance = TOLERANCE * max(1.0, scale)
    rng = np.random.default_rng(seed)
    codes = row_codes(B)
    passes = max(_code_length(B), MIN_PASSES if T > 1 else 0)
    cuts = cut_points(T)
    for m in range(passes):
        replaced = np.array([m in code for code in codes])
        cut = cuts[m % len(cuts)] if cuts else T - 1
        changed = _replace(inputs_BT, replaced, cut, vocab, rng)
        moved = np.array(fetch(_moved(base, logits_of(changed), tolerance)))  # bool [B, T]
        moved[replaced] = False
        moved[:, cut + 1:] = False
        if moved.any():
            reason = _diagnose(logits_of, base, inputs_BT, cut, vocab, rng, tolerance, fetch)
            return ProbeResult(False, reason, m + 2)
    return ProbeResult(True, None, passes + 1)


def row_codes(rows: int) -> list[frozenset]:
    """A distinct half-size subset of the passes for each row (no subset inside another)."""
    k = _code_length(rows)
    return [frozenset(c) for c in itertools.islice(itertools.combinations(range(k), k // 2), rows)]


def _code_length(rows: int) -> int:
    k = 0
    while math.comb(k, k // 2) < rows:
        k += 1
    return k if rows > 1 else 0


def cut_points(T: int) -> list[int]:
    """Positions p after which tokens change: early, quarters, and the last one with a future."""
    if T < 2:
        return []
    return sorted({0, T // 4, T // 2, (3 * T) // 4, T - 2} - {T - 1})


def _replace(inputs_BT: np.ndarray, rows: np.ndarray, cut: int, vocab: int, rng) -> np.ndarray:
    """Whole rows where `rows`, and every token after `cut` elsewhere, changed to another id."""
    out = inputs_BT.copy()
    mask = np.zeros(out.shape, bool)
    mask[rows] = True
    mask[:, cut + 1:] = True
    shift = rng.integers(1, max(vocab, 2), size=out.shape)
    out[mask] = ((out.astype(np.int64) + shift) % vocab)[mask]
    return out


def _diagnose(logits_of, base, inputs_BT, cut: int, vocab: int, rng, tolerance: float, fetch) -> str:
    """Which rule broke: later tokens of the same row, or other rows."""
    B, _ = inputs_BT.shape
    none = np.zeros(B, bool)
    moved = np.array(fetch(_moved(base, logits_of(_replace(inputs_BT, none, cut, vocab, rng)), tolerance)))
    moved[:, cut + 1:] = False
    if moved.any():
        row, position = (int(i) for i in np.argwhere(moved)[0])
        return (f"the model's prediction at position {position} changed when later tokens changed: "
                f"it sees the future (row {row}, tokens after position {cut} changed); every position "
                "may use only the tokens at or before it (check the causal mask and any shift or "
                "convolution over time)")
    return ("the model's prediction for one row changed when other rows of the batch changed: "
            "it mixes rows, and consecutive rows of the evaluation are consecutive text; the "
            "logits of a row may depend only on that row (batch statistics belong in training only)")


@jax.jit
def _finite_and_scale(logits):
    logits = logits.astype(jnp.float32)
    return jnp.all(jnp.isfinite(logits)), jnp.max(jnp.abs(logits))


@jax.jit
def _moved(a, b, tolerance):
    diff = jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32))
    return ~(jnp.max(diff, axis=-1) <= tolerance)  # NaN counts as moved
