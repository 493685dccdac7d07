"""The contract between train.py and the engine.

train.py defines `experiment(ctx: Context) -> Experiment`. The engine owns the
mesh, the compile, the clock, the data and the metric; the experiment only
describes pure functions over a state pytree. The engine scores the model's
`logits` in a separate process that never runs train.py (engine/scoring/scorer.py):
how train.py computes its own training loss is its own business.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Literal

BudgetMode = Literal["time", "flops", "tokens"]


@dataclasses.dataclass(frozen=True)
class Budget:
    mode: BudgetMode
    value: float  # seconds, FLOPs or tokens

    def describe(self) -> str:
        if self.mode == "time":
            return f"time {self.value:g} s"
        if self.mode == "flops":
            return f"flops {self.value:.3g}"
        return f"tokens {self.value:.3g}"


@dataclasses.dataclass(frozen=True)
class Context:
    """What the engine tells train.py about the run before it builds the experiment."""

    platform: str  # "cpu", "gpu" or "tpu"
    device_kind: str  # jax.devices()[0].device_kind, e.g. "NVIDIA H100 80GB HBM3"
    num_devices: int  # all devices of all hosts
    num_processes: int
    vocab_size: int
    bos_id: int
    eval_sequence_length: int  # the fixed metric's context length; the model must support it
    budget: Budget
    seed: int


# A state is any pytree of arrays; a batch is {"inputs": int32[B, T], "targets": int32[B, T]}.
State = Any
Batch = dict
# sharding: "replicated", "fsdp" (each array split over the data axis along its largest
# divisible dimension, small arrays replicated) or a function
# (path: str, shape: tuple[int, ...], data_axis_size: int) -> jax.sharding.PartitionSpec.
ShardingRule = str | Callable[[str, tuple, int], Any]


@dataclasses.dataclass(frozen=True)
class Experiment:
    init: Callable[[Any], State]  # rng key -> state
    # (state, batch, progress) -> (state, metrics). progress is a float32 scalar in [0, 1]:
    # the elapsed fraction of the budget. metrics must hold a scalar "loss".
    train_step: Callable[[State, Batch, Any], tuple[State, dict]]
    # (state, inputs int32[B, T]) -> float32[B, T, vocab]: next-token logits, position t seeing
    # only inputs[:, :t + 1] of its own row. The engine exports it and scores it elsewhere.
    logits: Callable[[State, Any], Any]
    batch_size: int  # global rows per step, divided over all devices
    sequence_length: int  # training context length T
    sharding: ShardingRule = "replicated"
    # Analytic model FLOPs per trained token (forward + backward), for MFU. Optional.
    flops_per_token: float | None = None
    # Rows per call of the exported logits when scoring; default: the engine's choice, which
    # keeps one call's logits within a fixed memory bound.
    eval_batch_size: int | None = None
    # Optional KV cache, which `autoresearch sample` uses when both are set (else it recomputes
    # the window per token with `logits`; the tokens must come out the same):
    # init_cache(state, rows, capacity) -> cache, an empty cache for `capacity` positions;
    # decode(state, cache, tokens int32[B, T], position int32 scalar) -> (float32[B, T, vocab]
    # logits of the tokens at position .. position + T - 1, the cache with them added).
    init_cache: Callable[[State, int, int], Any] | None = None
    decode: Callable[[State, Any, Any, Any], tuple[Any, Any]] | None = None
