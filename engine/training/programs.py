"""An experiment as exported programs: what the tracer writes and the trainer runs.

`trace` (in the tracer process, the one that imported train.py) exports the experiment's
functions over the state's flat leaf list (optax states are namedtuples, which jax.export
cannot serialize as pytrees). `load` (in the trainer, `verify --retrain` and sampling)
reads them back and trusts nothing the tracer said about them: shapes come from the
programs' own signatures, and the checks below hold for every program:

- the state leaves agree between init, train_step and the spec, and logits reads leaves
  of the state;
- one bound on everything the tracer hands on: the programs together are at most
  MAX_PROGRAM_BYTES serialized (constants of any kind, splats and structure all take room
  there), and carry at most MAX_CONSTANT_BYTES of constants together (every constant, a
  splat or a scalar as one element, each element at its type's real width: stablehlo.py).
  Work the tracer did outside the budget (pretraining on text it could read, or on nothing)
  cannot come back as weights;
- custom calls are JAX's stable ones or the accelerator kernels of `export.is_kernel`.
Files: the names in FILES, plus spec.json.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from engine.errors import UserError
from engine.training import export, sharding, stablehlo

SPEC_FILE = "spec.json"
FILES = {"init": "init.jaxexport", "train_step": "train_step.jaxexport", "logits": "forward.jaxexport",
         "init_cache": "init_cache.jaxexport", "decode": "decode.jaxexport"}
# Data all programs together may carry as constants (a rotary table of a few thousand
# positions is computed in the program instead). 64 KiB holds a unigram table of a 16k
# vocabulary: about what a model learns in its first steps.
MAX_CONSTANT_BYTES = 64 * 2**10
# All programs together, serialized. The default train.py's five programs take 82 KB on CPU
# and 230 KB for TPU (splash kernels included), at twice its depth 112 KB and 348 KB: this
# leaves room for about six times that, not for a pretrained model spelled out in a program.
MAX_PROGRAM_BYTES = 2 * 2**20
PLATFORM_NAMES = {"cpu": "cpu", "gpu": "cuda", "tpu": "tpu"}


@dataclasses.dataclass
class Programs:
    init: jax.export.Exported
    train_step: jax.export.Exported
    logits: jax.export.Exported
    spec: dict  # batch_size, sequence_length, leaves [{path, shape, dtype, spec, used}], ...
    init_cache: jax.export.Exported | None = None
    decode: jax.export.Exported | None = None
    _facts: dict = dataclasses.field(default_factory=dict, repr=False)
    _sizes: dict = dataclasses.field(default_factory=dict, repr=False)

    def facts(self, name: str) -> stablehlo.ProgramFacts:
        """FLOPs, constants and custom calls of one program, read from its StableHLO once."""
        if name not in self._facts:
            self._facts[name] = stablehlo.read(getattr(self, name).mlir_module())
        return self._facts[name]

    def serialized_bytes(self, name: str) -> int:
        """Bytes of one program as the tracer hands it on (its file, or serialized now)."""
        if name not in self._sizes:
            self._sizes[name] = len(getattr(self, name).serialize())
        return self._sizes[name]

    def names(self) -> list[str]:
        return [name for name in FILES if getattr(self, name) is not None]

    @property
    def leaves(self) -> list[dict]:
        return self.spec["leaves"]

    def partition_specs(self) -> list[PartitionSpec]:
        return [PartitionSpec(*leaf["spec"]) for leaf in self.leaves]

    def used(self) -> list[bool]:
        return [bool(leaf["used"]) for leaf in self.leaves]


# ---------------------------------------------------------------- tracer side
def trace(exp, ctx, layout: dict, platform: str | None = None) -> Programs:
    """Export `exp` for the run's platform (or `platform`: "cpu", "cuda", "tpu") and device
    count; called in the tracer only."""
    from engine.training import compile as compiling

    platform = platform or PLATFORM_NAMES[ctx.platform]
    key_data = jax.ShapeDtypeStruct((2,), jnp.uint32)
    abstract_state = compiling.abstract_state(exp.init, jax.random.key(0))
    leaves, treedef = jax.tree.flatten(abstract_state)
    structs = [jax.ShapeDtypeStruct(leaf.shape, leaf.dtype) for leaf in leaves]
    rows = export.scoring_rows(exp.eval_batch_size, ctx.num_devices, ctx.eval_sequence_length, ctx.vocab_size,
                               int(layout["eval_tokens"]) // ctx.eval_sequence_length, platform)
    compiling.check_logits(exp.logits, abstract_state, rows, ctx.eval_sequence_length, ctx.vocab_size)
    compiling.check_step_output(exp, abstract_state)

    def init_leaves(data):
        return jax.tree.leaves(exp.init(jax.random.wrap_key_data(data)))

    def step_leaves(*args):
        state = jax.tree.unflatten(treedef, list(args[:-2]))
        new_state, metrics = exp.train_step(state, compiling.as_batch(args[-2]), args[-1])
        return (*jax.tree.leaves(new_state), jnp.asarray(metrics["loss"], jnp.float32))

    tokens = jax.ShapeDtypeStruct((exp.batch_size, exp.sequence_length + 1), jnp.int32)
    progress = jax.ShapeDtypeStruct((), jnp.float32)
    forward = export.export_forward(exp.logits, abstract_state, rows, ctx.eval_sequence_length, platform)
    traced = Programs(
        init=_export(init_leaves, platform, key_data),
        train_step=_export(step_leaves, platform, *structs, tokens, progress),
        logits=forward.exported,
        spec=_spec(exp, ctx, abstract_state, forward.used, rows),
    )
    if exp.init_cache is not None and exp.decode is not None:
        traced.init_cache, traced.decode = _export_decoding(exp, treedef, structs, ctx, platform)
    return traced


def _export(fn, platform: str, *args) -> jax.export.Exported:
    return export.export_for(jax.jit(fn), platform, *args)


def _export_decoding(exp, treedef, structs, ctx, platform: str):
    """init_cache for one row and the whole eval context; decode one token at a time."""
    capacity = ctx.eval_sequence_length
    state_of = lambda leaves: jax.tree.unflatten(treedef, list(leaves))
    cache = jax.eval_shape(lambda *leaves: exp.init_cache(state_of(leaves), 1, capacity), *structs)
    cache_leaves, cache_tree = jax.tree.flatten(cache)
    n = len(structs)

    def init_cache(*leaves):
        return jax.tree.leaves(exp.init_cache(state_of(leaves), 1, capacity))

    def decode(*args):
        cache_now = jax.tree.unflatten(cache_tree, list(args[n:-2]))
        logits, new_cache = exp.decode(state_of(args[:n]), cache_now, args[-2], args[-1])
        return (logits.astype(jnp.float32), *jax.tree.leaves(new_cache))

    token = jax.ShapeDtypeStruct((1, 1), jnp.int32)
    position = jax.ShapeDtypeStruct((), jnp.int32)
    cache_structs = [jax.ShapeDtypeStruct(c.shape, c.dtype) for c in cache_leaves]
    return (_export(init_cache, platform, *structs),
            _export(decode, platform, *structs, *cache_structs, token, position))


def _spec(exp, ctx, abstract_state, used, rows: int) -> dict:
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(abstract_state)[0]]
    specs = sharding.state_specs(abstract_state, exp.sharding, ctx.num_devices)
    leaves = [{"path": path, "shape": list(leaf.shape), "dtype": str(leaf.dtype), "used": bool(u),
               "spec": [_axis(a) for a in spec]}
              for path, leaf, spec, u in zip(paths, jax.tree.leaves(abstract_state), specs, used)]
    return {"batch_size": int(exp.batch_size), "sequence_length": int(exp.sequence_length),
            "flops_per_token": float(exp.flops_per_token) if exp.flops_per_token else None,
            "eval_rows": rows, "num_params": count_params(abstract_state), "platform": ctx.platform,
            "num_devices": ctx.num_devices, "jax_version": jax.__version__, "leaves": leaves}


def _axis(axis):
    return list(axis) if isinstance(axis, tuple) else axis


def save(directory: Path, traced: Programs) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, file in FILES.items():
        program = getattr(traced, name)
        if program is not None:
            (directory / file).write_bytes(program.serialize())
    (directory / SPEC_FILE).write_text(json.dumps(traced.spec, indent=1) + "\n")


def copy(source: Path, destination: Path) -> None:
    """The program files (and nothing else the tracer left) into `destination`."""
    import shutil

    destination.mkdir(parents=True, exist_ok=True)
    for file in [*FILES.values(), SPEC_FILE]:
        if (Path(source) / file).is_file():
            shutil.copyfile(Path(source) / file, destination / file)


# ---------------------------------------------------------------- trainer side
def load(directory: Path, platform: str, num_devices: int) -> Programs:
    """The programs in `directory`, checked against each other and this run (UserError else)."""
    directory = Path(directory)
    try:
        spec = json.loads((directory / SPEC_FILE).read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"{directory} holds no readable {SPEC_FILE} ({error}): trace train.py again") from None
    present = {name: directory / file for name, file in FILES.items() if (directory / file).is_file()}
    for name in ("init", "train_step", "logits"):
        if name not in present:
            raise UserError(f"{directory} holds no {FILES[name]}: trace train.py again")
    sizes = {name: path.stat().st_size for name, path in present.items()}
    check_size(sizes)  # before parsing anything: a huge file is refused unread
    programs = Programs(spec=spec, **{name: _read(path) for name, path in present.items()}, _sizes=sizes)
    check(programs, platform, num_devices)
    return programs


def _read(path: Path) -> jax.export.Exported:
    try:
        return jax.export.deserialize(bytearray(path.read_bytes()))
    except Exception as error:  # a damaged or foreign file: flatbuffers raises several kinds
        raise UserError(f"{path} is not a program exported by this engine ({type(error).__name__}): "
                        "trace train.py again") from error


def check(programs: Programs, platform: str, num_devices: int) -> None:
    """Every rule of the module docstring; the first one broken is raised as a UserError."""
    leaves = _checked_leaves(programs.spec)
    _check_signature(programs, leaves)
    check_size({name: programs.serialized_bytes(name) for name in programs.names()})
    for name in programs.names():
        _check_program(programs, name, platform, num_devices)
    check_constants({name: programs.facts(name).constant_bytes for name in programs.names()})
    for field in ("batch_size", "sequence_length", "eval_rows"):
        value = programs.spec.get(field)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise UserError(f"the traced experiment's {field} is {value!r}, not a positive int")
    batch = programs.train_step.in_avals[len(leaves)]
    if tuple(batch.shape) != (programs.spec["batch_size"], programs.spec["sequence_length"] + 1):
        raise UserError(f"train_step takes tokens {batch.str_short()}, not the experiment's batch")
    inputs = programs.logits.in_avals[-1]
    if inputs.shape[0] != programs.spec["eval_rows"]:
        raise UserError(f"the forward takes {inputs.str_short()}, not the {programs.spec['eval_rows']} rows "
                        "the tracer said")


def _checked_leaves(spec: dict) -> list[dict]:
    leaves = spec.get("leaves")
    if not isinstance(leaves, list) or not leaves:
        raise UserError("the traced experiment lists no state leaves: init must return arrays")
    for leaf in leaves:
        axes = leaf.get("spec") or []
        allowed = (None, sharding.DATA_AXIS, [sharding.DATA_AXIS])
        if not isinstance(axes, list) or len(axes) > len(leaf.get("shape", ())) or any(a not in allowed for a in axes):
            raise UserError(f"state{leaf.get('path')} has the partition {axes}: only the \"data\" axis exists")
    return leaves


def _check_signature(programs: Programs, leaves: list[dict]) -> None:
    avals = [(tuple(leaf["shape"]), str(leaf["dtype"])) for leaf in leaves]
    of = lambda seq: [(tuple(a.shape), str(a.dtype)) for a in seq]
    n = len(avals)
    if of(programs.init.out_avals) != avals:
        raise UserError("init's outputs differ from the state the tracer described")
    step_in, step_out = programs.train_step.in_avals, programs.train_step.out_avals
    if len(step_in) != n + 2 or of(step_in[:n]) != avals or of(step_out[:n]) != avals or len(step_out) != n + 1:
        raise UserError("train_step must take and return the state's leaves unchanged in shape and dtype")
    used = [a for a, leaf in zip(avals, leaves) if leaf.get("used")]
    if of(programs.logits.in_avals[:-1]) != used:
        raise UserError("the forward's inputs are not the state leaves the tracer said it reads")


def _check_program(programs: Programs, name: str, platform: str, num_devices: int) -> None:
    program = getattr(programs, name)
    if list(program.platforms) != [PLATFORM_NAMES[platform]]:
        raise UserError(f"{name} was exported for {', '.join(program.platforms)}, and this run is on {platform}")
    if program.nr_devices not in (1, num_devices):
        raise UserError(f"{name} was exported for {program.nr_devices} devices; this run has {num_devices}")
    facts = programs.facts(name)
    unknown = sorted(t for t in facts.custom_calls
                     if t not in export.stable_targets() and not export.is_kernel(t) and t not in stablehlo.NO_WORK_CALLS
                     and not t.startswith("lapack_"))
    if unknown:
        raise UserError(f"{name} calls {', '.join(unknown)}, which the engine does not run: use jax.numpy, lax "
                        "and the kernels in model/")


def check_size(sizes: dict[str, int]) -> None:
    """The programs together within MAX_PROGRAM_BYTES serialized. `sizes`: program -> bytes."""
    total = sum(sizes.values())
    if total > MAX_PROGRAM_BYTES:
        raise UserError(
            f"the exported programs take {total:,} bytes together ({_listed(sizes)}), more than the "
            f"{MAX_PROGRAM_BYTES:,} bytes the engine accepts from the tracer: data carried in a program, in its "
            "constants or in its structure, would be training outside the budget. Put learned values in the "
            "state (init computes them from the key), compute tables inside the program (jnp.arange, "
            "jnp.cos ...), and loop over repeated layers (jax.lax.scan, nnx.scan) instead of unrolling them")


def check_constants(constant_bytes: dict[str, int]) -> None:
    """The programs' constants together within MAX_CONSTANT_BYTES. `constant_bytes`: program -> bytes."""
    total = sum(constant_bytes.values())
    if total > MAX_CONSTANT_BYTES:
        raise UserError(
            f"the exported programs carry {total:,} bytes of constants together ({_listed(constant_bytes)}), "
            f"more than {MAX_CONSTANT_BYTES:,} bytes: data baked in by the tracer would be training outside the "
            "budget. Compute tables inside the program (jnp.arange, jnp.cos ...) or put them in the state")


def _listed(bytes_by_program: dict[str, int]) -> str:
    return ", ".join(f"{name} {count:,}" for name, count in bytes_by_program.items())


def leaf_avals(programs: Programs) -> list[jax.ShapeDtypeStruct]:
    return [jax.ShapeDtypeStruct(tuple(leaf["shape"]), jnp.dtype(leaf["dtype"])) for leaf in programs.leaves]


def count_params(abstract_state) -> int:
    """Elements of the state's `params` entry (key or attribute) if it has one, else of all of it."""
    from model import flops

    return flops.count_params(_params_entry(abstract_state))


def _params_entry(state):
    if isinstance(state, dict) and "params" in state:
        return state["params"]
    if hasattr(state, "params") and not callable(state.params):
        return state.params
    if dataclasses.is_dataclass(state) and any(f.name == "params" for f in dataclasses.fields(state)):
        return state.params
    return state
