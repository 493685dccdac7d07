"""The trainer process of `autoresearch train`: run train.py for the budget, save what it made.

Map the train split, install the audit hooks (engine/training/sandbox.py), import train.py
and build its experiment, compile it ahead of time (timed apart), run init (charged to the
budget) and train until the budget, then save the final state and the exported forward.
It writes only its own figures (steps, seconds, loss); val_bpb comes from the scorer, in a
process that starts after this one has exited (engine/training/launcher.py). This process
ends with os._exit, so nothing train.py left behind (an atexit handler, a thread) runs on.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import math
import os
import sys
import time
import traceback
from pathlib import Path

import jax
import numpy as np

from engine import constants, paths
from engine.data import cache as data
from engine.data import loader as loading
from engine.training import checkpoint
from engine.training import clock
from engine.training import compile as compiling
from engine.training import devices
from engine.training import export
from engine.training import hosts
from engine.training import integrity
from engine.training import sandbox
from engine.training import sharding
from engine.training import summary
from engine.errors import UserError
from engine.training.contract import Budget, Context, Experiment
from engine.training.progress import Progress
from model import flops

# A loss above this many nats per token has diverged (the reference's threshold).
EXPLODING_LOSS = 100.0
TRAIN_MODULE_NAME = "autoresearch_train_py"
_exit = os._exit  # bound before train.py is imported: it cannot swap the way out


class LossDiverged(Exception):
    """The loss became NaN, infinite or exploded; the run stops at once."""


def main(args: argparse.Namespace | None = None) -> int:
    """Entry of the trainer process; with no args, `python train.py [flags]` (the whole command)."""
    if args is None:
        from engine import cli
        return cli.main(["train", sys.argv[0], *sys.argv[1:]])
    code = _train(args)
    sys.stdout.flush()
    sys.stderr.flush()
    if getattr(args, "trainer_only", False):
        _exit(code)  # no atexit handler, thread or finalizer of train.py runs after this line
    return code


def _train(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    guard = sandbox.Guard()
    try:
        result = run_trainer(args, started, guard)
        guard.check()
    except UserError as error:
        _write_result(args, summary.failure("crash", str(error)))
        print(f"autoresearch train: error: {error}", file=sys.stderr, flush=True)
        return 2
    except LossDiverged as error:
        return _fail(args, "nan", str(error))
    except Exception as error:  # the experiment's own code may raise anything
        refused = guard.first_refusal()
        if refused:
            return _fail(args, "crash", refused)
        if isinstance(error, (sandbox.Refused, integrity.Tampered)):
            return _fail(args, "crash", str(error))
        traceback.print_exc()
        status = "oom" if devices.is_out_of_memory(error) else "crash"
        return _fail(args, status, f"{type(error).__name__}: {_first_line(error)}")
    _write_result(args, result)
    return 0


def run_trainer(args, started: float, guard: sandbox.Guard | None = None) -> dict:
    guard = guard or sandbox.Guard()
    _absolute_paths(args)  # the guard moves the process into its run directory
    budget = clock.budget_from_args(args, constants.TIME_BUDGET_SECONDS)
    data_dir = paths.resolve_data_dir(args.data)
    manifest = data.load_manifest(data_dir)
    devices.initialize_distributed()
    compiling.enable_persistent_cache()
    ctx = make_context(manifest, budget, args.seed)
    train_split = data.load_split(data_dir, "train")  # mapped now: train.py may not open the cache
    run_dir = Path(args.run_dir) if args.run_dir else _default_run_dir().absolute()
    guard.install(run_dir, data_dir, figures=Path(args.json_path) if args.json_path else None)
    exp = load_experiment(args.path, ctx)
    guard.check()
    mesh = sharding.make_mesh()
    rows = check_batches(exp, mesh, manifest)
    rng = jax.random.key(args.seed)
    compiled = compiling.compile_experiment(exp, mesh, rng, rows, ctx.eval_sequence_length, ctx.vocab_size)
    check_flops_countable(compiled, budget)
    guard.check()
    init_started = time.perf_counter()
    state = jax.block_until_ready(compiled.init(rng))
    init_seconds = time.perf_counter() - init_started
    hosts.warm_up(mesh, ctx)
    batches = _train_batches(train_split, exp, mesh, args.seed, ctx.bos_id)
    watch = compiling.compile_watch()
    budget_clock = clock.BudgetClock(budget, exp.batch_size * exp.sequence_length, compiled.step_flops)
    budget_clock.charge(seconds=init_seconds, flops=compiled.init_flops or 0.0)
    shown = _progress(args, exp, ctx, compiled)
    state, final_loss = train(compiled.train_step, state, batches, budget_clock, watch, shown.update)
    shown.close(budget_clock, final_loss)
    guard.check()
    forward = export.export_forward(exp.logits, compiled.abstract_state, rows, ctx.eval_sequence_length)
    saved = _save(args, run_dir, state, manifest, budget_clock, forward)
    guard.check()
    return _result(exp, ctx, manifest, compiled, budget_clock, watch, final_loss, saved, init_seconds,
                   time.perf_counter() - started)


def _absolute_paths(args) -> None:
    for name in ("path", "json_path", "run_dir", "data"):
        value = getattr(args, name, None)
        if value and (name != "data" or Path(value).exists()):  # --data may name a cache
            setattr(args, name, str(Path(value).absolute()))


def check_flops_countable(compiled, budget: Budget) -> None:
    if not compiled.flops_uncounted:
        return
    what = ", ".join(compiled.flops_uncounted)
    if budget.mode == "flops":
        raise UserError(f"train_step contains {what}, whose FLOPs the engine cannot count, so a flops "
                        "budget would not hold: use lax.scan or fori_loop with static bounds and the "
                        "model/ kernels, or a time or tokens budget")
    print(f"note: step FLOPs leave out {what} (MFU may read low)", file=sys.stderr)


def make_context(manifest: dict, budget: Budget, seed: int) -> Context:
    return Context(
        platform=devices.platform(),
        device_kind=devices.device_kind(),
        num_devices=jax.device_count(),
        num_processes=jax.process_count(),
        vocab_size=int(manifest["vocab_size"]),
        bos_id=int(manifest["bos_id"]),
        eval_sequence_length=int(manifest["constants"]["sequence_length"]),
        budget=budget,
        seed=seed,
    )


def load_experiment(path: str | Path, ctx: Context) -> Experiment:
    """Import train.py by path, call its experiment(ctx), and check what comes back."""
    module = _import_file(Path(path))
    factory = getattr(module, "experiment", None)
    if not callable(factory):
        raise UserError(f"{path} defines no experiment(ctx) function: add one that returns "
                        "engine.Experiment(init=..., train_step=..., logits=..., ...)")
    exp = factory(ctx)
    if not isinstance(exp, Experiment):
        raise UserError(f"experiment(ctx) in {path} returned {type(exp).__name__}, "
                        "not engine.Experiment")
    _check_fields(exp)
    return exp


def _import_file(path: Path):
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


def _check_fields(exp: Experiment) -> None:
    for name in ("init", "train_step", "logits"):
        if not callable(getattr(exp, name)):
            raise UserError(f"Experiment.{name} must be a function, got {getattr(exp, name)!r}")
    for name in ("batch_size", "sequence_length"):
        value = getattr(exp, name)
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
            raise UserError(f"Experiment.{name} must be a positive int, got {value!r}")


def check_batches(exp: Experiment, mesh, manifest: dict) -> int:
    """Both batches must split over the devices; returns the rows per scoring call."""
    sharding.check_divisible(exp.batch_size, mesh, "Experiment.batch_size")
    constants_ = manifest["constants"]
    seq_len = int(constants_["sequence_length"])
    rows = export.scoring_rows(exp.eval_batch_size, sharding.data_axis_size(mesh), seq_len,
                               int(manifest["vocab_size"]), int(constants_["eval_tokens"]) // seq_len)
    sharding.check_divisible(rows, mesh, "Experiment.eval_batch_size")
    return rows


def _train_batches(train_split, exp: Experiment, mesh, seed: int, bos_id: int):
    """Global token batches [B, T+1] in the same order on any number of hosts.

    Every host packs the whole global batch and keeps its own rows, so 1 and N hosts
    train on identical data (packing runs at millions of tokens/s, one step ahead of
    the device).
    """
    tokens, doc_starts = train_split
    loader = loading.PackedLoader(tokens, doc_starts, exp.batch_size, exp.sequence_length, seed, bos_id=bos_id)
    for rows in loader:
        yield sharding.global_batch(sharding.process_share(rows), mesh, exp.batch_size)


def train(step, state, batches, budget_clock: clock.BudgetClock, watch, on_loss=None) -> tuple:
    """Run steps until the budget is reached, learning each step's loss one step late.

    Returns the final state and its last loss. Compiles inside the window are counted by
    the watch and taken off the clock. on_loss(budget_clock, loss) hears each loss as it
    arrives (progress), never making the host wait for the device.
    """
    on_loss = on_loss or (lambda _clock, _loss: None)
    agree = hosts.agreement(budget_clock)
    agree(False, 0.0)  # compiles the agreement and opens its channels before the clock
    progress, pending, loss = 0.0, None, math.nan
    watch.count, watch.seconds, watch.active = 0, 0.0, True
    budget_clock.start()
    try:
        while True:
            state, metrics = step(state, next(batches), np.float32(progress))
            budget_clock.step_dispatched()
            if pending is not None:
                loss = _complete(pending, budget_clock, watch)
                on_loss(budget_clock, loss)
            pending = metrics
            stop, progress = agree(budget_clock.should_stop(), budget_clock.progress())
            if stop:  # the step in flight should reach the budget: wait for it and see
                loss, pending = _complete(pending, budget_clock, watch), None
                on_loss(budget_clock, loss)
                stop, progress = agree(budget_clock.reached(), budget_clock.progress())
                if stop:
                    break
    finally:
        watch.active = False
    return state, loss


def _progress(args, exp: Experiment, ctx: Context, compiled) -> Progress:
    """The progress line (and the run directory's progress.json) on the first host only."""
    flops_per_token = exp.flops_per_token or (
        compiled.step_flops / (exp.batch_size * exp.sequence_length) if compiled.step_flops else None)
    peak = devices.peak_flops_per_device(ctx.device_kind) if ctx.platform != "cpu" else None
    return Progress(flops_per_token, peak * ctx.num_devices if peak else None,
                    run_dir=getattr(args, "run_dir", None), show=jax.process_index() == 0)


def _complete(metrics: dict, budget_clock: clock.BudgetClock, watch) -> float:
    loss = float(metrics["loss"])  # waits for that step only; the next one is already queued
    budget_clock.exclude(watch.seconds)
    budget_clock.step_completed()
    if not math.isfinite(loss) or loss > EXPLODING_LOSS:
        raise LossDiverged(f"training loss {loss:.4g} at step {budget_clock.completed}: "
                           f"{'not a number' if math.isnan(loss) else 'diverged'}; run stopped")
    return loss


def _save(args, run_dir: Path, state, manifest: dict, budget_clock: clock.BudgetClock,
          forward: export.Forward) -> str:
    """The exported forward and the leaves it reads, always (the scorer needs them); the whole
    state too unless --no-checkpoint (sampling and later evaluation restore it)."""
    meta = {"train_py": str(Path(args.path).resolve()), "seed": args.seed,
            "manifest_fingerprint": manifest.get("fingerprint"), "num_steps": budget_clock.completed,
            "budget": budget_clock.budget.describe()}
    directory = run_dir / "checkpoint"
    if not args.no_checkpoint:
        checkpoint.save(directory, state, meta)
    export.save(directory, forward, state, meta)
    return str(directory.absolute())


def _default_run_dir() -> Path:
    stamp = int(time.time())
    if jax.process_count() > 1:  # every host must write into the same directory
        from jax.experimental import multihost_utils
        stamp = int(multihost_utils.broadcast_one_to_all(np.int32(stamp)))
    return Path("runs") / f"train-{time.strftime('%Y%m%d-%H%M%S', time.localtime(stamp))}"


def _result(exp, ctx, manifest, compiled, budget_clock, watch, final_loss, saved, init_seconds: float,
            total_seconds: float) -> dict:
    """The trainer's own figures: reported, never the score (the scorer adds val_bpb)."""
    seconds = budget_clock.seconds
    tokens = budget_clock.tokens
    tokens_per_second = tokens / seconds if seconds > 0 else None
    flops_per_token = exp.flops_per_token or (
        compiled.step_flops / (exp.batch_size * exp.sequence_length) if compiled.step_flops else None)
    mfu = (devices.mfu_percent(flops_per_token * tokens_per_second, ctx.device_kind, ctx.num_devices)
           if flops_per_token and tokens_per_second else None)
    return {
        "status": "ok", "error": None,
        "training_seconds": seconds, "compile_seconds": compiled.seconds, "train_process_seconds": total_seconds,
        "init_seconds": init_seconds, "init_flops": compiled.init_flops,
        "peak_vram_mb": devices.peak_memory_mb(), "mfu_percent": mfu,
        "total_tokens_M": tokens / 1e6, "num_steps": budget_clock.completed,
        "num_params_M": count_params(compiled.abstract_state) / 1e6,
        "budget": ctx.budget.describe(), "budget_mode": ctx.budget.mode, "budget_value": ctx.budget.value,
        "device": devices.describe(), "platform": ctx.platform, "num_devices": ctx.num_devices,
        "num_processes": ctx.num_processes, "tokens_per_second": tokens_per_second,
        "recompiles": watch.count, "recompile_seconds": watch.seconds,
        "manifest_fingerprint": manifest.get("fingerprint"), "seed": ctx.seed,
        "final_loss": final_loss, "checkpoint": saved, "step_flops": compiled.step_flops,
        "flops_per_token": flops_per_token, "flops_uncounted": list(compiled.flops_uncounted),
    }


def count_params(abstract_state) -> int:
    """Elements of the state's `params` entry (key or attribute) if it has one, else of all of it."""
    return flops.count_params(_params_entry(abstract_state))


def _params_entry(state):
    if isinstance(state, dict) and "params" in state:
        return state["params"]
    if hasattr(state, "params") and not callable(state.params):
        return state.params
    if dataclasses.is_dataclass(state) and any(f.name == "params" for f in dataclasses.fields(state)):
        return state.params
    return state


def _fail(args, status: str, reason: str) -> int:
    print(f"autoresearch train: {status}: {reason}", file=sys.stderr, flush=True)
    _write_result(args, summary.failure(status, reason))
    return 1


def _write_result(args, result: dict) -> None:
    """Host 0 writes the result; in the trainer process every host writes its own (its launcher
    reads it, and writes the run's result only on host 0)."""
    trainer_only = getattr(args, "trainer_only", False)
    if args.json_path and (trainer_only or jax.process_index() == 0):
        summary.write_json(args.json_path, {**result, "process_index": jax.process_index()})


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else "(no message)"
