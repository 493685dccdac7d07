"""The scorer: bits per byte of an exported forward, with engine code only.

It runs the causality probe (engine/scoring/probe.py) and the fixed metric
(engine/scoring/metric.py) in one sweep over the metric's batches: each batch's forward
gives the metric's sums of nats and bytes (the engine's own float32 cross-entropy) and is
the probe's base for that batch's passes. The forward and both reductions are compiled ahead
of time (`ScoringPrograms`); logits stay on the device, and only per-row sums, per-position
probe maxima and one finiteness flag per batch are fetched. The layout comes from the data's
manifest and the model from the program's own signature.

Two callers, the same code:
- the engine process of `autoresearch train` (engine/training/trainer.py) compiles the
  programs before its clock and scores the state it has just trained, in memory;
- `score()` (`autoresearch evaluate`, `verify`, the report's test_bpb) loads a saved forward
  and its weights in a fresh process that never ran train.py.
"""
from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from engine.errors import UserError
from engine.scoring import metric, probe
from engine.training import export, sharding


@dataclasses.dataclass(frozen=True)
class Score:
    status: str  # "ok" or "invalid" (the probe failed, or the logits are not finite)
    bpb: float | None
    tokens: int
    reason: str | None
    probe_passes: int
    seconds: float
    phases: dict = dataclasses.field(default_factory=dict)  # seconds of load, probe, metric
    probe_seed: int | None = None  # draws the probe's cuts, rows and tokens (verify repeats it)
    forward_calls: int = 0  # calls of the exported forward, the metric's and the probe's

    def as_dict(self, split: str) -> dict:
        return {"split": split, "status": self.status, "bpb": self.bpb, "tokens": self.tokens,
                "error": self.reason, "probe_passes": self.probe_passes, "scoring_seconds": self.seconds,
                "scoring_phases": self.phases, "probe_seed": self.probe_seed,
                "forward_calls": self.forward_calls}


@dataclasses.dataclass
class ScoringPrograms:
    """The exported forward inside the scorer's two programs, compiled for one mesh.

    base(weights, inputs int32[B, T], targets int32[B, T], token_bytes int32[V]) ->
        (logits [B, T, V], kept on the device as the probe's base; nats f32[B]; bytes i32[B];
        all-finite bool): a batch of the metric (metric.nats_and_bytes, the engine's float32
        cross-entropy);
    moved(weights, inputs int32[B, T], base logits) -> f32[B, T]: a probe pass (probe.movement_of).
    Compiled together with the forward, the reductions read the logits as they are made.
    """
    base: Callable
    moved: Callable
    rows: int
    seq_len: int
    vocab: int
    mesh: object
    seconds: float  # compile time
    bare_forward: Callable  # (weights, inputs) -> logits, compiled on first use (forward())

    def forward(self, weights, inputs):
        """The bare forward, for benchmarks that time the scorer against it: compiled on its
        first call, so scoring itself never pays for a third compile."""
        if hasattr(self.bare_forward, "lower"):  # not compiled yet
            self.bare_forward = self.bare_forward.lower(weights, inputs).compile()
        return self.bare_forward(weights, inputs)


