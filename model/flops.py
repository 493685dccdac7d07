"""Analytic training FLOPs per token, for MFU: 6N plus the causal attention term.

Forward and backward of a matmul with N weights cost 2N and 4N FLOPs per token,
hence 6N. N counts weights that multiply activations (blocks and output head),
not the input embedding table, which is a lookup. Attention adds, per layer,
the score (q.k) and mix (p.v) matmuls, 2 * 2 * width FLOPs per attended pair
forward, 3x that with backward; under a causal mask the query at position t
attends t + 1 keys, (T + 1) / 2 on average over a sequence of T.
"""
from __future__ import annotations

from typing import Iterable


def dense_flops_per_token(matmul_params: int) -> float:
    """6N: forward (2N) and backward (4N) of N weights applied to one token."""
    return 6.0 * matmul_params


def causal_attention_flops_per_token(num_layers: int, attention_width: int, seq_len: int) -> float:
    """Scores and value mixing over the keys a causal query sees, forward and backward.

    attention_width is heads * head_dim of the queries (the width q.k and p.v run over).
    """
    mean_keys_attended = (seq_len + 1) / 2
    return 12.0 * num_layers * attention_width * mean_keys_attended


def transformer_flops_per_token(matmul_params: int, num_layers: int, attention_width: int,
                                seq_len: int) -> float:
    return (dense_flops_per_token(matmul_params)
            + causal_attention_flops_per_token(num_layers, attention_width, seq_len))


def count_params(tree, exclude: Iterable[str] = ()) -> int:
    """Number of array elements in a pytree, skipping leaves whose path names an excluded key."""
    import jax  # here, so that the FLOP formulas import without JAX

    excluded = set(exclude)
    total = 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        names = {str(getattr(entry, "key", getattr(entry, "name", getattr(entry, "idx", "")))) for entry in path}
        if names.isdisjoint(excluded):
            total += int(getattr(leaf, "size", 1))
    return total
