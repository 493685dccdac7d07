"""Ahead-of-time compilation of init and the train step, before the clock starts.

Also: the persistent compilation cache, the FLOP counts of the step and of init as XLA
sees the whole (unpartitioned) program, a check of the logits' shape (the scorer runs
them, exported, in another process), and a watch for compiles while the clock runs.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp

from engine import paths
from engine.training import sharding
from engine.errors import UserError
from engine.training.flop_count import count_flops

# JAX reports each XLA compile under this event (jax._src.dispatch.BACKEND_COMPILE_EVENT);
# a persistent-cache hit reports the retrieval instead.
COMPILE_EVENTS = ("/jax/core/compile/backend_compile_duration",
                  "/jax/compilation_cache/cache_retrieval_time_sec")


def enable_persistent_cache() -> None:
    """Every compile goes to the cache, however small, so an unchanged train.py recompiles fast."""
    jax.config.update("jax_compilation_cache_dir", str(paths.compilation_cache_dir()))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@dataclasses.dataclass
class CompileWatch:
    """Counts compiles (and their seconds) while `active`; the trainer turns it on with the clock."""

    active: bool = False
    count: int = 0
    seconds: float = 0.0

    def __post_init__(self):
        self._lock = threading.Lock()

    def on_event(self, event: str, duration: float, **_) -> None:
        if self.active and event in COMPILE_EVENTS:
            with self._lock:
                self.count += 1
                self.seconds += duration


_WATCH: CompileWatch | None = None


def compile_watch() -> CompileWatch:
    """The process's single watch: JAX listeners cannot be removed portably, so register once."""
    global _WATCH
    if _WATCH is None:
        _WATCH = CompileWatch()
        jax.monitoring.register_event_duration_secs_listener(_WATCH.on_event)
    return _WATCH


@dataclasses.dataclass
class Compiled:
    init: Any  # rng -> state (sharded)
    train_step: Any  # (state, tokens int32[B, T+1], progress f32) -> (state, metrics); state donated
    state_shardings: Any
    abstract_state: Any
    step_flops: float | None
    flops_uncounted: tuple[str, ...]  # operations whose FLOPs step_flops or init_flops miss
    seconds: float
    init_flops: float | None = None  # charged to a flops budget (engine/training/clock.py)


def as_batch(tokens):
    """Rows of T+1 tokens -> the contract's batch: next-token inputs and targets."""
    return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}


def compile_experiment(exp, mesh, rng, logits_rows: int, eval_seq_len: int, vocab_size: int) -> Compiled:
    start = time.perf_counter()
    abstract_state, state_sh = plan_state(exp, mesh, rng)
    check_logits(exp.logits, _with_shardings(abstract_state, state_sh), logits_rows, eval_seq_len, vocab_size)
    lowered_init = jax.jit(exp.init, in_shardings=sharding.replicated(mesh), out_shardings=state_sh).lower(rng)
    init_flops = count_flops(exp.init, rng, xla_flops=lowered_flops)
    train_step, flops = compile_train_step(exp, mesh, abstract_state, state_sh)
    uncounted = tuple(sorted(set(flops.uncounted) | {f"{op} (in init)" for op in init_flops.uncounted}))
    return Compiled(lowered_init.compile(), train_step, state_sh, abstract_state, flops.flops, uncounted,
                    time.perf_counter() - start, init_flops.flops)


def plan_state(exp, mesh, rng):
    """The state's shapes (traced, not computed) and where each array lives."""
    abstract_state = _abstract_state(exp.init, rng)
    return abstract_state, sharding.state_shardings(abstract_state, exp.sharding, mesh)


def compile_train_step(exp, mesh, abstract_state, state_sh):
    """The step with its state donated, and its FLOPs as the unpartitioned program counts them
    (loop bodies once per iteration: engine/training/flop_count.py)."""
    replicated = sharding.replicated(mesh)
    batch_sh = sharding.batch_sharding(mesh)
    tokens = jax.ShapeDtypeStruct((exp.batch_size, exp.sequence_length + 1), jnp.int32, sharding=batch_sh)
    progress = jax.ShapeDtypeStruct((), jnp.float32, sharding=replicated)
    state_in = _with_shardings(abstract_state, state_sh)
    step_fn = _train_step_fn(exp.train_step)
    _check_step_output(step_fn, state_in, tokens, progress, abstract_state)
    lowered = jax.jit(step_fn, in_shardings=(state_sh, batch_sh, replicated),
                      out_shardings=(state_sh, replicated), donate_argnums=0
                      ).lower(state_in, tokens, progress)
    return lowered.compile(), count_flops(step_fn, state_in, tokens, progress, xla_flops=lowered_flops)


def _train_step_fn(train_step: Callable) -> Callable:
    def step(state, tokens, progress):
        return train_step(state, as_batch(tokens), progress)
    return step


def _abstract_state(init: Callable, rng):
    try:
        return jax.eval_shape(init, rng)
    except UserError:
        raise
    except Exception as error:
        raise UserError(f"Experiment.init(rng) failed to trace: {type(error).__name__}: {error}") from error


def _with_shardings(abstract_state, shardings):
    return jax.tree.map(lambda leaf, sh: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sh),
                        abstract_state, shardings)


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


def lowered_flops(lowered) -> float | None:
    """FLOPs of one call of the whole program, before it is partitioned over devices.

    The same on 1 device or 256 and out of the experiment's hands. Lowered.cost_analysis
    needs a non-PJRT-plugin backend; on GPU/TPU the lowered HLO goes to the CPU backend's
    analysis instead, which counts the same pre-optimization module.
    """
    for analyse in (lambda: lowered.cost_analysis(), lambda: _cpu_cost_analysis(lowered)):
        try:
            flops = _flops_of(analyse())
        except Exception:  # the analysis is a best effort on each backend
            flops = None
        if flops:
            return flops
    return None


def _cpu_cost_analysis(lowered):
    from jax._src import xla_bridge  # no public route to the CPU backend's HLO analysis
    from jax._src.lib import _jax
    module = lowered.compiler_ir("hlo").as_hlo_module()
    return _jax.hlo_module_cost_analysis(xla_bridge.get_backend("cpu"), module)


def _flops_of(analysis) -> float | None:
    if isinstance(analysis, (list, tuple)):  # older JAX returned one dict per computation
        analysis = analysis[0] if analysis else None
    if not analysis:
        return None
    flops = analysis.get("flops")
    return float(flops) if flops is not None and flops > 0 else None
