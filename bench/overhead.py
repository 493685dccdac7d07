"""The loop's overhead per experiment: wall time of a whole loop step minus training time.

A step is propose + guard + commit + `autoresearch train` (one engine process: start-up,
trace, compile of the train step, init and the scoring forward, training, checkpoint,
then the causality probe and the metric in one sweep over the eval batches) + ledger + git.
The bench runs the baseline once, then N steps of the same program (each proposal only adds
a comment), in a scratch copy of this repository's train.py. It prints where the time goes
(each phase's seconds from the engine's result), the share that is training, what that share
becomes at a 300 s budget (the overhead does not grow with the budget: compile and eval are
fixed costs), and the scorer's seconds against the same number of bare forward calls of the
baseline's exported forward, timed in this process after the loop (the scorer's own cost
beyond its forward passes).

    python bench/overhead.py --budget-seconds 10 --experiments 3
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.loop import cycle  # noqa: E402  (the loop's own step functions)
from engine.loop.session import open_session  # noqa: E402
from engine.agents.base import Proposal  # noqa: E402
from engine.loop.live_view import LiveView  # noqa: E402

PROGRAM = """# overhead bench
## Editable files
- train.py
## Noise
- baseline_runs: 1
- max_runs: 1
- confirm_runs: 0
"""
TARGET_BUDGET_SECONDS = 300.0


class CommentAgent:
    """Proposes the same program again: one new comment line, so the compile cache is warm."""
    name = "bench"

    def propose(self, request):
        path = Path(request.repo_root) / "train.py"
        path.write_text(path.read_text() + f"# overhead bench, experiment {request.experiment}\n")
        return Proposal(description=f"unchanged program ({request.experiment})")


def scratch_repo(directory: Path, train_py: Path) -> Path:
    root = directory / "repo"
    root.mkdir()
    shutil.copy(train_py, root / "train.py")
    (root / "program.md").write_text(PROGRAM)
    (root / ".gitignore").write_text("runs/\n")
    for args in (["init", "-q"], ["add", "-A"],
                 ["-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-qm", "start"]):
        subprocess.run(["git", *args], cwd=root, check=True)
    return root


def measure(args) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="autoresearch-overhead-") as tmp:
        root = scratch_repo(Path(tmp), Path(args.train).resolve())
        os.chdir(root)
        loop_args = argparse.Namespace(tag="bench", program="program.md", data=args.data, seed=0,
                                       max_experiments=None, max_hours=None, timeout=args.timeout,
                                       budget_seconds=args.budget_seconds, budget_flops=None, budget_tokens=None)
        session = open_session(loop_args, LiveView(interactive=False))
        try:
            session.repo.checkout_branch("bench")
            cycle.run_baseline(session)
            figures = timed_experiments(session, CommentAgent(), args.experiments)
            calls = [f.get("forward_calls") for f in figures if f.get("forward_calls")]
            if calls and not args.no_forward_timing:
                seconds = forward_alone_seconds(session.exp_dir(0) / "checkpoint", session.data_dir, calls[-1])
                for f in figures:
                    f["forward_alone_seconds"] = seconds
            return figures
        finally:
            session.close()
            os.chdir(REPO)


def timed_experiments(session, agent, count: int) -> list[dict]:
    """Up to `count` loop steps (propose, run, keep or reset), each ledger row with its wall
    time as step_seconds; fewer when the agent runs out of ideas."""
    figures = []
    for _ in range(count):
        start = time.monotonic()
        experiment = session.ledger.next_experiment()
        proposal = cycle.propose(session, agent, experiment)
        if proposal is None:
            break
        row = cycle.try_candidate(session, proposal, experiment)
        figures.append({**row, "step_seconds": time.monotonic() - start})
    return figures


def forward_alone_seconds(checkpoint: Path, data_dir: Path, calls: int) -> float:
    """Seconds of `calls` bare calls of the checkpoint's exported forward on the metric's batches,
    compiled as the scorer compiles it (nothing fetched but the last call's completion)."""
    import jax
    from engine.data import cache
    from engine.scoring import metric, scorer
    from engine.training import compile as compiling, export, sharding

    compiling.disable_persistent_cache()
    manifest = cache.load_manifest(data_dir)
    program = export.load_program(checkpoint)
    mesh = sharding.make_mesh()
    weights = tuple(export.restore_weights(checkpoint, program, mesh))
    programs = scorer.compile_programs(program, [sharding.replicated(mesh)] * len(weights), mesh)
    tokens, _ = cache.load_split(data_dir, "val")
    rows = metric.pad_rows(metric.eval_rows(tokens, int(manifest["constants"]["eval_tokens"]), programs.seq_len),
                           programs.rows, int(manifest["bos_id"]))[:, :-1]
    batches = [jax.device_put(rows[i:i + programs.rows], sharding.batch_sharding(mesh))
               for i in range(0, len(rows), programs.rows)]
    jax.block_until_ready(programs.forward(weights, batches[0]))  # warm
    start = time.perf_counter()
    out = None
    for i in range(calls):
        out = programs.forward(weights, batches[i % len(batches)])
        if i % len(batches) == len(batches) - 1:
            jax.block_until_ready(out)  # as the scorer does: no unbounded queue of logits
    jax.block_until_ready(out)
    return time.perf_counter() - start


PHASES = ("trace", "compile", "train", "checkpoint", "probe", "metric")


def report(figures: list[dict], budget: float) -> None:
    ok = [f for f in figures if f.get("training_seconds")]
    if not ok:
        sys.exit("no experiment finished: " + "; ".join(str(f.get("error")) for f in figures))
    mean = lambda key: sum(float(f.get(key) or 0.0) for f in ok) / len(ok)
    step, train, compile_, total, wall = (mean(k) for k in ("step_seconds", "training_seconds", "compile_seconds",
                                                            "total_seconds", "wall_seconds"))
    eval_and_rest = total - train - compile_
    startup = wall - total
    loop = step - wall
    overhead = step - train
    print(f"{len(ok)} warm experiments at a {budget:g} s budget, means per experiment:")
    for name, seconds in (("whole loop step", step), ("training (budget)", train), ("compile", compile_),
                          ("eval + checkpoint + rest of train", eval_and_rest),
                          ("process start-up and exit", startup), ("loop: propose, git, ledger", loop)):
        print(f"  {name:<36} {seconds:8.2f} s")
    phases = [f.get("phase_seconds") or {} for f in ok]
    if any(phases):
        shown = ", ".join(f"{name} {sum(float(p.get(name) or 0.0) for p in phases) / len(ok):.2f}" for name in PHASES)
        print(f"  engine phases (s): {shown}")
    scoring = mean("scoring_seconds")
    alone = [f["forward_alone_seconds"] for f in ok if f.get("forward_alone_seconds")]
    calls = mean("forward_calls")
    if scoring and alone:
        print(f"  scorer {scoring:.2f} s for {calls:.0f} forward calls; the same calls alone {alone[0]:.2f} s: "
              f"{scoring / alone[0]:.2f}x its forward passes")
    scorer = [f for f in ok if f.get("scorer_process_seconds")]
    if scorer:
        process = sum(float(f["scorer_process_seconds"]) for f in scorer) / len(scorer)
        print(f"  of which a separate scorer process  {process:8.2f} s (the engine died while scoring)")
    print(f"training share: {100 * train / step:.1f}% of wall time (overhead {overhead:.1f} s per experiment)")
    share = TARGET_BUDGET_SECONDS / (TARGET_BUDGET_SECONDS + overhead)
    print(f"extrapolated to a {TARGET_BUDGET_SECONDS:g} s budget with the same fixed overhead: {100 * share:.1f}% "
          f"training ({'meets' if share >= 0.95 else 'misses'} the 95% target)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-seconds", type=float, default=10.0)
    parser.add_argument("--experiments", type=int, default=3)
    parser.add_argument("--train", default=str(REPO / "train.py"), help="the train.py to measure")
    parser.add_argument("--timeout", type=float, default=None,
                        help="hard timeout per experiment, seconds (default: the loop's; a loaded machine needs more)")
    parser.add_argument("--no-forward-timing", action="store_true",
                        help="skip timing the bare forward calls after the loop")
    parser.add_argument("--data", default=None, help="prepared cache (default: the last prepared)")
    args = parser.parse_args()
    report(measure(args), args.budget_seconds)


if __name__ == "__main__":
    main()
