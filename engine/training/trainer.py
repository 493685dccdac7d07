"""The trainer process of `autoresearch train`: run an experiment's programs for the budget.

It runs no code of train.py. At its start it starts the tracer process
(engine/training/tracer.py), which imports train.py and exports its functions; once its
own devices are up it sends the tracer the run's layout and waits. It then loads the
programs (checked by engine/training/programs.py), compiles them ahead of time on its mesh
with the engine's shardings (timed apart), runs init and the steps under the clock, and
saves the final state, the programs and the forward. With `--programs DIR` (`verify
--retrain`) it trains saved programs and starts no tracer. It writes only its own figures
(steps, seconds, loss); val_bpb comes from the scorer (engine/training/launcher.py).
"""
from __future__ import annotations

import argparse
import concurrent.futures
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
from engine.errors import UserError
from engine.training import checkpoint
from engine.training import clock
from engine.training import compile as compiling
from engine.training import devices
from engine.training import export
from engine.training import hosts
from engine.training import programs
from engine.training import sharding
from engine.training import summary
from engine.training import tracer
from engine.training.contract import Budget
from engine.training.progress import Progress

# A loss above this many nats per token has diverged (the reference's threshold).
EXPLODING_LOSS = 100.0
# The status of the engine's figures once training and the checkpoint are done and scoring runs:
# never a result (the launcher scores such a run in a fresh scorer process, or calls it unscored).
TRAINED = "trained"
_exit = os._exit


class LossDiverged(Exception):
    """The loss became NaN, infinite or exploded; the run stops at once."""


class ScoringFailed(Exception):
    """Scoring raised after the checkpoint was saved: the figures say "trained", and the
    launcher scores the checkpoint in a fresh scorer process."""


def main(args: argparse.Namespace | None = None, tracing=None) -> int:
    """Entry of the trainer process; with no args, `python train.py [flags]` (the whole command).
    `tracing`: the tracer, when the caller started it already (tracer.start_before_jax)."""
    if args is None:
        from engine import cli
        return cli.main(["train", sys.argv[0], *sys.argv[1:]])
    code = _train(args, tracing)
    sys.stdout.flush()
    sys.stderr.flush()
    if getattr(args, "trainer_only", False):
        _exit(code)  # no atexit handler, thread or finalizer of train.py runs after this line
    return code


def _train(args: argparse.Namespace, tracing=None) -> int:
    started = time.perf_counter()
    try:
        result = run_trainer(args, started, tracing)
    except UserError as error:
        _write_result(args, summary.failure("crash", str(error)))
        if not getattr(args, "trainer_only", False):  # else the launcher says it, once
            print(f"autoresearch train: error: {error}", file=sys.stderr, flush=True)
        return 2
    except tracer.TraceFailed as error:
        return _fail(args, "crash", str(error))
    except LossDiverged as error:
        return _fail(args, "nan", str(error))
    except ScoringFailed as error:
        print(f"autoresearch train: scoring failed after training: {_first_line(error)}", file=sys.stderr, flush=True)
        return 1
    except Exception as error:  # XLA may raise anything: out of memory, a bad program
        traceback.print_exc()
        status = "oom" if devices.is_out_of_memory(error) else "crash"
        return _fail(args, status, f"{type(error).__name__}: {_first_line(error)}")
    _write_result(args, result)
    return 0


