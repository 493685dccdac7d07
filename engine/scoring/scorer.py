"""The scorer: bits per byte of a saved experiment, in a process that never runs train.py.

It loads the exported forward and the state leaves it reads (engine/training/export.py),
runs the causality probe (engine/scoring/probe.py) on some of the metric's batches, then the
fixed metric (engine/scoring/metric.py) with the engine's own float32 cross-entropy, one
scoring call of rows at a time. The layout comes from the data's manifest and the model
from the program's own signature: nothing the trainer process wrote about itself is read.
`autoresearch train` runs it after the trainer process has exited; `evaluate`, `verify`
and the report's test_bpb run the same code.
"""
from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

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
    probe_seed: int | None = None  # draws the probe's batches, cuts and tokens (verify repeats it)

    def as_dict(self, split: str) -> dict:
        return {"split": split, "status": self.status, "bpb": self.bpb, "tokens": self.tokens,
                "error": self.reason, "probe_passes": self.probe_passes, "scoring_seconds": self.seconds,
                "scoring_phases": self.phases, "probe_seed": self.probe_seed}


def score(checkpoint: str | Path, data_dir: str | Path, split: str, probe_seed: int | None = None) -> Score:
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
    phases = {"load": time.perf_counter() - start}
    tokens, _ = data.load_split(data_dir, split)
    constants = manifest["constants"]
    layout = metric.eval_rows(tokens, int(constants["eval_tokens"]), seq_len)
    put = lambda host_rows: sharding.global_batch(sharding.process_share(host_rows), mesh, len(host_rows))
    logits_of = jax.jit(lambda w, inputs: program.call(*w, inputs))
    seed = probe.draw_seed() if probe_seed is None else int(probe_seed)
    gather = jax.jit(lambda x: x, out_shardings=sharding.replicated(mesh))  # every host sees all of it
    checked = probe.check(lambda inputs: logits_of(weights, put(inputs)),
                          metric.pad_rows(layout, rows, int(manifest["bos_id"]))[:, :-1], rows, vocab, seed,
                          fetch=lambda x: np.asarray(gather(x)))
    phases["probe"] = time.perf_counter() - start - phases["load"]  # the first call compiles
    if not checked.ok:
        return Score("invalid", None, 0, checked.reason, checked.passes, time.perf_counter() - start, phases, seed)
    nats_and_bytes = jax.jit(metric.nats_and_bytes, out_shardings=sharding.replicated(mesh))

    def step(w, batch, table):
        return nats_and_bytes(logits_of(w, batch[:, :-1]), batch[:, 1:], table)

    result = metric.evaluate_bpb(step, weights, tokens, data.load_token_bytes(data_dir),
                                 eval_tokens=int(constants["eval_tokens"]), sequence_length=seq_len,
                                 batch_size=rows, pad_id=int(manifest["bos_id"]), put=put)
    seconds = time.perf_counter() - start
    phases["metric"] = seconds - phases["load"] - phases["probe"]
    if not math.isfinite(result.bpb):
        return Score("invalid", None, result.tokens, f"the model's logits hold NaN or infinity on {split} text "
                     "(its cross-entropy is not finite)", checked.passes, seconds, phases, seed)
    return Score("ok", result.bpb, result.tokens, None, checked.passes, seconds, phases, seed)


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

