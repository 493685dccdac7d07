"""The fixed metric: bits per byte on the first eval_tokens targets of a split.

Row i of the layout is tokens[i*T : i*T + T + 1] (T = the manifest's sequence_length),
for eval_tokens // T rows. bpb = sum(nats over targets that stand for bytes) /
(ln 2 * sum(bytes of those targets)); special tokens count zero in both sums. The nats
are the engine's cross-entropy of the model's logits: nothing of train.py computes them.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from engine.errors import UserError


@dataclasses.dataclass(frozen=True)
class BpbResult:
    bpb: float
    nats: float
    bytes: int
    tokens: int  # targets scored (specials included)


def eval_rows(tokens: np.ndarray, eval_tokens: int, sequence_length: int) -> np.ndarray:
    """int32 [eval_tokens // T, T + 1]: overlapping by one token, so every target is scored once."""
    rows = eval_tokens // sequence_length
    needed = rows * sequence_length + 1
    if rows == 0 or len(tokens) < needed:
        raise UserError(f"the split holds {len(tokens)} tokens but the metric needs {needed} "
                        f"({rows} rows of {sequence_length}): prepare with more data or fewer --eval-tokens")
    flat = np.asarray(tokens[:needed], dtype=np.int32)
    starts = np.arange(rows)[:, None] * sequence_length
    return flat[starts + np.arange(sequence_length + 1)[None, :]]


def pad_rows(rows: np.ndarray, multiple: int, pad_id: int) -> np.ndarray:
    """Fill up to a whole number of batches with rows of a special token, which score nothing."""
    missing = -len(rows) % multiple
    if not missing:
        return rows
    return np.concatenate([rows, np.full((missing, rows.shape[1]), pad_id, dtype=rows.dtype)])


def nats_and_bytes(logits_BTV, targets_BT, token_bytes_V):
    """(nats[B], bytes[B]) per row: the engine's own cross-entropy, a float32 log-softmax of the
    model's logits, over the targets that stand for bytes (special tokens count zero in both)."""
    logp_BTV = jax.nn.log_softmax(logits_BTV.astype(jnp.float32), axis=-1)
    nats_BT = -jnp.take_along_axis(logp_BTV, targets_BT[..., None], axis=-1)[..., 0]
    bytes_BT = token_bytes_V[targets_BT]
    nats_BT = jnp.where(bytes_BT > 0, nats_BT, 0.0)
    return nats_BT.sum(axis=1), bytes_BT.sum(axis=1)


def make_scoring_step(forward: Callable) -> Callable:
    """(weights, rows int32[B, T+1], token_bytes int32[V]) -> (nats[B], bytes[B]), for jit.

    `forward(weights, inputs int32[B, T]) -> logits [B, T, V]` is the model (in the scorer,
    the exported program); the loss around it is the engine's.
    """
    def step(weights, rows, token_bytes):
        return nats_and_bytes(forward(weights, rows[:, :-1]), rows[:, 1:], token_bytes)
    return step


def evaluate_bpb(step: Callable, weights, tokens: np.ndarray, token_bytes: np.ndarray, *,
                 eval_tokens: int, sequence_length: int, batch_size: int, pad_id: int,
                 put: Callable | None = None) -> BpbResult:
    """Score `weights` with a compiled scoring step on the fixed layout of `tokens`,
    `batch_size` rows per call, so memory stays bounded by one call's logits.

    `put` moves one batch of host rows onto the devices (default: jnp.asarray).
    """
    rows = eval_rows(tokens, eval_tokens, sequence_length)
    scored = len(rows) * sequence_length
    rows = pad_rows(rows, batch_size, pad_id)
    put = put or jnp.asarray
    table = np.asarray(token_bytes, dtype=np.int32)  # host array: any compiled sharding accepts it
    sums = [step(weights, put(rows[i:i + batch_size]), table) for i in range(0, len(rows), batch_size)]
    nats = sum(float(np.sum(np.asarray(n, dtype=np.float64))) for n, _ in sums)
    nbytes = sum(int(np.sum(np.asarray(b, dtype=np.int64))) for _, b in sums)
    return BpbResult(bpb=bits_per_byte(nats, nbytes), nats=nats, bytes=nbytes, tokens=scored)


def bits_per_byte(nats: float, nbytes: int) -> float:
    """Bits per byte; NaN when the nats are not finite (the scorer reports why)."""
    if nbytes <= 0:
        raise UserError("the evaluation targets hold no bytes (only special tokens): the split is empty")
    return nats / (math.log(2) * nbytes)
