"""Ahead-of-time compilation of the exported init and train step, before the clock starts.

Also: the persistent compilation cache (the trainer's alone), the FLOP counts of the
programs, and the tracer's checks of what train.py's functions return (the state's
shapes, the step's metrics, the logits' shape) before they are exported.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp

from engine import paths
from engine.errors import UserError
from engine.training import sharding
from jax.sharding import NamedSharding

def enable_persistent_cache() -> None:
    """The trainer's compiles go to the cache, however small, so an unchanged program recompiles
    fast. Only the trainer reads it: the tracer may not touch it (engine/training/sandbox.py),
    and the scorer uses none (`disable_persistent_cache`)."""
    jax.config.update("jax_compilation_cache_dir", str(paths.compilation_cache_dir()))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def disable_persistent_cache() -> None:
    """No compiled executable from disk: the scorer compiles what it runs itself, so a file
    dropped in any cache folder cannot change a score."""
    jax.config.update("jax_enable_compilation_cache", False)
    jax.config.update("jax_compilation_cache_dir", None)


@dataclasses.dataclass
class Compiled:
    init: Any  # key_data uint32[2] -> tuple of state leaves (sharded)
    train_step: Any  # (leaves, tokens int32[B, T+1], progress f32) -> (leaves, loss); leaves donated
    state_shardings: list
    step_flops: float | None
    flops_uncounted: tuple[str, ...]  # what step_flops or init_flops leave out
    seconds: float
    init_flops: float | None = None  # charged to a flops budget (engine/training/clock.py)


def as_batch(tokens):
    """Rows of T+1 tokens -> the contract's batch: next-token inputs and targets."""
    return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}


def compile_programs(programs, mesh) -> Compiled:
    """Compile the exported init and train_step on this mesh with the engine's shardings, and
    count their FLOPs from the programs themselves (engine/training/stablehlo.py, read once
    by the checks in engine/training/programs.py)."""
    start = time.perf_counter()
    replicated = sharding.replicated(mesh)
    state_sh = [NamedSharding(mesh, spec) for spec in programs.partition_specs()]
    leaves = [jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh)
              for a, sh in zip(programs.train_step.in_avals[:len(state_sh)], state_sh)]
    key_data = jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=replicated)
    init = jax.jit(lambda data: tuple(programs.init.call(data)), in_shardings=replicated,
                   out_shardings=tuple(state_sh)).lower(key_data).compile()
    tokens_aval = programs.train_step.in_avals[len(state_sh)]
    tokens = jax.ShapeDtypeStruct(tokens_aval.shape, jnp.int32, sharding=sharding.batch_sharding(mesh))
    progress = jax.ShapeDtypeStruct((), jnp.float32, sharding=replicated)

    def step(state, batch, progress_now):
        *new_state, loss = programs.train_step.call(*state, batch, progress_now)
        return tuple(new_state), {"loss": loss}

    train_step = jax.jit(step, in_shardings=(tuple(state_sh), sharding.batch_sharding(mesh), replicated),
                         out_shardings=(tuple(state_sh), replicated), donate_argnums=0
                         ).lower(tuple(leaves), tokens, progress).compile()
    step_facts, init_facts = programs.facts("train_step"), programs.facts("init")
    uncounted = tuple(sorted(set(step_facts.uncounted) | {f"{op} (in init)" for op in init_facts.uncounted}))
    return Compiled(init, train_step, state_sh, step_facts.flops or None, uncounted,
                    time.perf_counter() - start, init_facts.flops)


def check_step_output(exp, state) -> None:
    """train_step must return (state shaped like init's, metrics with a scalar loss)."""
    tokens = jax.ShapeDtypeStruct((exp.batch_size, exp.sequence_length + 1), jnp.int32)
    progress = jax.ShapeDtypeStruct((), jnp.float32)
    _check_step_output(lambda s, t, p: exp.train_step(s, as_batch(t), p), state, tokens, progress, state)


def abstract_state(init: Callable, rng):
    """The state's shapes, traced, not computed (in the tracer)."""
    try:
        return jax.eval_shape(init, rng)
    except UserError:
        raise
    except Exception as error:
        raise UserError(f"Experiment.init(rng) failed to trace: {type(error).__name__}: {error}") from error


def _check_step_output(step_fn, state, tokens, progress, abstract_state) -> None:
    out = jax.eval_shape(step_fn, state, tokens, progress)
    if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], dict)):
        raise UserError("Experiment.train_step must return (new_state, metrics) with metrics a dict; "
                        f"it returned {jax.tree.structure(out)}")
    new_state, metrics = out
    _check_same_state(abstract_state, new_state)
    loss = metrics.get("loss")
    if loss is None or getattr(loss, "shape", None) != ():
        raise UserError("Experiment.train_step's metrics must hold a scalar \"loss\"; got "
                        f"{ {k: getattr(v, 'shape', v) for k, v in metrics.items()} }")


def _check_same_state(before, after) -> None:
    if jax.tree.structure(before) != jax.tree.structure(after):
        raise UserError(f"Experiment.train_step changed the state's structure: {_tree_diff(before, after)}; "
                        "a step must return a state shaped exactly like init's")
    paths_before = jax.tree_util.tree_flatten_with_path(before)[0]
    for (path, old), new in zip(paths_before, jax.tree.leaves(after)):
        if (old.shape, old.dtype) != (new.shape, new.dtype):
            raise UserError(f"Experiment.train_step changed state{jax.tree_util.keystr(path)} from "
                            f"{old.dtype}{list(old.shape)} to {new.dtype}{list(new.shape)}: a step must "
                            "keep every shape and dtype (cast back, or change init)")


def _tree_diff(before, after, shown: int = 3) -> str:
    paths_of = lambda tree: {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]}
    old, new = paths_of(before), paths_of(after)
    parts = [f"{word} {_listed(sorted(paths), shown)}"
             for word, paths in (("missing", old - new), ("new", new - old)) if paths]
    return ", ".join(parts) or f"same leaves in other containers ({jax.tree.structure(after)})"


def _listed(paths: list, shown: int) -> str:
    more = f" and {len(paths) - shown} more" if len(paths) > shown else ""
    return ", ".join(f"state{p}" for p in paths[:shown]) + more


def check_logits(logits, state, rows: int, seq_len: int, vocab_size: int) -> None:
    """Experiment.logits must map int32[rows, seq_len] to float [rows, seq_len, vocab]."""
    inputs = jax.ShapeDtypeStruct((rows, seq_len), jnp.int32)
    try:
        out = jax.eval_shape(logits, state, inputs)
    except UserError:
        raise
    except Exception as error:
        raise UserError(f"Experiment.logits(state, inputs int32[{rows}, {seq_len}]) failed to trace: "
                        f"{type(error).__name__}: {error}") from error
    want = (rows, seq_len, vocab_size)
    if getattr(out, "shape", None) != want or not jnp.issubdtype(getattr(out, "dtype", jnp.int32), jnp.floating):
        got = f"{getattr(out, 'dtype', '')}{list(getattr(out, 'shape', ()))}" if hasattr(out, "shape") else out
        raise UserError(f"Experiment.logits must return float next-token logits {list(want)} for inputs "
                        f"[{rows}, {seq_len}]; it returned {got}")
