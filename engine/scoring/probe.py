"""The causality probe: a prediction may depend only on earlier tokens of its own row.

The metric feeds rows of consecutive text, so a model that looks at later tokens of its row,
or at other rows of the batch (the next row is the text that follows, and its first token is
the target of this row's last position), would score far better than it predicts. The probe
covers every batch the metric scores, the first included: the metric's own forward of a batch
is the probe's base (its unchanged rows), then copies of that batch with tokens changed run,
and what the metric uses must not move: the float32 log-softmax of every compared position,
within TOLERANCE_NATS, a fixed figure no output of the model can scale (a constant added to
one position's logits leaves its log-softmax as it was). What is compared is the spread of
the change of the logits over the vocabulary (movement_of): never less than the largest change
of a log-probability, at most twice it, so no change above the tolerance passes. The
comparison runs on the device, compiled with the forward; only per-position figures [B, T]
come to the host, never logits.

Each row of a pass has a cut c: its tokens after c change, its positions 0..c are compared.
- Cut passes: every cut 0..T-2 is some row's cut, so the prediction at every position p is
  compared with the token at p + 1 (and all later ones) changed: ceil((T-1)/B) passes, dealt
  over the batches in a drawn order, and at least one in every batch (a leak at every
  position of any one batch is caught there). Changing later tokens of every row at once
  also moves a row that reads another row's later tokens.
- Row passes: rows are replaced whole (c = -1) or kept whole (c = T-1, all T positions
  compared, the last included). In every batch, two neighbour passes (even rows kept and
  odd rows replaced, then the reverse) compare every row, its last position included, with
  the rows beside it replaced: the next row's first token is the last position's target.
  In FULL_ROW_BATCHES drawn batches, each row gets its own half-size subset of the passes in
  which it is replaced, so every ordered pair of rows has a pass that replaces one and keeps
  the other: k passes with C(k, k//2) >= B (4 for 4 rows, 5 for 8, 6 for 16).

The order of the cuts over the batches, the batches with the full row code, the rows' subsets
and the replacement tokens all come from a seed drawn when scoring starts (draw_seed), so a
leak gated on the probe's inputs, positions or batch has no fixed target; the seed is recorded
with the score, and `verify` repeats the probe. Which batch is first, and how many rows a
batch holds (train.py's eval_batch_size), change no coverage: every batch gets cut and row
passes, whatever B.

Cost, in forward calls of the exported program (B rows of T tokens), beside the metric's N =
eval_tokens / (T*B) calls, which are also the probe's bases: max(ceil((T-1)/B), N) cut passes
+ 2 neighbour passes per batch + FULL_ROW_BATCHES * (k - 2). The cut passes over the metric
are about T^2 / eval_tokens, whatever B: every cut needs a row of its own (two rows that first
differ at p + 1 are the only test of position p against the token at p + 1); the neighbour
passes are twice the metric. With 4 rows per call (T 512, 131,072 eval tokens: N = 64) that is
64 + 128 + 128 + 8 = 328 calls, 5.1 times the metric alone. One row per call (a one-device CPU,
engine/training/export.py) cannot mix rows and needs no row passes: 256 + 511 = 767 calls of
one row, 3.0 times the metric.
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
FULL_ROW_BATCHES = 4  # batches, drawn per probe, where every ordered pair of rows is checked
# Changes of the logits up to this size are rounded in float32 by under an eighth of the
# tolerance over a whole spread (2 * 1048 / 2^24 < 1.25e-4); a larger one counts as itself.
EXACT_CHANGE_NATS = TOLERANCE_NATS * 2 ** 23 / 8


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
    """Probe `logits_of(inputs int32[B, T]) -> logits [B, T, V]` (a device array) on every batch.

    rows_RT: the metric's inputs, int32 [R, T] with R a multiple of batch_rows (= B): batch i
    is rows i*B..(i+1)*B-1, as the metric feeds them. `fetch` brings a small device result to
    the host (across hosts, gathered first). The result says, on failure, which position of
    which row moved, by how much, and what had changed. The scorer runs the same passes
    through `check_batch`, with its metric's forward of each batch as the base.
    """
    rows_RT = np.asarray(rows_RT, np.int32)
    if len(rows_RT) < batch_rows or len(rows_RT) % batch_rows:
        raise ValueError(f"the probe needs whole batches of {batch_rows} rows, not {len(rows_RT)} rows")
    batches = len(rows_RT) // batch_rows
    by_batch = plan_by_batch(plan(seed, batches, batch_rows, rows_RT.shape[1]), batches)
    calls = 0
    for batch, mine in enumerate(by_batch):
        inputs_BT = rows_RT[batch * batch_rows:(batch + 1) * batch_rows]
        base_BTV = logits_of(inputs_BT)
        moved_of = lambda inputs, base_BTV=base_BTV: _movement(base_BTV, logits_of(inputs))
        reason = check_batch(moved_of, inputs_BT, batch, mine, vocab, seed, fetch, _all_finite(base_BTV))
        calls += 1 + len(mine)
        if reason is not None:
            return ProbeResult(False, reason, calls, seed)
    return ProbeResult(True, None, calls, seed)


def check_batch(moved_of: Callable, inputs_BT: np.ndarray, batch: int, passes: list[Pass], vocab: int,
                seed: int, fetch: Callable = np.asarray, finite=True) -> str | None:
    """Run `passes` (all of one batch) against the batch's base: None if nothing compared
    moved, else the reason.

    moved_of(inputs int32[B, T]) -> float32 [B, T] on the device: movement_of the base logits
    (the metric's own forward of this batch) and the logits of `inputs` (in the scorer, one
    compiled program: forward and comparison together). Only those per-position figures come
    to the host, fetched after every pass of the batch was dispatched. `finite`: whether the
    base logits are all finite (a device scalar or a bool).
    """
    if not bool(fetch(finite)):
        return ("the model's logits hold NaN or infinity on validation text "
                f"(evaluation batch {batch})")
    moved = [moved_of(_changed(inputs_BT, p, vocab, seed)) for p in passes]
    for p, moved_BT in zip(passes, moved):
        found = first_moved(np.asarray(fetch(moved_BT)), p.cuts)
        if found is not None:
            return _diagnose(moved_of, inputs_BT, p, found, vocab, seed, fetch)
    return None


def plan(seed: int, batches: int, rows: int, length: int) -> list[Pass]:
    """The probe's passes, in batch order, over every one of the metric's batches:
    - cut passes: every cut 0..T-2 in some row, the permutation dealt over the batches in an
      order drawn from the seed, every batch at least one pass (filled with random cuts);
    - row passes: in FULL_ROW_BATCHES batches drawn from the seed, a code where every ordered
      pair of rows has a pass that keeps one whole and replaces the other; in every other
      batch the two neighbour passes (even rows kept whole and odd rows replaced, then the
      reverse), so every row's last position is compared with the next row replaced."""
    rng = np.random.default_rng([seed, 0])
    passes = _cut_passes(rng, batches, rows, length) + _row_passes(rng, batches, rows, length)
    passes.sort(key=lambda p: p.batch)  # stable: each batch's passes keep their drawn order
    return [dataclasses.replace(p, salt=i + 1) for i, p in enumerate(passes)]