def compile_programs(program: jax.export.Exported, weight_shardings: list, mesh) -> ScoringPrograms:
    """Compile the scoring programs of `program` with its weights placed as `weight_shardings`
    (the trained state's, or replicated for a restored checkpoint) and rows split over `mesh`.
    Nothing is read from or written to a compilation cache on disk (the caller disabled it)."""
    start = time.perf_counter()
    *weights, inputs = program.in_avals
    rows, seq_len = inputs.shape
    vocab = program.out_avals[0].shape[-1]
    batch = sharding.batch_sharding(mesh)
    whole = sharding.replicated(mesh)
    weight_avals = tuple(jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh)
                         for a, sh in zip(weights, weight_shardings))
    tokens = jax.ShapeDtypeStruct((rows, seq_len), jnp.int32, sharding=batch)
    table = jax.ShapeDtypeStruct((vocab,), jnp.int32, sharding=whole)
    logits = jax.ShapeDtypeStruct(program.out_avals[0].shape, program.out_avals[0].dtype, sharding=batch)

    def base_batch(w, inputs_BT, targets_BT, token_bytes_V):
        logits_BTV = program.call(*w, inputs_BT)
        nats_B, bytes_B = metric.nats_and_bytes(logits_BTV, targets_BT, token_bytes_V)
        return logits_BTV, nats_B, bytes_B, probe.all_finite(logits_BTV)

    base = jax.jit(base_batch, out_shardings=(batch, whole, whole, whole)
                   ).lower(weight_avals, tokens, tokens, table).compile()
    moved = jax.jit(lambda w, x, base_BTV: probe.movement_of(base_BTV, program.call(*w, x)),
                    out_shardings=whole).lower(weight_avals, tokens, logits).compile()
    bare_forward = jax.jit(lambda w, x: program.call(*w, x), out_shardings=batch)
    return ScoringPrograms(base, moved, rows, seq_len, vocab, mesh, time.perf_counter() - start, bare_forward)


def score_weights(programs: ScoringPrograms, weights: list, tokens: np.ndarray, token_bytes: np.ndarray,
                  manifest: dict, seed: int, split: str = "val",
                  on_batch: Callable[[int, int, float], None] | None = None) -> Score:
    """Probe and score `weights` (device arrays placed as compiled) on the split's `tokens`.

    One sweep over the metric's batches: each batch's forward is the metric's, and the probe's
    base for that batch's passes (probe.plan, drawn from `seed`). on_batch(tokens_scored,
    tokens_total, seconds) hears progress after each batch. A leak stops the sweep at once.
    """
    start = time.perf_counter()
    constants = manifest["constants"]
    rows_RT1 = metric.eval_rows(tokens, int(constants["eval_tokens"]), programs.seq_len)
    scored_tokens = len(rows_RT1) * programs.seq_len
    rows_RT1 = metric.pad_rows(rows_RT1, programs.rows, int(manifest["bos_id"]))
    batches = len(rows_RT1) // programs.rows
    by_batch = probe.plan_by_batch(probe.plan(seed, batches, programs.rows, programs.seq_len), batches)
    mesh = programs.mesh
    put = lambda host_rows: sharding.global_batch(sharding.process_share(host_rows), mesh, len(host_rows))
    gather = jax.jit(lambda x: x, out_shardings=sharding.replicated(mesh))  # every host sees all of it
    fetch = lambda x: np.asarray(gather(x)) if jax.process_count() > 1 else np.asarray(x)
    table = jax.device_put(np.asarray(token_bytes, np.int32), sharding.replicated(mesh))
    weights = tuple(weights)
    sums, calls = [], 0
    for index, batch_passes in enumerate(by_batch):
        rows = rows_RT1[index * programs.rows:(index + 1) * programs.rows]
        logits_BTV, nats_B, bytes_B, finite = programs.base(weights, put(rows[:, :-1]), put(rows[:, 1:]), table)
        sums.append((nats_B, bytes_B))
        moved_of = lambda inputs, base_BTV=logits_BTV: programs.moved(weights, put(inputs), base_BTV)
        reason = probe.check_batch(moved_of, rows[:, :-1], index, batch_passes, programs.vocab, seed, fetch, finite)
        calls += 1 + len(batch_passes)
        del logits_BTV
        if reason is not None:
            seconds = time.perf_counter() - start
            return Score("invalid", None, 0, reason, calls - index - 1, seconds,
                         {"probe": seconds}, seed, calls)
        if on_batch is not None:
            on_batch(min((index + 1) * programs.rows * programs.seq_len, scored_tokens), scored_tokens,
                     time.perf_counter() - start)
    nats = sum(float(np.sum(np.asarray(fetch(n), dtype=np.float64))) for n, _ in sums)
    nbytes = sum(int(np.sum(np.asarray(fetch(b), dtype=np.int64))) for _, b in sums)
    bpb = metric.bits_per_byte(nats, nbytes)
    seconds = time.perf_counter() - start
    phases = _split_seconds(seconds, calls, batches)
    passes = calls - batches
    if not math.isfinite(bpb):
        return Score("invalid", None, scored_tokens, f"the model's logits hold NaN or infinity on {split} text "
                     "(its cross-entropy is not finite)", passes, seconds, phases, seed, calls)
    return Score("ok", bpb, scored_tokens, None, passes, seconds, phases, seed, calls)


