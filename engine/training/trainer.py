"""`autoresearch train`: run one experiment honestly.

Load train.py, build the experiment, compile it ahead of time (timed apart), train
until the budget, score val_bpb with the fixed metric, save the final state, report.
The engine owns the clock, the data and the metric; train.py only describes functions.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import math
import sys
import time
import traceback
from pathlib import Path

import jax
import numpy as np

from engine import constants, paths
from engine.training import checkpoint
from engine.training import clock
from engine.training import compile as compiling
from engine.training import devices
from engine.scoring import metric
from engine.training import sharding
from engine.training import summary
from engine.errors import UserError
from engine.training.contract import Budget, Context, Experiment

# A loss above this many nats per token has diverged (the reference's threshold).
EXPLODING_LOSS = 100.0
TRAIN_MODULE_NAME = "autoresearch_train_py"


class LossDiverged(Exception):
    """The loss became NaN, infinite or exploded; the run stops at once."""


def main(args: argparse.Namespace | None = None) -> int:
    """Entry for `autoresearch train`; with no args, for `python train.py [flags]`."""
    if args is None:
        from engine import cli
        return cli.main(["train", sys.argv[0], *sys.argv[1:]])
    started = time.perf_counter()
    try:
        result = run(args, started)
    except UserError as error:
        _write_result(args, summary.failure("crash", str(error)))
        raise
    except LossDiverged as error:
        return _fail(args, "nan", str(error))
    except Exception as error:  # the experiment's own code may raise anything
        traceback.print_exc()
        status = "oom" if devices.is_out_of_memory(error) else "crash"
        return _fail(args, status, f"{type(error).__name__}: {_first_line(error)}")
    _write_result(args, result)
    print(summary.format_block(result), flush=True)
    return 0


def run(args, started: float) -> dict:
    budget = clock.budget_from_args(args, constants.TIME_BUDGET_SECONDS)
    data_dir = paths.resolve_data_dir(args.data)
    from engine.data import cache as data
    manifest = data.load_manifest(data_dir)
    devices.initialize_distributed()
    compiling.enable_persistent_cache()
    ctx = make_context(manifest, budget, args.seed)
    exp = load_experiment(args.path, ctx)
    mesh = sharding.make_mesh()
    eval_batch = check_batches(exp, mesh)
    rng = jax.random.key(args.seed)
    compiled = compiling.compile_experiment(exp, mesh, rng, eval_batch, ctx.eval_sequence_length,
                                            ctx.vocab_size)
    check_flops_countable(compiled, budget)
    state = jax.block_until_ready(compiled.init(rng))
    _warm_up_hosts(compiled.eval_step, state, mesh, eval_batch, ctx)
    batches = _train_batches(data_dir, exp, mesh, args.seed, ctx.bos_id)
    watch = compiling.compile_watch()
    budget_clock = clock.BudgetClock(budget, exp.batch_size * exp.sequence_length, compiled.step_flops)
    state, final_loss = train(compiled.train_step, state, batches, budget_clock, watch)
    score = evaluate(exp, compiled.eval_step, state, data_dir, manifest, eval_batch, mesh, "val")
    saved = None if args.no_checkpoint else _save(args, state, manifest, budget_clock)
    return _result(exp, ctx, manifest, compiled, budget_clock, watch, score, final_loss, saved,
                   time.perf_counter() - started)


def check_flops_countable(compiled, budget: Budget) -> None:
    if not compiled.flops_uncounted:
        return
    what = ", ".join(compiled.flops_uncounted)
    if budget.mode == "flops":
        raise UserError(f"train_step contains {what}, whose FLOPs the engine cannot count, so a flops "
                        "budget would not hold: use lax.scan or fori_loop with static bounds and the "
                        "modelkit/ kernels, or a time or tokens budget")
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
                        "engine.Experiment(init=..., train_step=..., token_loss=..., ...)")
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
    for name in ("init", "train_step", "token_loss"):
        if not callable(getattr(exp, name)):
            raise UserError(f"Experiment.{name} must be a function, got {getattr(exp, name)!r}")
    for name in ("batch_size", "sequence_length"):
        value = getattr(exp, name)
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
            raise UserError(f"Experiment.{name} must be a positive int, got {value!r}")


def check_batches(exp: Experiment, mesh) -> int:
    """Both batches must split over the devices; returns the eval batch size."""
    sharding.check_divisible(exp.batch_size, mesh, "Experiment.batch_size")
    eval_batch = exp.eval_batch_size or exp.batch_size
    sharding.check_divisible(eval_batch, mesh, "Experiment.eval_batch_size")
    return int(eval_batch)


def _train_batches(data_dir: Path, exp: Experiment, mesh, seed: int, bos_id: int):
    """Global token batches [B, T+1] in the same order on any number of hosts.

    Every host packs the whole global batch and keeps its own rows, so 1 and N hosts
    train on identical data (packing runs at millions of tokens/s, one step ahead of
    the device).
    """
    from engine.data import cache as data
    from engine.data.loader import PackedLoader
    tokens, doc_starts = data.load_split(data_dir, "train")
    loader = PackedLoader(tokens, doc_starts, exp.batch_size, exp.sequence_length, seed, bos_id=bos_id)
    for rows in loader:
        yield sharding.global_batch(sharding.process_share(rows), mesh, exp.batch_size)


def train(step, state, batches, budget_clock: clock.BudgetClock, watch) -> tuple:
    """Run steps until the budget is reached, learning each step's loss one step late.

    Returns the final state and its last loss. Compiles inside the window are counted by
    the watch and taken off the clock.
    """
    agree = _agreement(budget_clock)
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
            pending = metrics
            stop, progress = agree(budget_clock.should_stop(), budget_clock.progress())
            if stop:  # the step in flight should reach the budget: wait for it and see
                loss, pending = _complete(pending, budget_clock, watch), None
                stop, progress = agree(budget_clock.reached(), budget_clock.progress())
                if stop:
                    break
    finally:
        watch.active = False
    return state, loss


def _warm_up_hosts(eval_step, state, mesh, eval_batch: int, ctx: Context) -> None:
    """Across hosts, the first collective sets up connections (seconds with gloo): not training time."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils
    rows = np.full((eval_batch, ctx.eval_sequence_length + 1), ctx.bos_id, np.int32)
    batch = sharding.global_batch(sharding.process_share(rows), mesh, eval_batch)
    jax.block_until_ready(eval_step(state, batch, np.zeros(ctx.vocab_size, np.int32)))
    multihost_utils.sync_global_devices("autoresearch: start the clock")