def run_trainer(args, started: float, tracing=None) -> dict:
    """Trace (in the tracer process, started here unless `tracing` is it), compile, init and
    train under the clock, save, score."""
    try:
        _absolute_paths(args)
        run_dir = Path(args.run_dir) if args.run_dir else _default_run_dir().absolute()
        data_dir = paths.resolve_data_dir(args.data)
        traced_dir = tracer.programs_dir(run_dir)
        if tracing is None and not args.programs:
            tracing = tracer.start(args.path, traced_dir, data_dir)
        budget = clock.budget_from_args(args, constants.TIME_BUDGET_SECONDS)
        manifest = data.load_manifest(data_dir)
        devices.initialize_distributed()
        compiling.disable_persistent_cache()  # native code from a file others can write never runs here
        mesh = sharding.make_mesh()
        layout = make_layout(manifest, budget, args.seed, data_dir)
    except BaseException:
        tracer.stop(tracing)  # it would wait for a layout that never comes, then say so in the log
        raise
    phases = PhaseLog(run_dir)
    trace_seconds = 0.0
    if tracing is not None:
        phases.enter("trace")
        trace_seconds = tracer.finish(tracing, layout)
    program_dir = Path(args.programs) if args.programs else traced_dir
    loaded = programs.load(program_dir, layout["platform"], layout["num_devices"])
    check_batches(loaded, mesh)
    train_split = data.load_split(data_dir, "train")
    phases.enter("compile")
    compiled, scoring_compile = compile_all(loaded, mesh, layout["platform"])
    check_flops_countable(compiled, budget)
    phases.enter("init")
    init_started = time.perf_counter()
    state = jax.block_until_ready(compiled.init(jax.random.key_data(jax.random.key(args.seed))))
    init_seconds = time.perf_counter() - init_started
    hosts.warm_up(mesh, layout["bos_id"])
    batch_size, seq_len = loaded.spec["batch_size"], loaded.spec["sequence_length"]
    batches = _train_batches(train_split, batch_size, seq_len, mesh, args.seed, layout["bos_id"])
    budget_clock = clock.BudgetClock(budget, batch_size * seq_len, compiled.step_flops)
    budget_clock.charge(seconds=init_seconds + charged_trace_seconds(trace_seconds), flops=compiled.init_flops or 0.0)
    shown = _progress(args, loaded, layout, compiled)
    phases.enter("training")
    state, final_loss = train(compiled.train_step, state, batches, budget_clock, shown.update)
    shown.close(budget_clock, final_loss)
    phases.enter("checkpoint")
    saved = _save(args, run_dir, state, manifest, budget_clock, loaded, program_dir)
    trained = _result(loaded, layout, manifest, compiled, budget_clock, final_loss, saved, init_seconds,
                      trace_seconds, time.perf_counter() - started)
    # The trained figures reach the disk before the phase file says scoring: should this process
    # die from then on, the launcher finds them, and a fresh scorer process scores the checkpoint
    # (the phase file holds the checkpoint's seconds).
    _write_result(args, {**trained, "status": TRAINED, "phase_seconds": phase_figures(phases)})
    phases.enter("scoring")
    try:
        scoring = scoring_compile.result()  # compiled while training ran (on an accelerator)
        scored = score_trained(scoring, state, loaded, data_dir, shown, getattr(args, "probe_seed", None))
    except Exception as error:  # XLA may raise anything; the checkpoint is saved either way
        traceback.print_exc()
        _write_result(args, {**trained, "status": TRAINED, "error": f"{type(error).__name__}: {_first_line(error)}",
                             "phase_seconds": phase_figures(phases)})
        raise ScoringFailed(str(error)) from error
    phases.enter("done")
    seconds = {**phase_figures(phases), "probe": scored.phases.get("probe", 0.0),
               "metric": scored.phases.get("metric", 0.0)}
    return {**trained, "train_process_seconds": time.perf_counter() - started, **scored_figures(scored, scoring),
            "phase_seconds": seconds, "compile_seconds": seconds["compile"],
            **{f"{name}_seconds": seconds[name] for name in ("checkpoint", "probe", "metric")}}


class PhaseLog:
    """Which phase the engine process is in, and the seconds each took: kept here and written
    to the run directory's phase.json at every change (read after a kill or a timeout, by the
    launcher and by the loop's runner: they name the phase that ran out)."""

    FILE = "phase.json"

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / self.FILE if jax.process_index() == 0 else None
        self.seconds: dict[str, float] = {}
        self.current, self._since = None, time.perf_counter()

    def enter(self, phase: str) -> None:
        now = time.perf_counter()
        if self.current is not None:
            self.seconds[self.current] = self.seconds.get(self.current, 0.0) + now - self._since
        self.current, self._since = phase, now
        if self.path is not None:
            summary.write_phase(self.path, phase, self.seconds)


