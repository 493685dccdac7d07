"""Chaos: kill the loop at random moments, start it again, and check nothing was lost or doubled.

    python bench/chaos.py --mode serial --kills 20
    python bench/chaos.py --mode workers --kills 20          # --workers 2
    python bench/chaos.py --mode ray --kills 20              # two local Ray nodes (pip install -e ".[ray]")

Each kill is gated on the loop's progress, never on a fixed sleep: before each start the script
draws one gate (a new ledger row, a run in flight, an agent turn in progress) and kills the loop
with SIGKILL once it is seen, after a random extra delay of up to --jitter seconds, so kills land
in every phase of the loop even on a slow machine. After the last kill the loop runs to its end;
then the ledger must hold experiments 0..N-1 once each, every commit it names must exist, no
candidate commit may be recorded twice, and the working tree must be clean at the best commit.

Experiments use a stand-in for `autoresearch train` (tests/loop_helpers.py's FAKE_TRAIN, taking
--train-sleep seconds), so a run of 20 kills takes a minute or two. A mode is a function that
returns the loop's extra flags and any set-up it needs (MODES): the swarm adds its own there.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from loop_helpers import FAKE_TRAIN, git, ledger_rows, make_cache, make_repo  # noqa: E402

TAG = "chaos"
GATES = ("row", "running", "turn")
GATE_TIMEOUT_S = 120.0


class Mode:
    """How the loop runs: its extra flags, the gates it shows, and set-up / tear-down around the
    whole bench."""
    name = "serial"
    gates = GATES

    def flags(self) -> list[str]:
        return []

    def start(self, env: dict, work: Path) -> None:
        pass

    def stop(self) -> None:
        pass

    def running(self, root: Path) -> bool:
        """Whether a run is in flight now (the serial loop's child.json names it)."""
        return (root / "runs" / TAG / "child.json").exists()


class Workers(Mode):
    name = "workers"
    gates = ("row", "running")  # the coordinator's agent turns leave no file to watch

    def flags(self) -> list[str]:
        return ["--workers", "2"]

    def running(self, root: Path) -> bool:
        inflight = root / "runs" / TAG / "inflight"
        return inflight.is_dir() and any(inflight.glob("*.child.json"))


class Ray(Mode):
    """Two local Ray nodes (a head and a second), one CPU each; the coordinator is what gets killed."""
    name = "ray"
    gates = ("row",)  # runs and turns happen on the nodes and in the coordinator's memory

    def __init__(self):
        self.nodes: list[subprocess.Popen] = []
        self.temps: list[str] = []
        self.address = ""

    def flags(self) -> list[str]:
        return ["--ray", self.address, "--workers", "2"]

    def start(self, env: dict, work: Path) -> None:
        import socket
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.address = f"127.0.0.1:{port}"
        node_env = {**env, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(REPO)}
        for args in (["--head", "--port", str(port), "--include-dashboard=false"], ["--address", self.address]):
            temp = tempfile.mkdtemp(prefix="rc", dir="/tmp")
            self.temps.append(temp)
            ray_cli = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
            self.nodes.append(subprocess.Popen(
                [ray_cli, "start", *args, "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
                 "--object-store-memory", str(100 << 20), "--temp-dir", temp, "--block"],
                env=node_env, stdout=open(work / f"node{len(self.nodes)}.log", "wb"), stderr=subprocess.STDOUT,
                start_new_session=True))
            time.sleep(8 if len(self.nodes) == 1 else 4)

    def stop(self) -> None:
        for node in reversed(self.nodes):
            try:
                os.killpg(node.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            node.wait()
        for temp in self.temps:
            shutil.rmtree(temp, ignore_errors=True)

    def running(self, root: Path) -> bool:
        return Workers.running(self, root)


MODES = {"serial": Mode, "workers": Workers, "ray": Ray}


def set_up(work: Path, train_sleep: float) -> tuple[Path, dict]:
    root = make_repo(work)
    cache = make_cache(work)
    fake = work / "fake_train.py"
    fake.write_text(FAKE_TRAIN)
    env = {**os.environ, "AUTORESEARCH_CACHE": str(cache), "FAKE_TRAIN_SLEEP": str(train_sleep),
           "AUTORESEARCH_TRAIN_COMMAND": f"{sys.executable} {fake}", "PYTHONUNBUFFERED": "1"}
    return root, env


def start_loop(root: Path, env: dict, mode: Mode, experiments: int, log) -> subprocess.Popen:
    command = [sys.executable, "-m", "engine.cli", "loop", "--tag", TAG, "--agent", "offline",
               "--max-experiments", str(experiments), *mode.flags()]
    return subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_for_gate(gate: str, root: Path, mode: Mode, process: subprocess.Popen, rows_before: int) -> bool:
    """Wait until the gate is seen (True) or the loop ended first (False)."""
    deadline = time.monotonic() + GATE_TIMEOUT_S
    agent = root / "runs" / TAG / "agent.json"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if gate == "row" and len(ledger_rows(root, TAG)) > rows_before:
            return True
        if gate == "running" and mode.running(root):
            return True
        if gate == "turn" and (agent.exists() or _pending(root)):
            return True
        time.sleep(0.01)
    return True  # a gate never seen: kill anyway, and say so in the figures


def _pending(root: Path) -> bool:
    return (root / "runs" / TAG / "pending.json").exists()


def check(root: Path, experiments: int) -> list[str]:
    """What is wrong with the ledger and the tree after the last run ([] when all is well)."""
    rows = ledger_rows(root, TAG)
    problems = []
    numbers = [r["experiment"] for r in rows]
    if numbers != list(range(len(rows))):
        problems.append(f"experiment numbers are not 0..{len(rows) - 1} once each: {numbers}")
    if len(rows) != experiments:
        problems.append(f"{len(rows)} rows, {experiments} expected")
    candidates = [r["commit"] for r in rows if r.get("role") == "candidate" and r.get("commit")]
    if len(candidates) != len(set(candidates)):
        problems.append("a candidate commit was recorded twice")
    for row in rows:
        if row.get("commit"):
            try:
                git(root, "cat-file", "-e", row["commit"])
            except subprocess.CalledProcessError:
                problems.append(f"experiment {row['experiment']} names commit {row['commit'][:7]}, which is gone")
    if git(root, "status", "--porcelain", "--untracked-files=no"):
        problems.append("the working tree is not clean")
    kept = [r["commit"] for r in rows if r.get("kept")]
    if kept and git(root, "rev-parse", "HEAD") != kept[-1]:
        problems.append("HEAD is not the last kept commit")
    tsv = (root / "runs" / TAG / "results.tsv").read_text().splitlines()
    if len(tsv) != len(rows) + 1:
        problems.append(f"results.tsv has {len(tsv) - 1} rows, results.jsonl {len(rows)}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=sorted(MODES), default="serial")
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--experiments", type=int, default=30)
    parser.add_argument("--train-sleep", type=float, default=0.3, help="seconds each fake run takes")
    parser.add_argument("--jitter", type=float, default=0.4, help="random extra delay after a gate, seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix=f"chaos-{args.mode}-"))
    root, env = set_up(work, args.train_sleep)
    mode = MODES[args.mode]()
    mode.start(env, work)
    started, kills, gates_seen, ended_early = time.monotonic(), 0, {g: 0 for g in mode.gates}, 0
    log = open(work / "loop.log", "ab")
    try:
        while kills < args.kills:
            rows_before = len(ledger_rows(root, TAG))
            if rows_before >= args.experiments:
                break
            gate = rng.choice(mode.gates)
            process = start_loop(root, env, mode, args.experiments, log)
            if not wait_for_gate(gate, root, mode, process, rows_before):
                ended_early += 1
                if process.returncode != 0:
                    print(f"the loop exited with status {process.returncode}: see {work / 'loop.log'}")
                    return 1
                continue
            time.sleep(rng.uniform(0, args.jitter))
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills += 1
            gates_seen[gate] += 1
        process = start_loop(root, env, mode, args.experiments, log)
        code = process.wait(timeout=1800)
        problems = check(root, args.experiments) if code == 0 else [f"the last run exited with status {code}"]
    finally:
        mode.stop()
        log.close()
    rows = ledger_rows(root, TAG)
    print(json.dumps({"mode": args.mode, "kills": kills, "gates": gates_seen, "loop_ended_before_a_gate": ended_early,
                      "rows": len(rows), "statuses": _count(r["status"] for r in rows),
                      "seconds": round(time.monotonic() - started, 1), "problems": problems,
                      "log": str(work / "loop.log")}, indent=1))
    if not problems and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if problems else 0


def _count(values) -> dict:
    counts: dict = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts


if __name__ == "__main__":
    sys.exit(main())
