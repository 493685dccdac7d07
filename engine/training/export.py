"""The exported forward: `Experiment.logits` as serialized StableHLO, beside the state it reads.

Layout inside a checkpoint directory (engine/training/checkpoint.py owns the rest):

    forward/program.jaxexport   jax.export of logits(leaf_0, ..., leaf_k, inputs int32[B, T]) -> [B, T, V]
    forward/weights/            Orbax: {"leaf_0000": ..., ...}, the leaves the program reads, in its order
    forward/forward.json        what the trainer recorded (for people: the scorer trusts only the
                                program's own signature and the data's manifest)

The program takes a flat list of state leaves, not the state pytree: optax states are
namedtuples, which jax.export cannot serialize. Only the leaves `logits` reads are kept,
so the scorer loads no optimizer state. The scorer (engine/scoring/scorer.py) runs it in a
process that never imports train.py.
"""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import jax
import jax.numpy as jnp

from engine.errors import UserError
from engine.training import sharding

FORWARD_DIR = "forward"
PROGRAM_FILE = "program.jaxexport"
WEIGHTS_DIR = "weights"
META_FILE = "forward.json"
# One scoring call's logits stay under this many bytes per device (float32), and its rows
# under MAX_ROWS_PER_DEVICE: the causality probe costs a few calls, so small calls keep it cheap.
# A CPU gets less: its metric and probe reductions read the logits back, about 1.5 times faster
# per token when one call's logits stay near its cache (measured with the default train.py, one
# row of 512 tokens against four); one row per device also cannot mix rows, so a one-device
# probe needs no row passes (engine/scoring/probe.py).
LOGITS_BYTES_PER_DEVICE = 64 * 2**20
CPU_LOGITS_BYTES_PER_DEVICE = 8 * 2**20
MAX_ROWS_PER_DEVICE = 8
# Accelerator kernels whose custom calls jax.export does not promise to keep stable across
# JAX versions (cuDNN attention, Triton, Mosaic GPU). The program is scored on the machine
# and JAX version that exported it, so disabling that one check for them is sound; a
# program carried elsewhere (`autoresearch verify` on another machine) needs the same JAX.
KERNEL_CALL_PREFIXES = ("__cudnn$", "__gpu$xla.gpu.triton", "mosaic_gpu")
_CUSTOM_CALL = re.compile(r'custom_call\s*@([\w$.\-]+)|call_target_name\s*=\s*"([^"]+)"')


@dataclasses.dataclass(frozen=True)
class Forward:
    exported: jax.export.Exported
    used: tuple[bool, ...]  # per leaf of the state: does the program read it
    kernels: tuple[str, ...]  # custom-call targets exported with their safety check disabled