def compile_all(loaded: programs.Programs, mesh, platform: str):
    """Compile init and the train step, and start compiling the scoring programs beside them.

    Returns the compiled training programs and a future of the scoring programs. On CPU the
    scoring compile is waited for here, before the clock (it would take the cores training
    uses); on an accelerator it goes on in a host thread while the device trains.
    """
    from engine.scoring import scorer

    weight_shardings = [sh for sh, used in zip(_state_shardings(loaded, mesh), loaded.used()) if used]
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="scoring-compile")
    scoring = pool.submit(scorer.compile_programs, loaded.logits, weight_shardings, mesh)
    pool.shutdown(wait=False)
    compiled = compiling.compile_programs(loaded, mesh)
    if platform == "cpu":
        scoring.result()
    return compiled, scoring


def _state_shardings(loaded: programs.Programs, mesh) -> list:
    from jax.sharding import NamedSharding
    return [NamedSharding(mesh, spec) for spec in loaded.partition_specs()]


def score_trained(scoring, state, loaded: programs.Programs, data_dir: Path, shown: Progress,
                  probe_seed: int | None = None):
    """Probe and score the state just trained, in this process, with the programs compiled
    before the clock: the same scorer code as `autoresearch evaluate` (engine/scoring/scorer.py)."""
    from engine.data import checksums
    from engine.scoring import probe, scorer

    manifest = checksums.verify(data_dir, splits=("val",))
    weights = [leaf for leaf, used in zip(state, loaded.used()) if used]
    tokens, _ = data.load_split(data_dir, "val")
    seed = probe.draw_seed() if probe_seed is None else int(probe_seed)
    return scorer.score_weights(scoring, weights, tokens, data.load_token_bytes(data_dir), manifest, seed,
                                on_batch=shown.scoring)


def scored_figures(scored, scoring) -> dict:
    """What the result file says of the score: status and val_bpb from the scorer alone."""
    return {"status": scored.status, "error": scored.reason, "val_bpb": scored.bpb, "val_tokens": scored.tokens,
            "probe_passes": scored.probe_passes, "probe_seed": scored.probe_seed,
            "forward_calls": scored.forward_calls, "scoring_seconds": scored.seconds,
            "scoring_phases": {**scored.phases, "compile": scoring.seconds}, "scored_by": "engine"}


def phase_figures(phases: PhaseLog) -> dict:
    """Seconds of each phase of the engine process so far (init is training time: the clock
    charges it), for the summary block, the JSON and the ledger."""
    seen = phases.seconds
    return {"trace": seen.get("trace", 0.0), "compile": seen.get("compile", 0.0),
            "train": seen.get("init", 0.0) + seen.get("training", 0.0),
            "checkpoint": seen.get("checkpoint", 0.0), "scoring": seen.get("scoring", 0.0)}


def charged_trace_seconds(seconds: float) -> float:
    """The tracer's wall time beyond its allowance counts as training under a time budget."""
    return max(0.0, seconds - tracer.FREE_SECONDS)


def _absolute_paths(args) -> None:
    for name in ("path", "json_path", "run_dir", "data", "programs"):
        value = getattr(args, name, None)
        if value and (name != "data" or Path(value).exists()):  # --data may name a cache
            setattr(args, name, str(Path(value).absolute()))


def check_flops_countable(compiled, budget: Budget) -> None:
    if not compiled.flops_uncounted:
        return
    what = ", ".join(compiled.flops_uncounted)
    if budget.mode == "flops":
        raise UserError(f"train_step contains {what}, whose FLOPs the engine cannot count, so a flops "
                        "budget would not hold: use lax.scan or fori_loop with static bounds, jax.numpy "
                        "instead of LAPACK calls (an SVD or eigh: Newton-Schulz iterations instead) and the "
                        "model/ kernels, or a time or tokens budget")
    print(f"note: step FLOPs leave out {what} (MFU may read low)", file=sys.stderr)


