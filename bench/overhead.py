"""The loop's overhead per experiment: wall time of a whole loop step minus training time.

A step is propose + guard + commit + `autoresearch train` (its trainer process: start-up,
compile, training, checkpoint and export; then its scorer process: start-up, load, causality
probe, metric) + ledger + git. The bench runs the baseline once to warm the
persistent compilation cache, then N steps of the same program (each proposal only adds
a comment, so the compiled program is unchanged), in a scratch copy of this repository's
train.py. It prints where the time goes, the share that is training, and what that
share becomes at a 300 s budget (the overhead does not grow with the budget: compile
and eval are fixed costs).

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
            cycle.run_baseline(session)  # cold: fills the persistent compilation cache
            return timed_experiments(session, CommentAgent(), args.experiments)
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
    scorer = [f for f in ok if f.get("scorer_process_seconds")]
    if scorer:
        part = lambda name: sum(float((f.get("scoring_phases") or {}).get(name) or 0.0) for f in scorer) / len(scorer)
        process = sum(float(f["scorer_process_seconds"]) for f in scorer) / len(scorer)
        inside = sum(float(f.get("scoring_seconds") or 0.0) for f in scorer) / len(scorer)
        print(f"  of which the scorer process         {process:8.2f} s: start-up and exit {process - inside:.2f}, "
              f"load {part('load'):.2f}, probe (first call compiles) {part('probe'):.2f}, metric {part('metric'):.2f}")
        print(f"  scorer beyond the metric: {process - part('metric'):.2f} s = "
              f"{100 * (process - part('metric')) / TARGET_BUDGET_SECONDS:.1f}% of a {TARGET_BUDGET_SECONDS:g} s experiment")
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
    parser.add_argument("--data", default=None, help="prepared cache (default: the last prepared)")
    args = parser.parse_args()
    report(measure(args), args.budget_seconds)


if __name__ == "__main__":
    main()
