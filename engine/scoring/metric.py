"""The fixed metric: bits per byte on the first eval_tokens targets of a split.

Row i of the layout is tokens[i*T : i*T + T + 1] (T = the manifest's sequence_length),
for eval_tokens // T rows. bpb = sum(nats over targets that stand for bytes) /
(ln 2 * sum(bytes of those targets)); special tokens count zero in both sums.
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


def make_eval_step(token_loss: Callable) -> Callable:
    """(state, rows int32[B, T+1], token_bytes int32[V]) -> (nats[B], bytes[B]), pure, for jit."""
    def eval_step(state, rows, token_bytes):
        inputs, targets = rows[:, :-1], rows[:, 1:]
        nats = token_loss(state, inputs, targets).astype(jnp.float32)
        target_bytes = token_bytes[targets]
        nats = jnp.where(target_bytes > 0, nats, 0.0)
        return nats.sum(axis=1), target_bytes.sum(axis=1)
    return eval_step


def evaluate_bpb(token_loss: Callable, state, tokens: np.ndarray, token_bytes: np.ndarray, *,
                 eval_tokens: int, sequence_length: int, batch_size: int, pad_id: int,
                 step: Callable | None = None, put: Callable | None = None) -> BpbResult:
    """Score `state` on the fixed layout of `tokens`.

    `step` is a compiled eval step (the trainer passes its AOT-compiled, sharded one);
    by default it is jax.jit(make_eval_step(token_loss)). `put` moves one batch of host rows
    onto the devices (the trainer's makes a global array from this host's share).
    """
    rows = eval_rows(tokens, eval_tokens, sequence_length)
    scored = len(rows) * sequence_length
    rows = pad_rows(rows, batch_size, pad_id)
    step = step or jax.jit(make_eval_step(token_loss))
    put = put or jnp.asarray
    table = np.asarray(token_bytes, dtype=np.int32)  # host array: any compiled sharding accepts it
    sums = [step(state, put(rows[i:i + batch_size]), table) for i in range(0, len(rows), batch_size)]
    nats = sum(float(np.sum(np.asarray(n, dtype=np.float64))) for n, _ in sums)
    nbytes = sum(int(np.sum(np.asarray(b, dtype=np.int64))) for _, b in sums)
    return BpbResult(bpb=bits_per_byte(nats, nbytes), nats=nats, bytes=nbytes, tokens=scored)


def bits_per_byte(nats: float, nbytes: int) -> float:
    if nbytes <= 0:
        raise UserError("the evaluation targets hold no bytes (only special tokens): the split is empty")
    return nats / (math.log(2) * nbytes)