def _complete(metrics: dict, budget_clock: clock.BudgetClock, watch) -> float:
    loss = float(metrics["loss"])  # waits for that step only; the next one is already queued
    budget_clock.exclude(watch.seconds)
    budget_clock.step_completed()
    if not math.isfinite(loss) or loss > EXPLODING_LOSS:
        raise LossDiverged(f"training loss {loss:.4g} at step {budget_clock.completed}: "
                           f"{'not a number' if math.isnan(loss) else 'diverged'}; run stopped")
    return loss


def _agreement(budget_clock: clock.BudgetClock):
    """With several hosts and a time budget, all follow host 0's clock, or they would deadlock.

    Host 0 posts each decision in the coordinator's key-value store: host-to-host only, so
    no host waits for the device to drain a step.
    """
    if jax.process_count() == 1 or budget_clock.budget.mode != "time":
        return lambda stop, progress: (stop, progress)
    client = _coordinator_client()
    if client is None:
        return _agreement_by_broadcast()
    decisions = iter(range(2**62))

    def agree(stop: bool, progress: float):
        key = f"autoresearch/clock/{next(decisions)}"
        if jax.process_index() == 0:
            client.key_value_set(key, f"{int(stop)} {progress!r}")
        else:
            stop_text, progress_text = client.blocking_key_value_get(key, AGREE_TIMEOUT_MS).split()
            stop, progress = stop_text == "1", float(progress_text)
        return stop, progress
    return agree


AGREE_TIMEOUT_MS = 10 * 60 * 1000  # host 0 may be inside a long step


def _coordinator_client():
    try:
        from jax._src import distributed  # the key-value store has no public handle
        client = distributed.global_state.client
        return client if hasattr(client, "blocking_key_value_get") else None
    except (ImportError, AttributeError):
        return None


def _agreement_by_broadcast():
    from jax.experimental import multihost_utils

    def agree(stop: bool, progress: float):
        shared = multihost_utils.broadcast_one_to_all(np.array([float(stop), progress], np.float32))
        return bool(shared[0]), float(shared[1])
    return agree


def evaluate(exp: Experiment, eval_step, state, data_dir: Path, manifest: dict, eval_batch: int,
             mesh, split: str) -> metric.BpbResult:
    from engine.data import cache as data
    tokens, _ = data.load_split(data_dir, split)
    constants_ = manifest["constants"]
    return metric.evaluate_bpb(
        exp.token_loss, state, tokens, data.load_token_bytes(data_dir),
        eval_tokens=int(constants_["eval_tokens"]), sequence_length=int(constants_["sequence_length"]),
        batch_size=eval_batch, pad_id=int(manifest["bos_id"]), step=eval_step,
        put=lambda rows: sharding.global_batch(sharding.process_share(rows), mesh, len(rows)))


def _save(args, state, manifest: dict, budget_clock: clock.BudgetClock) -> str:
    run_dir = Path(args.run_dir) if args.run_dir else _default_run_dir()
    meta = {"train_py": str(Path(args.path).resolve()), "seed": args.seed,
            "manifest_fingerprint": manifest.get("fingerprint"), "num_steps": budget_clock.completed,
            "budget": budget_clock.budget.describe()}
    return str(checkpoint.save(run_dir / "checkpoint", state, meta))


def _default_run_dir() -> Path:
    stamp = int(time.time())
    if jax.process_count() > 1:  # every host must write into the same directory
        from jax.experimental import multihost_utils
        stamp = int(multihost_utils.broadcast_one_to_all(np.int32(stamp)))
    return Path("runs") / f"train-{time.strftime('%Y%m%d-%H%M%S', time.localtime(stamp))}"


def _result(exp, ctx, manifest, compiled, budget_clock, watch, score, final_loss, saved,
            total_seconds: float) -> dict:
    seconds = budget_clock.seconds
    tokens = budget_clock.tokens
    tokens_per_second = tokens / seconds if seconds > 0 else None
    flops_per_token = exp.flops_per_token or (
        compiled.step_flops / (exp.batch_size * exp.sequence_length) if compiled.step_flops else None)
    mfu = (devices.mfu_percent(flops_per_token * tokens_per_second, ctx.device_kind, ctx.num_devices)
           if flops_per_token and tokens_per_second else None)
    return {
        "status": "ok", "error": None,
        "val_bpb": score.bpb, "val_tokens": score.tokens,
        "training_seconds": seconds, "compile_seconds": compiled.seconds, "total_seconds": total_seconds,
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
    params = _params_entry(abstract_state)
    return int(sum(np.prod(leaf.shape, dtype=np.int64) for leaf in jax.tree.leaves(params)))


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
    if args.json_path and jax.process_index() == 0:
        summary.write_json(args.json_path, result)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else "(no message)"