def scoring_rows(requested: int | None, num_devices: int, seq_len: int, vocab: int, total_rows: int,
                 platform: str = "cpu") -> int:
    """Rows per scoring call: the experiment's eval_batch_size, else as many as keep one call's
    float32 logits within LOGITS_BYTES_PER_DEVICE per device (CPU_LOGITS_BYTES_PER_DEVICE on a
    CPU), at most MAX_ROWS_PER_DEVICE (a multiple of the device count, no more than the layout
    needs)."""
    if requested:
        return int(requested)
    bound = CPU_LOGITS_BYTES_PER_DEVICE if platform == "cpu" else LOGITS_BYTES_PER_DEVICE
    per_device = max(1, min(MAX_ROWS_PER_DEVICE, bound // (seq_len * vocab * 4)))
    needed = -(-total_rows // num_devices)
    return num_devices * min(per_device, needed)


def export_forward(logits_fn, abstract_state, rows: int, seq_len: int, platform: str | None = None) -> Forward:
    """Export logits_fn(state, inputs int32[rows, seq_len]) as a function of the leaves it reads.

    Exported for one device, with no shardings: JAX partitions such a program over whatever
    mesh the caller's arguments live on, so the scorer needs neither the trainer's mesh nor
    its device count.
    """
    leaves, treedef = jax.tree.flatten(abstract_state)
    leaves = [jax.ShapeDtypeStruct(leaf.shape, leaf.dtype) for leaf in leaves]
    inputs = jax.ShapeDtypeStruct((rows, seq_len), jnp.int32)
    used = _used_leaves(logits_fn, treedef, leaves, inputs)

    def flat_logits(*args):
        kept, inputs_BT = iter(args[:-1]), args[-1]
        state = jax.tree.unflatten(treedef, [next(kept) if u else jnp.zeros(leaf.shape, leaf.dtype)
                                             for leaf, u in zip(leaves, used)])
        return logits_fn(state, inputs_BT)

    args = [leaf for leaf, u in zip(leaves, used) if u] + [inputs]
    exported = export_for(jax.jit(flat_logits), platform, *args)
    return Forward(exported, tuple(used), kernels_of(exported))


def export_for(jitted, platform: str | None, *args) -> jax.export.Exported:
    """jax.export of `jitted` for `platform` (None: this process's), with the stability check
    disabled for the accelerator kernels it calls (KERNEL_CALL_PREFIXES). Lowered once when
    JAX's own check passes (no such kernel, the usual case); else lowered first to find the
    kernels' names, then exported with their checks disabled."""
    platforms = (platform,) if platform else None
    try:
        return jax.export.export(jitted, platforms=platforms)(*args)
    except ValueError as error:
        if "custom calls whose targets have no compatibility guarantees" not in str(error):
            raise
    text = jitted.trace(*args).lower(lowering_platforms=platforms).as_text()
    checks = [jax.export.DisabledSafetyCheck.custom_call(target)
              for target in sorted(t for t in custom_call_targets(text) if is_kernel(t))]
    return jax.export.export(jitted, platforms=platforms, disabled_checks=checks)(*args)


def kernels_of(exported: jax.export.Exported) -> tuple[str, ...]:
    """The accelerator kernels (KERNEL_CALL_PREFIXES) an exported program calls."""
    return kernels_among(custom_call_targets(exported.mlir_module()))


def kernels_among(targets) -> tuple[str, ...]:
    """The accelerator kernels among custom-call targets, sorted."""
    return tuple(sorted(t for t in set(targets) if is_kernel(t)))


def _used_leaves(logits_fn, treedef, leaves, inputs) -> list[bool]:
    """Which state leaves the traced logits read (a leaf passed on whole to an inner jit counts)."""
    def flat(*args):
        return logits_fn(jax.tree.unflatten(treedef, list(args[:-1])), args[-1])
    jaxpr = jax.make_jaxpr(flat)(*leaves, inputs).jaxpr
    read = {id(v) for eqn in jaxpr.eqns for v in eqn.invars}
    read |= {id(v) for v in jaxpr.outvars}
    return [id(v) in read for v in jaxpr.invars[:-1]]


def custom_call_targets(module_text: str) -> set[str]:
    return {a or b for a, b in _CUSTOM_CALL.findall(module_text)}


def is_kernel(target: str) -> bool:
    return target.startswith(KERNEL_CALL_PREFIXES)


def stable_targets() -> set[str]:
    """Custom calls jax.export itself accepts without a disabled check (its private list)."""
    try:
        from jax._src.export import _export
        return set(_export._CUSTOM_CALL_TARGETS_GUARANTEED_STABLE)
    except (ImportError, AttributeError):  # moved in another JAX: accept what the export accepted
        return {"Sharding", "SPMDFullToShardShape", "SPMDShardToFullShape", "tpu_custom_call",
                "shape_assertion", "annotate_device_placement", "AllocateBuffer", "mosaic_gpu_v2"}


def save(directory: str | Path, forward: Forward, state, meta: dict) -> Path:
    """Write the program and the leaves it reads under directory/forward/."""
    import orbax.checkpoint as ocp

    out = Path(directory).absolute() / FORWARD_DIR
    out.mkdir(parents=True, exist_ok=True)
    kept = [leaf for leaf, u in zip(jax.tree.leaves(state), forward.used) if u]
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(out / WEIGHTS_DIR, {leaf_key(i): leaf for i, leaf in enumerate(kept)}, force=True)
        checkpointer.wait_until_finished()
    if jax.process_index() == 0:
        (out / PROGRAM_FILE).write_bytes(forward.exported.serialize())
        info = {**meta, "leaves": len(kept), "kernels": list(forward.kernels), "jax_version": jax.__version__,
                "platforms": list(forward.exported.platforms)}
        (out / META_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return out


def load_program(directory: str | Path) -> jax.export.Exported:
    path = Path(directory) / FORWARD_DIR / PROGRAM_FILE
    if not path.is_file():
        raise UserError(f"{Path(directory)} holds no exported forward ({FORWARD_DIR}/{PROGRAM_FILE}): "
                        "it was saved by an older engine or an interrupted run; train it again")
    try:
        return jax.export.deserialize(bytearray(path.read_bytes()))
    except Exception as error:  # a damaged or foreign file: flatbuffers raises several kinds
        raise UserError(f"{path} is not a program exported by this engine ({type(error).__name__}: "
                        f"{error}); train it again") from error


def restore_weights(directory: str | Path, exported: jax.export.Exported, mesh) -> list:
    """The leaves the program reads, replicated over this machine's mesh (a scoring call's
    rows are split over the devices; the weights are whole on each)."""
    import orbax.checkpoint as ocp

    whole = sharding.replicated(mesh)
    target = {leaf_key(i): jax.ShapeDtypeStruct(aval.shape, aval.dtype, sharding=whole)
              for i, aval in enumerate(exported.in_avals[:-1])}
    path = Path(directory).absolute() / FORWARD_DIR / WEIGHTS_DIR
    with ocp.StandardCheckpointer() as checkpointer:
        try:
            restored = checkpointer.restore(path, target)
        except (ValueError, KeyError, FileNotFoundError) as error:
            raise UserError(f"the weights in {path} do not fit the exported program ({error}): "
                            "train it again") from error
    return [restored[leaf_key(i)] for i in range(len(target))]


def leaf_key(index: int) -> str:
    """The name of state leaf `index` in saved weights and states."""
    return f"leaf_{index:04d}"
