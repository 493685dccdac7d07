"""A change that does nothing, proposed 10 times to the real engine (CPU, 10 s budget): how many are kept.

    PYTHONPATH=. JAX_PLATFORMS=cpu python bench/noop.py [--proposals 10] [--budget-seconds 10]

Copies train.py, prepare.py and program.md into a scratch git repository, runs `autoresearch loop`
there with a command agent that appends a comment to train.py (no effect on the model), and
prints the kept candidates out of the proposals (issue 21's acceptance: at most 1 of 10), the
pooled noise and the experiments spent. Needs a prepared cache (`autoresearch prepare`). Slow:
the baseline's runs, then 1 to 4 runs per proposal.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOOP = 'echo "# a comment the model ignores ($AUTORESEARCH_EXPERIMENT)" >> train.py && echo no-op comment'


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proposals", type=int, default=10)
    parser.add_argument("--budget-seconds", type=float, default=10)
    parser.add_argument("--baseline-runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        repo = Path(scratch) / "repo"
        repo.mkdir()
        for name in ("train.py", "prepare.py"):
            shutil.copy(ROOT / name, repo / name)
        (repo / "program.md").write_text(f"## Noise\n- baseline_runs: {args.baseline_runs}\n- confirm_runs: 0\n")
        (repo / ".gitignore").write_text("runs/\n__pycache__/\n")
        for command in (["init", "-q", "-b", "main"], ["add", "-A"],
                        ["-c", "user.email=b@b", "-c", "user.name=b", "commit", "-q", "-m", "start"]):
            subprocess.run(["git", *command], cwd=repo, check=True)
        limit = args.baseline_runs + 4 * args.proposals  # room for every proposal's four runs
        subprocess.run([sys.executable, "-m", "engine.cli", "loop", "--tag", "noop", "--agent", "command",
                        "--agent-cmd", NOOP, "--max-experiments", str(limit),
                        "--budget-seconds", f"{args.budget_seconds:g}"], cwd=repo, check=True)
        rows = [json.loads(line) for line in (repo / "runs/noop/results.jsonl").read_text().splitlines()]
    candidates = [r for r in rows if r.get("role") == "candidate"][: args.proposals]
    firsts = {r["experiment"] for r in candidates}
    kept = sum(1 for r in rows if r.get("kept") and r.get("rerun_of", r.get("experiment")) in firsts
               and r.get("role") in ("candidate", "rerun"))
    print(json.dumps({"proposals": len(candidates), "kept": kept, "experiments": len(rows),
                      "noise_sigma": rows[-1].get("noise"), "noise_df": rows[-1].get("noise_df")}))
    return 0 if kept <= 1 else 1


if __name__ == "__main__":
    sys.exit(main())
