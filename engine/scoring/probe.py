"""The causality probe: a prediction may depend only on earlier tokens of its own row.

The metric feeds rows of consecutive text, so a model that looks at later tokens of its row,
or at other rows of the batch (the next row is the text that follows, and its first token is
the target of this row's last position), would score far better than it predicts. Before the
metric, the scorer runs the model on some of the metric's own batches, then on copies with
tokens changed, and checks that what the metric uses did not move: the float32 log-softmax
of every compared position, within TOLERANCE_NATS, a fixed figure no output of the model can
scale (a constant added to one position's logits leaves its log-softmax as it was).

Each row of a pass has a cut c: its tokens after c change, its positions 0..c are compared.
- Cut passes: every cut 0..T-2 is some row's cut, so the prediction at every position p is
  compared with the token at p + 1 (and all later ones) changed: ceil((T-1)/B) passes.
- Row passes: rows are replaced whole (c = -1) or kept whole (c = T-1, all T positions
  compared, the last included). Each row gets its own half-size subset of the passes in which
  it is replaced, so every ordered pair of rows has a pass that replaces one and keeps the
  other: k passes with C(k, k//2) >= B (4 for 4 rows, 5 for 8, 6 for 16), per base batch.

The base batches (several of the metric's batches, never the split's first while there are
others), the order of the cuts, the rows' subsets and the replacement tokens all come from a
seed drawn when scoring starts (draw_seed), so a leak gated on the probe's inputs, positions or
batch has no fixed target; the seed is recorded with the score, and `verify` repeats the probe.

Cost, in forward calls of the exported program (B rows of T tokens): BASE_BATCHES * (1 + k)
+ ceil((T-1)/B). The metric makes eval_tokens / (T*B) calls, so the probe over the metric is
about T^2 / eval_tokens, whatever B: every cut needs a row of its own (two rows that first
differ at p + 1 are the only test of position p against the token at p + 1).
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import secrets
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

# Log-probabilities (nats) may move by this much without counting as a change. A causal model
# computes its compared positions from identical inputs with the same program, so it moves by
# 0 (measured with the default train.py on CPU); the tolerance only bounds what a leak is worth.
TOLERANCE_NATS = 1e-3
BASE_BATCHES = 4  # of the metric's batches, chosen at random per probe


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    ok: bool
    reason: str | None = None
    passes: int = 0  # forward calls made (base batches included)
    seed: int | None = None


@dataclasses.dataclass(frozen=True)
class Pass:
    batch: int  # index of the base batch among the metric's batches
    cuts: np.ndarray  # int [B]: per row, the last position compared (-1: replaced whole)
    salt: int  # draws this pass's replacement tokens


def draw_seed() -> int:
    """A fresh seed from the OS (32 bits), the same on every host of a multi-host scorer."""
    seed = secrets.randbits(32)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        seed = int(multihost_utils.broadcast_one_to_all(np.uint32(seed)))
    return seed


def check(logits_of: Callable, rows_RT: np.ndarray, batch_rows: int, vocab: int, seed: int,
          fetch: Callable = np.asarray) -> ProbeResult:
    """Probe `logits_of(inputs int32[B, T]) -> logits [B, T, V]` (a device array).

    rows_RT: the metric's inputs, int32 [R, T] with R a multiple of batch_rows (= B): batch i
    is rows i*B..(i+1)*B-1, as the metric feeds them. `fetch` brings a small device result to
    the host (across hosts, gathered first). The result says, on failure, which position of
    which row moved, by how much, and what had changed.
    """
    rows_RT = np.asarray(rows_RT, np.int32)
    if len(rows_RT) < batch_rows or len(rows_RT) % batch_rows:
        raise ValueError(f"the probe needs whole batches of {batch_rows} rows, not {len(rows_RT)} rows")
    passes = plan(seed, len(rows_RT) // batch_rows, batch_rows, rows_RT.shape[1])
    calls = 0
    for batch in dict.fromkeys(p.batch for p in passes):
        inputs_BT = rows_RT[batch * batch_rows:(batch + 1) * batch_rows]
        base_BTV = _log_probs(logits_of(inputs_BT))
        calls += 1
        if not bool(fetch(_all_finite(base_BTV))):
            return ProbeResult(False, f"the model's log-probabilities hold NaN or infinity on validation text "
                               f"(evaluation batch {batch})", calls, seed)
        mine = [p for p in passes if p.batch == batch]
        moved = [_movement(base_BTV, logits_of(_changed(inputs_BT, p, vocab, seed))) for p in mine]
        calls += len(mine)
        for p, moved_BT in zip(mine, moved):
            found = first_moved(np.asarray(fetch(moved_BT)), p.cuts)
            if found is not None:
                reason = _diagnose(logits_of, base_BTV, inputs_BT, p, found, vocab, seed, fetch)
                return ProbeResult(False, reason, calls, seed)
    return ProbeResult(True, None, calls, seed)


def plan(seed: int, batches: int, rows: int, length: int) -> list[Pass]:
    """The probe's passes: every cut 0..T-2 once (the last pass filled with random ones), then
    the row passes of each base batch; base batches exclude batch 0 while there are others."""
    rng = np.random.default_rng([seed, 0])
    pool = np.arange(1, batches) if batches > 1 else np.arange(1)
    bases = rng.permutation(pool)[:BASE_BATCHES]
    cuts = rng.permutation(max(length - 1, 0))
    missing = -len(cuts) % rows
    cuts = np.concatenate([cuts, rng.integers(0, max(length - 1, 1), missing)]) if length > 1 else cuts
    passes = [Pass(int(bases[i % len(bases)]), chunk, 0) for i, chunk in enumerate(cuts.reshape(-1, rows))]
    for base in bases:
        replaced_of_row = [row_codes(rows)[i] for i in rng.permutation(rows)]
        for m in range(_code_length(rows)):
            replaced = np.array([m in code for code in replaced_of_row])
            passes.append(Pass(int(base), np.where(replaced, -1, length - 1), 0))
    return [dataclasses.replace(p, salt=i + 1) for i, p in enumerate(passes)]


def row_codes(rows: int) -> list[frozenset]:
    """A distinct half-size subset of the passes for each row (no subset inside another)."""
    k = _code_length(rows)
    return [frozenset(c) for c in itertools.islice(itertools.combinations(range(k), k // 2), rows)]


def _code_length(rows: int) -> int:
    k = 0
    while math.comb(k, k // 2) < rows:
        k += 1
    return k if rows > 1 else 0


def passes_needed(rows: int, length: int, batches: int) -> int:
    """Forward calls of a probe that passes: base batches, cut passes, row passes."""
    bases = min(BASE_BATCHES, max(batches - 1, 1))
    return bases * (1 + _code_length(rows)) + -(-max(length - 1, 0) // rows)


def first_moved(moved_BT: np.ndarray, cuts: np.ndarray) -> tuple[int, int, float] | None:
    """(row, position, nats) of the first compared position that moved past the tolerance
    (NaN counts as moved), or None. Positions after a row's cut are not compared."""
    compared = np.arange(moved_BT.shape[1])[None, :] <= cuts[:, None]
    bad = compared & ~(moved_BT <= TOLERANCE_NATS)
    if not bad.any():
        return None
    row, position = (int(i) for i in np.argwhere(bad)[0])
    return row, position, float(moved_BT[row, position])


