"""The tracer process: the one place train.py's Python runs.

The trainer (engine/training/trainer.py) starts it as soon as it starts, and sends it the
run's layout (platform, device count, vocabulary, budget, seed) as one JSON line on its
standard input once its devices are up. The tracer then confines itself (engine/confine.py:
the kernel refuses it the network, the data, the caches and other runs, and writes outside
its output folder) and imports train.py under the audit hooks (engine/training/sandbox.py: the same
rules for Python's own calls, plus no processes, no network), calls `experiment(ctx)`, and
exports with `jax.export`:

    init.jaxexport        init(key_data uint32[2]) -> leaves
    train_step.jaxexport  train_step(leaves..., tokens int32[B, T+1], progress f32[]) -> (leaves..., loss f32[])
    forward.jaxexport     logits(used leaves..., inputs int32[R, T_eval]) -> f32[R, T_eval, V]
    init_cache.jaxexport, decode.jaxexport   (when the experiment has them; for sampling)
    spec.json             the plain fields and each leaf's path, shape, dtype and PartitionSpec

and exits. It holds no data, no clock and no compilation cache any other process reads;
it runs on the CPU (on a GPU machine, on the GPU without preallocating: cuDNN's lowering
needs the device) and lowers for the run's platform. `jax.export` refuses host callbacks,
so nothing of train.py's Python can run after this process has ended. Everything it
writes is checked by the trainer (engine/training/programs.py) before use.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import traceback
from pathlib import Path

_exit = os._exit  # bound before train.py is imported

TRAIN_MODULE_NAME = "autoresearch_train_py"
LAYOUT_FIELDS = ("platform", "device_kind", "num_devices", "num_processes", "vocab_size", "bos_id",
                 "eval_sequence_length", "eval_tokens", "budget_mode", "budget_value", "seed", "data_dir")


def main(args: argparse.Namespace) -> int:
    """`autoresearch trace TRAIN_PY --out DIR`: the layout arrives on stdin; the programs go to DIR.
    Exit 0 with DIR/spec.json written, else 1 with DIR/error.json saying why."""
    out = Path(args.out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    _confine(out, Path(args.data))  # first: Landlock holds only for threads started after it
    import jax  # noqa: F401  (imported while the trainer brings its devices up)
    import flax.nnx  # noqa: F401
    import optax  # noqa: F401
    layout = json.loads(sys.stdin.readline() or "{}")
    train_py = Path(args.path).absolute()
    try:
        _trace(train_py, out, layout)
        code = 0
    except BaseException as error:  # train.py may raise anything, SystemExit included
        code = _write_error(out, error, train_py)
    sys.stdout.flush()
    sys.stderr.flush()
    _exit(code)  # no atexit handler or thread of train.py runs on


def _trace(path: Path, out: Path, layout: dict) -> None:
    import jax

    from engine import paths
    from engine.training import programs, sandbox
    from model import attention

    missing = [name for name in LAYOUT_FIELDS if name not in layout]
    if missing:
        raise RuntimeError(f"the trainer sent no {', '.join(missing)}")
    _choose_platform(jax, layout["platform"])
    attention.set_target(layout["platform"], layout["num_devices"])
    hooks = sandbox.install_for_tracer(out, Path(layout["data_dir"]), paths.cache_root(),
                                       paths.compilation_cache_dir())
    ctx = make_context(layout)
    exp = load_experiment(path, ctx)
    hooks.check()
    traced = programs.trace(exp, ctx, layout)
    hooks.check()
    programs.save(out, traced)


def _confine(out: Path, data_dir: Path) -> None:
    """Kernel rules (engine/confine.py) before any thread exists: no reading the data, the data
    cache, the trainer's compilation cache or other runs; writing only in `out` (and /dev)."""
    from engine import confine, paths
    from engine.training import sandbox

    runs_root = sandbox.runs_root(out)
    denied = [data_dir, paths.split_key_beside(data_dir), paths.cache_root(), paths.compilation_cache_dir(),
              *([runs_root] if runs_root else [])]
    _say_network(confine.close_network())
    if not confine.confine(denied, writable=[out, Path("/dev")]):
        print("note: this kernel has no Landlock: train.py's file reads are checked by Python's audit "
              "hooks only, which a C extension can go around (docs/guards.md)",
              file=sys.stderr)