def make_layout(manifest: dict, budget: Budget, seed: int, data_dir: Path) -> dict:
    """What the tracer learns about the run: train.py's Context, and the scoring layout."""
    return {
        "platform": devices.platform(), "device_kind": devices.device_kind(),
        "num_devices": jax.device_count(), "num_processes": jax.process_count(),
        "vocab_size": int(manifest["vocab_size"]), "bos_id": int(manifest["bos_id"]),
        "eval_sequence_length": int(manifest["constants"]["sequence_length"]),
        "eval_tokens": int(manifest["constants"]["eval_tokens"]),
        "budget_mode": budget.mode, "budget_value": budget.value, "seed": seed,
        "data_dir": str(data_dir),  # for the tracer's hooks: unreadable there
    }


def check_batches(loaded: programs.Programs, mesh) -> None:
    """Both batches must split over the devices."""
    sharding.check_divisible(loaded.spec["batch_size"], mesh, "Experiment.batch_size")
    sharding.check_divisible(loaded.spec["eval_rows"], mesh, "Experiment.eval_batch_size")


def _train_batches(train_split, batch_size: int, seq_len: int, mesh, seed: int, bos_id: int):
    """Global token batches [B, T+1] in the same order on any number of hosts.

    Every host packs the whole global batch and keeps its own rows, so 1 and N hosts
    train on identical data (packing runs at millions of tokens/s, one step ahead of
    the device).
    """
    tokens, doc_starts = train_split
    loader = loading.PackedLoader(tokens, doc_starts, batch_size, seq_len, seed, bos_id=bos_id)
    for rows in loader:
        yield sharding.global_batch(sharding.process_share(rows), mesh, batch_size)


def train(step, state, batches, budget_clock: clock.BudgetClock, on_loss=None) -> tuple:
    """Run steps until the budget is reached, learning each step's loss one step late.

    Returns the final state and its last loss. Nothing is compiled inside the window, and
    nothing comes off the clock. on_loss(budget_clock, loss) hears each loss as it arrives
    (progress), never making the host wait for the device.
    """
    on_loss = on_loss or (lambda _clock, _loss: None)
    agree = hosts.agreement(budget_clock)
    agree(False, 0.0)  # compiles the agreement and opens its channels before the clock
    progress, pending, loss = 0.0, None, math.nan
    budget_clock.start()
    while True:
        state, metrics = step(state, next(batches), np.float32(progress))
        budget_clock.step_dispatched()
        if pending is not None:
            loss = _complete(pending, budget_clock)
            on_loss(budget_clock, loss)
        pending = metrics
        stop, progress = agree(budget_clock.should_stop(), budget_clock.progress())
        if stop:  # the step in flight should reach the budget: wait for it and see
            loss, pending = _complete(pending, budget_clock), None
            on_loss(budget_clock, loss)
            stop, progress = agree(budget_clock.reached(), budget_clock.progress())
            if stop:
                break
    return state, loss


def _progress(args, loaded: programs.Programs, layout: dict, compiled) -> Progress:
    """The progress line (and the run directory's progress.json) on the first host only."""
    flops_per_token = _flops_per_token(loaded, compiled)
    peak = devices.peak_flops_per_device(layout["device_kind"]) if layout["platform"] != "cpu" else None
    return Progress(flops_per_token, peak * layout["num_devices"] if peak else None,
                    run_dir=getattr(args, "run_dir", None), show=jax.process_index() == 0)


def _flops_per_token(loaded: programs.Programs, compiled) -> float | None:
    """The experiment's analytic figure (for MFU), else the engine's count of the step per token."""
    tokens = loaded.spec["batch_size"] * loaded.spec["sequence_length"]
    given = loaded.spec.get("flops_per_token")
    if isinstance(given, (int, float)) and not isinstance(given, bool) and math.isfinite(given) and given > 0:
        return float(given)
    return compiled.step_flops / tokens if compiled.step_flops else None


