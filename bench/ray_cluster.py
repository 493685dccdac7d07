"""Benchmark: experiments per hour of `loop --ray` on a two-node local Ray cluster vs `--workers 2`.

Starts a head and a second node on 127.0.0.1 (one CPU each, private temp dirs, ended by this
script), then runs the same command-task loop (a score that sleeps --score-seconds) both
ways in scratch repositories, and prints experiments per hour and the time a slot spends per
experiment outside the score command (coordinator, git, Ray submission, snapshot, landing).

    python bench/ray_cluster.py [--experiments 16] [--score-seconds 2]
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCORE = "import time, yaml\nx = yaml.safe_load(open('knob.yaml'))['x']\ntime.sleep(SECONDS)\nprint('accuracy:', 1.0 - abs(x - 4.0) / 10)\n"
PROGRAM = ("## Task\n- kind: command\n- editable: knob.yaml\n- score: python score.py\n- metric: accuracy\n"
           "- direction: maximize\n## Noise\n- baseline_runs: 1\n")


def tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            children.setdefault(int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1]), []).append(int(entry))
        except (OSError, ValueError):
            pass
    out, todo = [], [root]
    while todo:
        out.append(todo.pop())
        todo += children.get(out[-1], [])
    return out


def start_node(args: list[str], env: dict) -> tuple[subprocess.Popen, str]:
    temp = tempfile.mkdtemp(prefix="rb", dir="/tmp")
    ray = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
    command = [ray, "start", *args, "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
               "--object-store-memory", str(100 << 20), "--temp-dir", temp, "--block"]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True), temp


def repo(folder: Path, seconds: float) -> Path:
    folder.mkdir(parents=True)
    for name, text in {"knob.yaml": "x: 1.0\n", "score.py": SCORE.replace("SECONDS", str(seconds)),
                       "program.md": PROGRAM, ".gitignore": "runs/\n"}.items():
        (folder / name).write_text(text)
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["-c", "user.email=b@b", "-c", "user.name=b", "commit", "-qm", "start"]):
        subprocess.run(["git", *args], cwd=folder, check=True)
    return folder


def loop(folder: Path, extra: list[str], experiments: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "engine.cli", "loop", "--tag", "b", "--agent", "offline",
                           "--max-experiments", str(experiments), *extra], cwd=folder, env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stdout + done.stderr)
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--experiments", type=int, default=16)
    parser.add_argument("--score-seconds", type=float, default=2.0)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="ray-bench-"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    nodes = [start_node(["--head", "--port", str(port), "--include-dashboard=false"], env)]
    try:
        time.sleep(8)
        nodes.append(start_node(["--address", f"127.0.0.1:{port}"], env))
        time.sleep(10)
        for name, extra in (("--workers 2", ["--workers", "2"]), ("--ray (2 nodes)", ["--ray", f"127.0.0.1:{port}"])):
            wall = loop(repo(scratch / name.split()[0].strip("-"), args.score_seconds), extra, args.experiments)
            slot = wall * 2 / args.experiments - args.score_seconds
            print(f"{name:16s} {args.experiments} experiments in {wall:6.1f} s: {args.experiments / wall * 3600:6.0f} "
                  f"an hour; a slot spends {slot:5.2f} s per experiment outside the {args.score_seconds:g} s score")
    finally:
        for process, temp in reversed(nodes):
            for pid in tree(process.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            process.wait()
            shutil.rmtree(temp, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