def _say_network(held: list[str]) -> None:
    """One line in the run's log: what keeps train.py's tracer off the network."""
    if "network namespace" in held:
        print(f"tracer network: closed ({' and '.join(held)}): no TCP or UDP connection leaves it", file=sys.stderr)
    elif held:
        print("note: tracer network: Landlock refuses TCP, but this kernel gave it no network namespace: UDP "
              "is refused by Python's audit hooks only, which a C extension can go around", file=sys.stderr)
    else:
        print("note: tracer network: this kernel allows neither a network namespace nor Landlock's network "
              "rules here: train.py's network is refused by Python's audit hooks only, which a C extension "
              "can go around (README, \"What the guards catch\")", file=sys.stderr)


def _choose_platform(jax, platform: str) -> None:
    """Lower on the CPU for every platform but GPU (cuDNN's lowering asks the device)."""
    jax.config.update("jax_platforms", "cuda,cpu" if platform == "gpu" else "cpu")
    jax.config.update("jax_enable_compilation_cache", False)


def make_context(layout: dict):
    from engine.training.contract import Budget, Context

    return Context(platform=layout["platform"], device_kind=layout["device_kind"],
                   num_devices=int(layout["num_devices"]), num_processes=int(layout["num_processes"]),
                   vocab_size=int(layout["vocab_size"]), bos_id=int(layout["bos_id"]),
                   eval_sequence_length=int(layout["eval_sequence_length"]),
                   budget=Budget(layout["budget_mode"], float(layout["budget_value"])), seed=int(layout["seed"]))


def load_experiment(path: str | Path, ctx):
    """Import train.py by path, call its experiment(ctx), and check what comes back."""
    from engine.errors import UserError
    from engine.training.contract import Experiment

    module = _import_file(Path(path))
    factory = getattr(module, "experiment", None)
    if not callable(factory):
        raise UserError(f"{path} defines no experiment(ctx) function: add one that returns "
                        "engine.Experiment(init=..., train_step=..., logits=..., ...)")
    exp = factory(ctx)
    if not isinstance(exp, Experiment):
        raise UserError(f"experiment(ctx) in {path} returned {type(exp).__name__}, not engine.Experiment")
    _check_fields(exp)
    return exp


def _import_file(path: Path):
    from engine.errors import UserError

    if not path.is_file():
        raise UserError(f"no train file at {path}: pass the path of a train.py")
    spec = importlib.util.spec_from_file_location(TRAIN_MODULE_NAME, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[TRAIN_MODULE_NAME] = module  # dataclasses in train.py look their module up
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)  # train.py may import files beside it
    spec.loader.exec_module(module)
    return module


def _check_fields(exp) -> None:
    import numpy as np

    from engine.errors import UserError

    for name in ("init", "train_step", "logits"):
        if not callable(getattr(exp, name)):
            raise UserError(f"Experiment.{name} must be a function, got {getattr(exp, name)!r}")
    for name in ("batch_size", "sequence_length"):
        value = getattr(exp, name)
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
            raise UserError(f"Experiment.{name} must be a positive int, got {value!r}")


def _write_error(out: Path, error: BaseException, train_py: Path | None = None) -> int:
    """error.json: the reason in one line, naming train.py's line where the error passed through
    it; a traceback on stderr only with --verbose, or for an error that never touched train.py."""
    from engine.errors import UserError

    where = _train_py_line(error, train_py) if train_py is not None else None
    reason = describe_error(error, where, train_py.name if train_py is not None else "train.py")
    if os.environ.get("AUTORESEARCH_VERBOSE") or (where is None and not isinstance(error, UserError)):
        traceback.print_exception(error)  # an engine failure: its frames are the point
    try:
        (out / "error.json").write_text(json.dumps({"error": reason, "user_error": isinstance(error, UserError)}))
    except OSError:
        pass
    return 1


MAX_MESSAGE_CHARS = 400


def describe_error(error: BaseException, where: tuple[int, str] | None, name: str = "train.py") -> str:
    """"train.py:LINE: Type: message; the line: SOURCE" where `where` = (LINE, SOURCE) is known,
    else "Type: message" (a UserError: its message alone)."""
    from engine.errors import UserError

    if isinstance(error, UserError):
        what = str(error)
    else:
        message = error.msg if isinstance(error, SyntaxError) and error.msg else \
            (str(error).strip().splitlines() or ["(no message)"])[0]
        what = f"{type(error).__name__}: {message[:MAX_MESSAGE_CHARS]}"
    if where is None:
        return what
    line_number, source = where
    return f"{name}:{line_number}: {what}" + (f"; the line: {source}" if source else "")