def _complete(metrics: dict, budget_clock: clock.BudgetClock) -> float:
    loss = float(metrics["loss"])  # waits for that step only; the next one is already queued
    budget_clock.step_completed()
    if not math.isfinite(loss) or loss > EXPLODING_LOSS:
        raise LossDiverged(f"training loss {loss:.4g} at step {budget_clock.completed}: "
                           f"{'not a number' if math.isnan(loss) else 'diverged'}; run stopped")
    return loss


def _save(args, run_dir: Path, state, manifest: dict, budget_clock: clock.BudgetClock,
          loaded: programs.Programs, program_dir: Path) -> str:
    """The exported forward and the leaves it reads, always (the scorer needs them); the
    programs (for `verify --retrain` and sampling) and the whole state unless --no-checkpoint."""
    meta = {"train_py": str(Path(args.path).resolve()) if args.path else None, "seed": args.seed,
            "manifest_fingerprint": manifest.get("fingerprint"), "num_steps": budget_clock.completed,
            "budget": budget_clock.budget.describe(), "budget_mode": budget_clock.budget.mode,
            "budget_value": budget_clock.budget.value, "leaves": [leaf["path"] for leaf in loaded.leaves]}
    directory = run_dir / "checkpoint"
    if not args.no_checkpoint:
        checkpoint.save(directory, {export.leaf_key(i): leaf for i, leaf in enumerate(state)}, meta)
        programs.copy(program_dir, directory / tracer.PROGRAMS_DIR)
    kernels = export.kernels_among(loaded.facts("logits").custom_calls)  # read when the programs were checked
    export.save(directory, export.Forward(loaded.logits, tuple(loaded.used()), kernels), state, meta)
    return str(directory.absolute())


def _default_run_dir() -> Path:
    stamp = int(time.time())
    if jax.process_count() > 1:  # every host must write into the same directory
        from jax.experimental import multihost_utils
        stamp = int(multihost_utils.broadcast_one_to_all(np.int32(stamp)))
    return Path("runs") / f"train-{time.strftime('%Y%m%d-%H%M%S', time.localtime(stamp))}"


def _result(loaded, layout, manifest, compiled, budget_clock, final_loss, saved, init_seconds: float,
            trace_seconds: float, total_seconds: float) -> dict:
    """The trainer's own figures: reported, never the score (the scorer adds val_bpb)."""
    seconds = budget_clock.seconds
    tokens = budget_clock.tokens
    tokens_per_second = tokens / seconds if seconds > 0 else None
    flops_per_token = _flops_per_token(loaded, compiled)
    mfu = (devices.mfu_percent(flops_per_token * tokens_per_second, layout["device_kind"], layout["num_devices"])
           if flops_per_token and tokens_per_second else None)
    budget = budget_clock.budget
    return {
        "status": "ok", "error": None,
        "training_seconds": seconds, "compile_seconds": compiled.seconds, "train_process_seconds": total_seconds,
        "trace_seconds": trace_seconds, "trace_seconds_charged": charged_trace_seconds(trace_seconds),
        "init_seconds": init_seconds, "init_flops": compiled.init_flops,
        "peak_vram_mb": devices.peak_memory_mb(), "mfu_percent": mfu,
        "total_tokens_M": tokens / 1e6, "num_steps": budget_clock.completed,
        "num_params_M": _num_params(loaded) / 1e6,
        "budget": budget.describe(), "budget_mode": budget.mode, "budget_value": budget.value,
        "device": devices.describe(), "platform": layout["platform"], "num_devices": layout["num_devices"],
        "num_processes": layout["num_processes"], "tokens_per_second": tokens_per_second,
        "manifest_fingerprint": manifest.get("fingerprint"), "seed": layout["seed"],
        "final_loss": final_loss, "checkpoint": saved, "step_flops": compiled.step_flops,
        "flops_per_token": flops_per_token, "flops_uncounted": list(compiled.flops_uncounted),
    }


def _num_params(loaded: programs.Programs) -> int:
    value = loaded.spec.get("num_params")
    return int(value) if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _fail(args, status: str, reason: str) -> int:
    if not getattr(args, "trainer_only", False):  # else the launcher says it, once
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