def _split_seconds(seconds: float, calls: int, batches: int) -> dict:
    """The sweep's seconds shared between the metric (its own forward calls) and the probe
    (the rest), in proportion to their forward calls: one sweep does both."""
    metric_seconds = seconds * batches / calls if calls else seconds
    return {"metric": metric_seconds, "probe": seconds - metric_seconds}


def score(checkpoint: str | Path, data_dir: str | Path, split: str, probe_seed: int | None = None,
          on_batch: Callable[[int, int, float], None] | None = None) -> Score:
    """Probe, then score the exported forward in `checkpoint` on `split` of the cache in `data_dir`;
    the probe's seed is drawn now unless given (to repeat a recorded probe)."""
    from engine.data import cache as data
    from engine.data import checksums

    start = time.perf_counter()
    manifest = checksums.verify(data_dir, splits=(split,))  # the files it reads, against their sha256
    seq_len, vocab = int(manifest["constants"]["sequence_length"]), int(manifest["vocab_size"])
    program = export.load_program(checkpoint)
    rows = check_program(program, seq_len, vocab)
    mesh = sharding.make_mesh()
    sharding.check_divisible(rows, mesh, "the exported forward's batch")
    weights = export.restore_weights(checkpoint, program, mesh)
    load_seconds = time.perf_counter() - start
    programs = compile_programs(program, [sharding.replicated(mesh)] * len(weights), mesh)
    tokens, _ = data.load_split(data_dir, split)
    seed = probe.draw_seed() if probe_seed is None else int(probe_seed)
    result = score_weights(programs, weights, tokens, data.load_token_bytes(data_dir), manifest, seed, split,
                           on_batch)
    phases = {"load": load_seconds, "compile": programs.seconds, **result.phases}
    return dataclasses.replace(result, seconds=time.perf_counter() - start, phases=phases)


def check_program(program, seq_len: int, vocab: int) -> int:
    """The program must be logits(leaves..., int32[B, seq_len]) -> float[B, seq_len, vocab] for
    this platform, calling only custom calls JAX keeps stable or this machine's kernels; returns B."""
    platform = jax.default_backend()
    platforms = [{"cuda": "gpu", "rocm": "gpu"}.get(p, p) for p in program.platforms]
    if platform not in platforms:
        raise UserError(f"the exported forward was built for {', '.join(program.platforms)}, and this "
                        f"machine runs {platform}: score it where it was trained")
    if not program.in_avals:
        raise UserError("the exported forward takes no inputs: it was not written by this engine")
    inputs = program.in_avals[-1]
    if inputs.dtype != jnp.int32 or len(inputs.shape) != 2 or inputs.shape[1] != seq_len:
        raise UserError(f"the exported forward takes {inputs.str_short()} tokens, but this dataset scores "
                        f"rows of {seq_len}: score it with the cache it was trained on (--data)")
    outputs = program.out_avals
    want = (inputs.shape[0], seq_len, vocab)
    if len(outputs) != 1 or tuple(outputs[0].shape) != want or not jnp.issubdtype(outputs[0].dtype, jnp.floating):
        shown = ", ".join(o.str_short() for o in outputs)
        raise UserError(f"the exported forward returns {shown}, not float logits {list(want)}: "
                        "Experiment.logits must return [batch, time, vocab]")
    unknown = sorted(t for t in export.custom_call_targets(program.mlir_module())
                     if t not in export.stable_targets() and not export.is_kernel(t))
    if unknown:
        raise UserError(f"the exported forward calls {', '.join(unknown)}, which the scorer does not run: "
                        "use jax.numpy, lax and the kernels in model/ for the forward")
    return int(inputs.shape[0])

