"""The loop's own overhead per command-task experiment: a whole loop step minus the task's commands.

A step is propose (the offline agent) + guard (git status, parse, fixed-file check) +
git commit + check and score subprocesses + ledger + keep or reset (git). The bench
runs the real loop step in a scratch repository whose task is nearly free to score
(`awk` reads one number from a YAML file; the check is `true`), so what remains is
the loop's own work. It prints the mean and worst step, the commands' share, and the
overhead against the 0.5 s target.

    python bench/command_task.py --experiments 20
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.agents.offline import OfflineAgent  # noqa: E402
from engine.loop import cycle  # noqa: E402
from engine.loop.live_view import LiveView  # noqa: E402
from engine.loop.session import open_session  # noqa: E402
from overhead import timed_experiments  # noqa: E402  (bench/, beside this file)

PROGRAM = """# command-task overhead bench
## Task
- kind: command
- editable: conf/value.yaml
- score: awk '/^x:/ {{ v = $2 }} /^y:/ {{ w = $2 }} END {{ print "loss:", (v - 3) ^ 2 + (w - 0.5) ^ 2 }}' conf/value.yaml
- metric: loss
- direction: minimize
- check: true
## Noise
- baseline_runs: {baseline_runs}
"""
TARGET_SECONDS = 0.5


def scratch_repo(directory: Path, tracked_files: int) -> Path:
    """A repository with a task and `tracked_files` other tracked files (all fixed, all fingerprinted)."""
    root = directory / "repo"
    (root / "conf").mkdir(parents=True)
    (root / "conf" / "value.yaml").write_text("x: 1.0\ny: 2.0\n")
    (root / "program.md").write_text(PROGRAM.format(baseline_runs=1))
    (root / ".gitignore").write_text("runs/\n")
    (root / "data").mkdir()
    for n in range(tracked_files):
        (root / "data" / f"file{n:04d}.txt").write_text(f"fixed file {n}\n" * 50)
    for args in (["init", "-q"], ["add", "-A"],
                 ["-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-qm", "start"]):
        subprocess.run(["git", *args], cwd=root, check=True)
    return root


def measure(experiments: int, tracked_files: int) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="autoresearch-command-bench-") as tmp:
        root = scratch_repo(Path(tmp), tracked_files)
        os.chdir(root)
        loop_args = argparse.Namespace(tag="bench", program="program.md", data=None, seed=0, max_experiments=None,
                                       max_hours=None, timeout=None, budget_seconds=None, budget_flops=None,
                                       budget_tokens=None)
        session = open_session(loop_args, LiveView(interactive=False))
        try:
            session.repo.checkout_branch("bench")
            cycle.run_baseline(session)
            return timed_experiments(session, OfflineAgent(seed=0), experiments)
        finally:
            session.close()
            os.chdir(REPO)


def report(figures: list[dict]) -> bool:
    steps = [f["step_seconds"] for f in figures]
    commands = [f.get("wall_seconds") or 0.0 for f in figures]
    overhead = [s - c for s, c in zip(steps, commands)]
    print(f"{len(figures)} command-task experiments ({sum(f['status'] == 'keep' for f in figures)} kept):")
    print(f"  whole loop step        mean {statistics.mean(steps):.3f} s  max {max(steps):.3f} s")
    print(f"  check + score commands mean {statistics.mean(commands):.3f} s")
    print(f"  loop's own overhead    mean {statistics.mean(overhead):.3f} s  median {statistics.median(overhead):.3f} s"
          f"  max {max(overhead):.3f} s")
    ok = statistics.mean(overhead) < TARGET_SECONDS
    print(f"{'meets' if ok else 'misses'} the {TARGET_SECONDS} s target")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=20)
    parser.add_argument("--tracked-files", type=int, default=300, help="fixed files in the scratch repository")
    args = parser.parse_args()
    sys.exit(0 if report(measure(args.experiments, args.tracked_files)) else 1)


if __name__ == "__main__":
    main()