def plan_by_batch(passes: list[Pass], batches: int) -> list[list[Pass]]:
    """The plan's passes grouped per batch index 0..batches-1."""
    grouped = [[] for _ in range(batches)]
    for p in passes:
        grouped[p.batch].append(p)
    return grouped


def _cut_passes(rng, batches: int, rows: int, length: int) -> list[Pass]:
    if length < 2:
        return []
    cuts = rng.permutation(length - 1)
    count = max(-(-len(cuts) // rows), batches)
    cuts = np.concatenate([cuts, rng.integers(0, length - 1, count * rows - len(cuts))])
    order = rng.permutation(batches)
    return [Pass(int(order[i % batches]), chunk, 0) for i, chunk in enumerate(cuts.reshape(count, rows))]


def _row_passes(rng, batches: int, rows: int, length: int) -> list[Pass]:
    if rows < 2:
        return []
    full = set(rng.permutation(batches)[:FULL_ROW_BATCHES].tolist())
    passes = []
    for batch in range(batches):
        if batch in full:
            replaced_of_row = [row_codes(rows)[i] for i in rng.permutation(rows)]
            replaced_sets = [np.array([m in code for code in replaced_of_row]) for m in range(_code_length(rows))]
        else:
            odd = np.arange(rows) % 2 == 1
            replaced_sets = [odd, ~odd]
        passes += [Pass(batch, np.where(replaced, -1, length - 1), 0) for replaced in replaced_sets]
    return passes


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
    """Forward calls of a probe that passes: the batches themselves (the metric's own calls),
    cut passes, row passes."""
    cuts = max(-(-(length - 1) // rows), batches) if length > 1 else 0
    full = min(FULL_ROW_BATCHES, batches)
    row_passes = full * _code_length(rows) + (batches - full) * 2 if rows > 1 else 0
    return batches + cuts + row_passes


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


def _diagnose(moved_of, inputs_BT, p: Pass, found, vocab: int, seed: int, fetch) -> str:
    """Name the rule that broke: the row's own later tokens, or another row (which one)."""
    row, position, nats = found
    B, T = inputs_BT.shape
    where = (f"row {row} of evaluation batch {p.batch}, moved by {nats:.3g} nats, "
             f"tolerance {TOLERANCE_NATS:g}")
    own = np.arange(B) == row
    if p.cuts[row] < T - 1 and _moves(moved_of, inputs_BT, p, own, row, vocab, seed, fetch):
        return (f"the model's prediction at position {position} changed when later tokens changed: it sees "
                f"the future ({where}; the tokens after position {p.cuts[row]} of that row changed); every "
                "position may use only the tokens at or before it (check the causal mask and any shift or "
                "convolution over time)")
    others = [j for j in range(B) if j != row and p.cuts[j] < T - 1]
    culprit = next((j for j in others if _moves(moved_of, inputs_BT, p, np.arange(B) == j,
                                                row, vocab, seed, fetch)), None)
    what = (f"rows {others}" if culprit is None else f"all of row {culprit}'s tokens" if p.cuts[culprit] < 0
            else f"row {culprit}'s tokens after position {p.cuts[culprit]}")
    return ("the model's prediction for one row changed when other rows of the batch changed: it mixes "
            f"rows (position {position} of {where}; {what} changed, its own tokens did not); consecutive "
            "rows of the evaluation are consecutive text, so the next row's first token is the target of "
            "a row's last position; the logits of a row may depend only on that row (batch statistics "
            "belong in training only)")


def _moves(moved_of, inputs_BT, p: Pass, only, row: int, vocab: int, seed: int, fetch) -> bool:
    """Does row `row` move at a compared position when only the rows in `only` change as in pass p?"""
    moved_BT = np.asarray(fetch(moved_of(_changed(inputs_BT, p, vocab, seed, only))))
    cuts = np.where(np.arange(len(p.cuts)) == row, p.cuts, -1)
    return first_moved(moved_BT, cuts) is not None


def extremes(x_BTV):
    """(largest, smallest) over the last axis of x in float32, [B, T] each, in one pass over x
    (one variadic reduction: separate max and min reductions each read the logits again, which
    costs more on a CPU than the comparison itself). A NaN anywhere in a row propagates to both."""
    x_BTV = x_BTV.astype(jnp.float32)
    return jax.lax.reduce((x_BTV, x_BTV), (jnp.float32(-jnp.inf), jnp.float32(jnp.inf)),
                          lambda a, b: (jnp.maximum(a[0], b[0]), jnp.minimum(a[1], b[1])), (x_BTV.ndim - 1,))


def all_finite(logits_BTV):
    """Whether every logit is finite, from the extremes of each position."""
    largest, smallest = extremes(logits_BTV)
    return jnp.all(jnp.isfinite(largest) & jnp.isfinite(smallest))


_all_finite = jax.jit(all_finite)


def movement_of(base_BTV, logits_BTV):
    """float32 [B, T]: per position, the spread over the vocabulary of the change of the logits
    (largest minus smallest, in nats; NaN if any is NaN, infinite if any change is).

    It bounds what the metric sees: with d = new - base logits, every token's log-softmax moves
    by |d_v - c| with c = log E_p[exp(d)] between min(d) and max(d), so by at most the spread,
    and the largest of them by at least half of it. A constant added to all logits spreads by
    0. In float32 each d_v is rounded by up to |d_v| / 2^24, so where some |d_v| passes
    EXACT_CHANGE_NATS the spread could hide a change above the tolerance (1e9 minus any logit
    is 1e9: a model that answered the probe's changed rows with a constant 1e9 spread by 0):
    there the largest |d_v| is the figure, itself far above the tolerance. No exponential is
    computed, and the change is read once: a pass costs little beyond its forward.
    """
    largest, smallest = extremes(logits_BTV.astype(jnp.float32) - base_BTV.astype(jnp.float32))
    size = jnp.maximum(jnp.abs(largest), jnp.abs(smallest))
    spread = jnp.where(size <= EXACT_CHANGE_NATS, largest - smallest, size)
    # a spread below zero is a reduction that dropped NaNs (a backend with fast min and max): moved
    return jnp.where(largest >= smallest, spread, jnp.nan)


_movement = jax.jit(movement_of)