def _train_py_line(error: BaseException, train_py: Path) -> tuple[int, str] | None:
    """(line number, source) of the last line of train.py that the error (or the error it was
    raised from) passed through; a SyntaxError's own line."""
    import linecache

    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, SyntaxError) and error.filename and Path(error.filename) == train_py and error.lineno:
            return error.lineno, (error.text or "").strip()
        frames = [f for f in traceback.extract_tb(error.__traceback__) if Path(f.filename) == train_py]
        if frames:
            line = frames[-1].line or linecache.getline(str(train_py), frames[-1].lineno)
            return frames[-1].lineno, line.strip()
        error = error.__cause__ or error.__context__
    return None


# ---------------------------------------------------------------- the trainer's side
# Tracing the default train.py takes about a second on CPU; beyond this allowance the
# tracer's wall time is charged to a time budget, and past TIMEOUT_SECONDS the run ends.
FREE_SECONDS = 10.0
TIMEOUT_SECONDS = 300.0


class TraceFailed(Exception):
    """train.py could not be traced and exported; the reason says why."""


PROGRAMS_DIR = "programs"
# Which host of a multi-host run this is: JAX's own variable (engine/training/devices.py), or a
# Cloud TPU slice's.
HOST_ID_ENVS = ("JAX_PROCESS_ID", "TPU_WORKER_ID")


def programs_dir(run_dir: Path) -> Path:
    """Where this host's tracer writes: hosts of one run may share its directory, and each
    host's tracer may write only its own folder."""
    host = next((os.environ[name] for name in HOST_ID_ENVS if os.environ.get(name)), "0")
    return Path(run_dir) / (PROGRAMS_DIR if host == "0" else f"{PROGRAMS_DIR}-host{host}")


def start_before_jax(args):
    """Start the tracer for the engine process of `args` before that process imports JAX, so
    the tracer's imports (JAX, Flax, Optax: seconds) overlap the engine's own; None when the
    arguments ask for no tracer, or when starting fails (the trainer then starts it itself, and
    reports what went wrong)."""
    from engine import paths

    if getattr(args, "programs", None) or not getattr(args, "run_dir", None):
        return None
    try:
        return start(args.path, programs_dir(Path(args.run_dir).absolute()), paths.resolve_data_dir(args.data))
    except Exception:  # the trainer's own start says why, as a failed run
        return None


def start(path: str | Path, out: Path, data_dir: Path):
    """Start the tracer for train.py at `path`, writing into `out` (emptied first), refused
    `data_dir`. It imports its libraries while the trainer brings up its devices, then waits
    for `finish`."""
    import shutil
    import subprocess

    from engine.processes import engine_command

    out = Path(out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    return subprocess.Popen(engine_command("trace", str(path), "--out", str(out), "--data", str(data_dir)),
                            stdin=subprocess.PIPE,
                            env=_tracer_environment(), start_new_session=True, text=True), out


def stop(started) -> None:
    """End a tracer that will get no layout (the trainer failed first), with its whole group."""
    from engine.processes import kill_group

    if started is not None:
        kill_group(started[0].pid, grace=0.0)
        started[0].wait()


def finish(started, layout: dict) -> float:
    """Send the layout, wait for the programs; the tracer's wall seconds from then on.
    Raises TraceFailed with the tracer's reason (or the timeout)."""
    import time

    from engine.processes import kill_group

    process, out = started
    began = time.perf_counter()
    try:
        process.stdin.write(json.dumps(layout) + "\n")
        process.stdin.close()
    except BrokenPipeError:  # the tracer already died: its reason is in error.json, or none
        pass
    try:
        code = process.wait(timeout=TIMEOUT_SECONDS)
    except Exception:  # subprocess.TimeoutExpired
        kill_group(process.pid)
        raise TraceFailed(f"train.py took more than {TIMEOUT_SECONDS:.0f} s to trace and export: "
                          "experiment(ctx) and the traced functions must describe work, not do it") from None
    finally:
        kill_group(process.pid)  # anything train.py started in the tracer's group ends with it
    seconds = time.perf_counter() - began
    if code != 0 or not (out / "spec.json").is_file():
        _raise_reason(out, code)
    return seconds


def _raise_reason(out: Path, code: int) -> None:
    """A mistake in train.py the user can act on is a UserError (exit status 2), else TraceFailed."""
    from engine.errors import UserError

    try:
        said = json.loads((out / "error.json").read_text())
        reason, user_error = str(said["error"]), said.get("user_error") is True
    except (OSError, ValueError, KeyError, TypeError):
        reason, user_error = f"the tracer exited with status {code} and wrote no programs", False
    raise (UserError if user_error else TraceFailed)(reason)


def _tracer_environment() -> dict:
    """The trainer's environment, less the compilation cache; GPU memory is not preallocated
    (the trainer holds it), and CUDA keeps no kernel cache (the tracer writes only its folder)."""
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    env["CUDA_CACHE_DISABLE"] = "1"
    return env