def _changed(inputs_BT: np.ndarray, p: Pass, vocab: int, seed: int, only=None) -> np.ndarray:
    """The pass's inputs: every token after its row's cut changed to another id (the same ids
    whenever the same pass is replayed); rows outside `only` (a bool [B]) left as they were."""
    B, T = inputs_BT.shape
    shift = np.random.default_rng([seed, p.salt]).integers(1, max(vocab, 2), size=(B, T))
    mask = np.arange(T)[None, :] > p.cuts[:, None]
    if only is not None:
        mask &= only[:, None]
    out = inputs_BT.copy()
    out[mask] = ((out.astype(np.int64) + shift) % vocab)[mask]
    return out


def _diagnose(logits_of, base_BTV, inputs_BT, p: Pass, found, vocab: int, seed: int, fetch) -> str:
    """Name the rule that broke: the row's own later tokens, or another row (which one)."""
    row, position, nats = found
    B, T = inputs_BT.shape
    where = (f"row {row} of evaluation batch {p.batch}, moved by {nats:.3g} nats, "
             f"tolerance {TOLERANCE_NATS:g}")
    own = np.arange(B) == row
    if p.cuts[row] < T - 1 and _moves(logits_of, base_BTV, inputs_BT, p, own, row, vocab, seed, fetch):
        return (f"the model's prediction at position {position} changed when later tokens changed: it sees "
                f"the future ({where}; the tokens after position {p.cuts[row]} of that row changed); every "
                "position may use only the tokens at or before it (check the causal mask and any shift or "
                "convolution over time)")
    others = [j for j in range(B) if j != row and p.cuts[j] < T - 1]
    culprit = next((j for j in others if _moves(logits_of, base_BTV, inputs_BT, p, np.arange(B) == j,
                                                row, vocab, seed, fetch)), None)
    what = (f"rows {others}" if culprit is None else f"all of row {culprit}'s tokens" if p.cuts[culprit] < 0
            else f"row {culprit}'s tokens after position {p.cuts[culprit]}")
    return ("the model's prediction for one row changed when other rows of the batch changed: it mixes "
            f"rows (position {position} of {where}; {what} changed, its own tokens did not); consecutive "
            "rows of the evaluation are consecutive text, so the next row's first token is the target of "
            "a row's last position; the logits of a row may depend only on that row (batch statistics "
            "belong in training only)")


def _moves(logits_of, base_BTV, inputs_BT, p: Pass, only, row: int, vocab: int, seed: int, fetch) -> bool:
    """Does row `row` move at a compared position when only the rows in `only` change as in pass p?"""
    moved_BT = np.asarray(fetch(_movement(base_BTV, logits_of(_changed(inputs_BT, p, vocab, seed, only)))))
    cuts = np.where(np.arange(len(p.cuts)) == row, p.cuts, -1)
    return first_moved(moved_BT, cuts) is not None


@jax.jit
def _log_probs(logits_BTV):
    """What the metric uses: a float32 log-softmax over the vocabulary."""
    return jax.nn.log_softmax(logits_BTV.astype(jnp.float32), axis=-1)


@jax.jit
def _all_finite(logp_BTV):
    return jnp.all(jnp.isfinite(logp_BTV))


@jax.jit
def _movement(base_BTV, logits_BTV):
    """float32 [B, T]: the largest change of any token's log-probability, in nats (NaN if any)."""
    diff = jnp.abs(base_BTV - jax.nn.log_softmax(logits_BTV.astype(jnp.float32), axis=-1))
    return jnp.where(jnp.isnan(diff).any(axis=-1), jnp.nan, diff.max(axis=-1))
