"""Chaos for a swarm: two workers over one bare git remote, a random one killed 20 times.

    python bench/chaos_swarm.py --kills 20 --seed 0

bench/chaos.py's swarm mode: the same kind of gates and the same ledger check (imported from
it), for a swarm's two clones. Before each kill the script draws a worker and a gate, both at
random: a new row in that worker's ledger, a run in flight (its child.json), a `git push` or a
`git fetch` of its own in flight (a row, claim or heartbeat going out, a sync coming in); once
the gate is seen it waits a random extra delay of up to --jitter seconds and sends SIGKILL,
then starts that worker again at once, so the other always works beside it. After the last
kill both run to --experiments. Then:

- each clone's ledger passes bench/chaos.py's check (experiments 0..N-1 once each, no
  candidate commit twice, every commit present, a clean tree at the last kept commit);
- the swarm's file of each clone (workers/NAME.CLONE.jsonl) holds its rows once each, exactly
  those of its ledger, and only its own clone's items; no other file holds rows of that name;
- the remote best is the commit of a kept row;
- no start was refused (a restarted clone is the same worker, never "another live worker").

Experiments use tests/loop_helpers.py's stand-in for `autoresearch train` (--train-sleep s).
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

from chaos import GATE_TIMEOUT_S, check  # noqa: E402  (bench/ is on the path: this file's folder)
from loop_helpers import FAKE_TRAIN, git, ledger_rows, make_cache, make_repo  # noqa: E402

TAG = "chaos"  # bench/chaos.py's check reads runs/chaos
LEDGER = f"autoresearch/{TAG}-ledger"
WORKERS = ("w0", "w1")
GATES = ("row", "running", "push", "fetch")


def set_up(work: Path, train_sleep: float, heartbeat: float) -> tuple[Path, dict]:
    """A bare remote and one clone per worker; the program beats every `heartbeat` seconds."""
    origin = make_repo(work)
    program = origin / "program.md"
    program.write_text(program.read_text() + f"\n## Swarm\n- heartbeat_seconds: {heartbeat}\n")
    git(origin, "commit", "-qam", "swarm settings")
    remote = work / "remote.git"
    git(work, "clone", "-q", "--bare", str(origin), str(remote))
    for name in WORKERS:
        git(work, "clone", "-q", str(remote), str(work / name))
        git(work / name, "config", "user.email", f"{name}@example.com")
        git(work / name, "config", "user.name", name)
    fake = work / "fake_train.py"
    fake.write_text(FAKE_TRAIN)
    env = {**os.environ, "AUTORESEARCH_CACHE": str(make_cache(work)), "FAKE_TRAIN_SLEEP": str(train_sleep),
           "AUTORESEARCH_TRAIN_COMMAND": f"{sys.executable} {fake}", "PYTHONUNBUFFERED": "1"}
    return remote, env


def start_worker(work: Path, remote: Path, env: dict, name: str, experiments: int, seed: int, log):
    command = [sys.executable, "-m", "engine.cli", "loop", "--tag", TAG, "--agent", "offline",
               "--remote", str(remote), "--worker", name, "--max-experiments", str(experiments),
               "--seed", str(seed)]
    return subprocess.Popen(command, cwd=work / name, env=env, stdout=log, stderr=subprocess.STDOUT)


def git_child(pid: int, verb: str) -> bool:
    """Whether a `git VERB` child of pid runs now."""
    for task in os.listdir("/proc"):
        if not task.isdigit():
            continue
        try:
            parent = int(open(f"/proc/{task}/stat").read().rsplit(")", 1)[1].split()[1])
            argv = open(f"/proc/{task}/cmdline", "rb").read().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if parent == pid and argv[:2] == [b"git", verb.encode()]:
            return True
    return False


def wait_for_gate(gate: str, root: Path, process: subprocess.Popen, rows_before: int) -> bool:
    """Wait until the gate is seen (True) or the worker ended first (False)."""
    deadline = time.monotonic() + GATE_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if gate == "row" and len(ledger_rows(root, TAG)) > rows_before:
            return True
        if gate == "running" and (root / "runs" / TAG / "child.json").exists():
            return True
        if gate in ("push", "fetch") and git_child(process.pid, gate):
            return True
        time.sleep(0.005)
    return True  # a gate never seen: kill anyway


def worker_files(remote: Path) -> dict[str, list[dict]]:
    names = git(remote, "ls-tree", "--name-only", f"{LEDGER}:workers").splitlines()
    return {name: [json.loads(line) for line in git(remote, "show", f"{LEDGER}:workers/{name}").splitlines()
                   if line.strip()] for name in names}


def check_swarm(work: Path, remote: Path, experiments: int) -> list[str]:
    """What is wrong with the ledgers, the swarm's files and its best ([] when all is well)."""
    problems = [f"{name}: {problem}" for name in WORKERS for problem in check(work / name, experiments)]
    files = worker_files(remote)
    kept = set()
    for name in WORKERS:
        clone = json.loads((work / name / "runs" / TAG / "swarm" / "clone.json").read_text())["clone"]
        items = files.get(f"{name}.{clone}.jsonl", [])
        rows = [item["experiment"] for item in items if item.get("record") == "row"]
        ledger = [row["experiment"] for row in ledger_rows(work / name, TAG)]
        if sorted(rows) != ledger:
            problems.append(f"{name}: the swarm holds rows {sorted(rows)}, its ledger {ledger}")
        if {(item.get("worker"), item.get("clone")) for item in items} != {(name, clone)}:
            problems.append(f"{name}: its file holds items of another clone")
        others = [file for file, items in files.items() if file != f"{name}.{clone}.jsonl"
                  and any(item.get("worker") == name for item in items)]
        if others:
            problems.append(f"{name}: rows of this name also in {others}")
        kept |= {item["commit"] for item in items if item.get("record") == "row" and item.get("kept")}
    best = git(remote, "for-each-ref", "--format=%(objectname)", "refs/heads/autoresearch/")
    bests = [line for line in best.splitlines()]
    heads = git(remote, "for-each-ref", "--format=%(refname:short)", "refs/heads/autoresearch/").splitlines()
    published = [sha for sha, head in zip(bests, heads) if head != LEDGER]
    if not published or any(sha not in kept for sha in published):
        problems.append(f"the remote best {published} is not the commit of a kept row")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--experiments", type=int, default=30, help="per worker")
    parser.add_argument("--train-sleep", type=float, default=0.3, help="seconds each fake run takes")
    parser.add_argument("--heartbeat", type=float, default=1.0, help="the workers' heartbeat_seconds")
    parser.add_argument("--jitter", type=float, default=0.4, help="random extra delay after a gate, seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="chaos-swarm-"))
    remote, env = set_up(work, args.train_sleep, args.heartbeat)
    logs = {name: open(work / f"{name}.log", "ab") for name in WORKERS}
    seeds = {name: index for index, name in enumerate(WORKERS)}
    run = lambda name: start_worker(work, remote, env, name, args.experiments, seeds[name], logs[name])
    started, kills, gates_seen, refused = time.monotonic(), 0, {g: 0 for g in GATES}, []
    processes = {name: run(name) for name in WORKERS}
    try:
        while kills < args.kills:
            alive = [name for name, process in processes.items() if process.poll() is None]
            for name, process in processes.items():
                if process.returncode not in (None, 0, -signal.SIGKILL):
                    refused.append(f"{name} exited with status {process.returncode}")
            if not alive or refused:
                break
            name, gate = rng.choice(alive), rng.choice(GATES)
            process = processes[name]
            if not wait_for_gate(gate, work / name, process, len(ledger_rows(work / name, TAG))):
                continue
            time.sleep(rng.uniform(0, args.jitter))
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills += 1
            gates_seen[gate] += 1
            processes[name] = run(name)
        for name in WORKERS:
            code = processes[name].wait(timeout=1800)
            if code not in (0, -signal.SIGKILL):
                refused.append(f"{name} exited with status {code}")
            if code == -signal.SIGKILL or len(ledger_rows(work / name, TAG)) < args.experiments:
                code = run(name).wait(timeout=1800)  # killed after the loop above: finish the night
                if code != 0:
                    refused.append(f"{name}'s last run exited with status {code}")
        problems = list(dict.fromkeys(refused)) + check_swarm(work, remote, args.experiments)
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
        for log in logs.values():
            log.close()
    rows = {name: ledger_rows(work / name, TAG) for name in WORKERS}
    print(json.dumps({"mode": "swarm", "workers": len(WORKERS), "kills": kills, "gates": gates_seen,
                      "rows": {name: len(r) for name, r in rows.items()},
                      "adoptions": {name: sum(1 for row in r if row.get("role") == "adopted")
                                    for name, r in rows.items()},
                      "seconds": round(time.monotonic() - started, 1), "problems": problems,
                      "logs": str(work)}, indent=1))
    if not problems and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
