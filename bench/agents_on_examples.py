"""The best score an agent reaches on the command-task examples, over seeds: the issue's comparison.

Each run is the real loop (`autoresearch loop --program examples/NAME/program.md --agent A
--seed S --max-experiments N`) in a scratch clone of a commit of this repository, so the
code measured is that commit's (HEAD, or main for the landed agent). It prints one line per
run and the median best per example, with the holdout figure of each best (the report's
`holdout` command, never seen by the loop); runs go one after another (they share the CPUs).

    python bench/agents_on_examples.py --agent offline --seeds 0 1 2 --experiments 40
    python bench/agents_on_examples.py --agent offline --commit main   # the landed agent
    python bench/agents_on_examples.py --sampler cmaes
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = ("support-routing", "rag-tuning")
METRICS = {"support-routing": "accuracy", "rag-tuning": "recall@1"}


def clone(commit: str, directory: Path) -> Path:
    """A scratch clone of REPO at `commit`, with the working tree's uncommitted files when commit is HEAD."""
    root = directory / "repo"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(REPO), str(root)], check=True)
    subprocess.run(["git", "-C", str(root), "checkout", "-q", commit], check=True)
    return root


def run_loop(root: Path, example: str, agent: str, seed: int, experiments: int, extra: list[str],
             sampler: str | None = None) -> dict:
    """One loop; returns the best value of the metric, the baseline's, the wall seconds."""
    tag = f"bench-{example}-{agent.replace('+', '-')}-{seed}"
    if sampler:  # the example's program.md with the sampler set (the clone's copy only)
        program = root / "examples" / example / "program.md"
        program.write_text(program.read_text() + f"\n## Offline agent\n- sampler: {sampler}\n")
        subprocess.run(["git", "-C", str(root), "-c", "user.name=bench", "-c", "user.email=bench@localhost",
                        "commit", "-qam", f"sampler {sampler}"], check=True)
    env = {**os.environ, "PYTHONPATH": str(root)}
    start = time.monotonic()
    command = [sys.executable, "-c", "import sys; from engine.cli import main; sys.exit(main())", "loop",
               "--tag", tag, "--program", f"examples/{example}/program.md", "--agent", agent,
               "--seed", str(seed), "--max-experiments", str(experiments), *extra]
    done = subprocess.run(command, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.monotonic() - start
    if done.returncode != 0:
        raise SystemExit(f"loop failed ({done.returncode}): {done.stderr[-2000:]}")
    rows = [json.loads(line) for line in (root / "runs" / tag / "results.jsonl").read_text().splitlines() if line]
    metric = METRICS[example]
    kept = [row[metric] for row in rows if row.get("kept") and isinstance(row.get(metric), (int, float))]
    report = subprocess.run([*command[:3], "report", "--tag", tag, "--json"], cwd=root, env=env,
                            capture_output=True, text=True, check=True)
    facts = json.loads(report.stdout)
    return {"best": max(kept), "baseline": kept[0], "rows": len(rows), "seconds": seconds,
            "holdout": facts["best"].get("test_bpb"), "holdout_baseline": facts["baseline"].get("test_bpb")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent", default="offline")
    parser.add_argument("--commit", default="HEAD", help="the commit whose code runs (main: the landed agent)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--experiments", type=int, default=40)
    parser.add_argument("--examples", nargs="+", default=list(EXAMPLES))
    parser.add_argument("--sampler", default=None, help="set `## Offline agent` sampler (tpe, cmaes, steps)")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more loop flags")
    args = parser.parse_args()
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", args.commit], check=True,
                            capture_output=True, text=True).stdout.strip()
    for example in args.examples:
        bests, holdouts = [], []
        name = f"{example} {args.agent}{'/' + args.sampler if args.sampler else ''}"
        for seed in args.seeds:
            with tempfile.TemporaryDirectory(prefix="autoresearch-agents-bench-") as tmp:
                root = clone(commit, Path(tmp))
                figures = run_loop(root, example, args.agent, seed, args.experiments, args.extra, args.sampler)
            bests.append(figures["best"])
            holdouts.append(figures["holdout"])
            print(f"{name}@{commit} seed {seed}: best {figures['best']:.4f} (baseline {figures['baseline']:.4f}), "
                  f"holdout of the best {figures['holdout']:.4f} (baseline {figures['holdout_baseline']:.4f}), "
                  f"{figures['rows']} rows, {figures['seconds']:.0f} s", flush=True)
        print(f"{name}@{commit}: median best {statistics.median(bests):.4f}, median holdout "
              f"{statistics.median(holdouts):.4f} over seeds {' '.join(map(str, args.seeds))}", flush=True)


if __name__ == "__main__":
    main()
