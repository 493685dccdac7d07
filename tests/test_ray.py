"""`autoresearch loop --ray ADDRESS` on a real two-node Ray cluster that the tests start here.

Both nodes are `ray start --block` processes bound to 127.0.0.1, one CPU each, each in a session
and private --temp-dir of its own; the fixture ends only what it started (every process under
each node's `ray start`), never `ray stop`.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from engine.errors import UserError  # noqa: E402
from engine.loop import ray_cluster, ray_node  # noqa: E402
from loop_helpers import git, ledger_rows, make_repo, run_cli  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SCORE = """import os, sys, time, yaml
x = yaml.safe_load(open('knob.yaml'))['x']
started = time.time()
with open(os.environ['STARTS_FILE'], 'a') as f:
    f.write(f"{x} {os.environ.get('RAY_RAYLET_PID')}\\n")
time.sleep(float(os.environ.get('SCORE_SLEEP', '1')))
print('started_at:', started)
print('ended_at:', time.time())
print('accuracy:', 1.0 - abs(x - 4.0) / 10)
"""
PROGRAM = """# a command task on a Ray cluster
## Task
- kind: command
- editable: knob.yaml
- score: python score.py
- metric: accuracy
- direction: maximize
- timeout_seconds: 120
- pass_env: STARTS_FILE, SCORE_SLEEP
## Noise
- baseline_runs: 1
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


class Node:
    """One `ray start --block` and everything under it (raylet, workers, their children)."""

    def __init__(self, args: list[str], env: dict, log: Path):
        self.temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths have a limit
        ray_cli = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
        command = [ray_cli, "start", *args, "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
                   "--object-store-memory", str(100 << 20), "--temp-dir", self.temp, "--block"]
        self.process = subprocess.Popen(command, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                                        start_new_session=True)

    def raylet_pid(self) -> int | None:
        for pid in _descendants(self.process.pid):
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "raylet":
                    return pid
            except OSError:
                continue
        return None

    def kill(self) -> None:
        for pid in _descendants(self.process.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait()
        shutil.rmtree(self.temp, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head and a second node on 127.0.0.1, one CPU each; yields (address, head, second, node cache)."""
    folder = tmp_path_factory.mktemp("ray")
    node_cache = folder / "node-cache"  # the nodes' own data cache: empty, prepared on demand
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0",
           "AUTORESEARCH_CACHE": str(node_cache), "JAX_PLATFORMS": "cpu",
           # a killed node is noticed in seconds, not the default half minute
           "RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3",
           "RAY_health_check_timeout_ms": "1000"}
    env.pop("AUTORESEARCH_TRAIN_COMMAND", None)
    port = _free_port()
    address = f"127.0.0.1:{port}"
    head = Node(["--head", "--port", str(port), "--include-dashboard=false"], env, folder / "head.log")
    nodes = [head]
    try:
        _wait_for_port(port)
        second = Node(["--address", address], env, folder / "second.log")
        nodes.append(second)
        _wait_for_nodes(address, 2)
        yield address, head, second, node_cache
    finally:
        for node in reversed(nodes):
            node.kill()


def _wait_for_port(port: int, seconds: float = 60) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"the Ray head did not open port {port}")


def _wait_for_nodes(address: str, count: int, seconds: float = 90) -> None:
    probe = ("import ray,sys,time\nray.init(address=sys.argv[1], _node_ip_address='127.0.0.1', logging_level='ERROR')\n"
             "end=time.time()+%d\nwhile time.time()<end and sum(n['Alive'] for n in ray.nodes())<%d: time.sleep(0.3)\n"
             "print(sum(n['Alive'] for n in ray.nodes()))" % (seconds, count))
    done = subprocess.run([sys.executable, "-c", probe, address], capture_output=True, text=True, timeout=seconds + 60)
    assert done.stdout.strip().endswith(str(count)), done.stdout + done.stderr


def _command_repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    for name, text in {"knob.yaml": "x: 1.0\n", "score.py": SCORE, "program.md": PROGRAM,
                       ".gitignore": "runs/\n__pycache__/\n"}.items():
        (root / name).write_text(text)
    git(root, "init", "-q", "-b", "main")
    for args in (("add", "-A"), ("commit", "-q", "-m", "start")):
        git(root, "-c", "user.email=t@e", "-c", "user.name=t", *args)
    return root


def _consistent(root: Path, tag: str, rows: list[dict]) -> None:
    """The ledger, branch and tree as --workers leaves them."""
    assert [r["experiment"] for r in rows] == list(range(len(rows)))
    assert git(root, "rev-parse", "--abbrev-ref", "HEAD") == f"autoresearch/{tag}"
    assert git(root, "rev-parse", "HEAD") == [r for r in rows if r["kept"]][-1]["commit"]
    assert git(root, "status", "--porcelain") == ""
    assert git(root, "worktree", "list").count("\n") == 0
    assert len((root / "runs" / tag / "results.tsv").read_text().splitlines()) == len(rows) + 1


def _starts(path: Path) -> list[tuple[str, int]]:
    return [(line.split()[0], int(line.split()[1])) for line in path.read_text().splitlines()] if path.exists() else []


def test_command_loop_runs_two_at_once_on_both_nodes(cluster, tmp_path):
    address, head, second, _ = cluster
    root = _command_repo(tmp_path)
    starts = tmp_path / "starts.txt"
    done = run_cli(root, "loop", "--tag", "rc", "--agent", "offline", "--ray", address, "--max-experiments", "8",
                   env={"PYTHONPATH": str(REPO), "STARTS_FILE": str(starts), "JAX_PLATFORMS": "cpu"}, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 experiments in flight" in done.stdout + done.stderr
    rows = ledger_rows(root, "rc")
    assert len(rows) == 8 and all(r["status"] in ("baseline", "confirm", "keep", "discard", "stale") for r in rows), rows
    _consistent(root, "rc", rows)
    assert len({r["node"] for r in rows}) == 2 and {r["worker"] for r in rows} == {"r0", "r1"}
    raylets = {pid for _, pid in _starts(starts)}
    assert raylets == {head.raylet_pid(), second.raylet_pid()}  # both nodes ran experiments
    spans = [(r["figures"]["started_at"], r["figures"]["ended_at"]) for r in rows]
    assert any(a[0] < b[1] and b[0] < a[1] for i, a in enumerate(spans) for b in spans[i + 1:])  # two at once
    assert len(_starts(starts)) == 8  # each experiment ran once


def test_unreachable_cluster_is_an_error_at_start(tmp_path):
    root = _command_repo(tmp_path)
    port = _free_port()
    done = run_cli(root, "loop", "--tag", "un", "--agent", "offline", "--ray", f"127.0.0.1:{port}",
                   "--max-experiments", "2", env={"PYTHONPATH": str(REPO)}, timeout=60)
    assert done.returncode == 2 and f"127.0.0.1:{port} cannot be reached" in done.stderr, done.stderr
    assert ledger_rows(root, "un") == []


def test_plan_fits_experiments_node_by_node(monkeypatch):
    nodes = [{"CPU": 3.0, "GPU": 2.0}, {"CPU": 3.0, "GPU": 1.0}]
    monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    gpu = ray_cluster.plan(nodes, 1, None)
    assert (gpu.resource, gpu.fits, gpu.options()["num_gpus"]) == ("GPU", 3, 1)
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    cpu = ray_cluster.plan(nodes, 2, None)
    assert (cpu.resource, cpu.fits, cpu.in_flight) == ("CPU", 2, 2)  # 3+3 CPUs, but 2 a node: one on each
    assert ray_cluster.plan(nodes, 1, 4).in_flight == 4
    with pytest.raises(UserError, match="asks for 4"):
        ray_cluster.plan(nodes, 4, None)


def test_a_node_with_other_data_is_refused_with_both_fingerprints(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tmp_path))
    (tmp_path / "stdlib-v512-abc").mkdir()
    (tmp_path / "stdlib-v512-abc" / "manifest.json").write_text(json.dumps({"fingerprint": "b" * 64}))
    manifest = {"name": "stdlib-v512-abc", "fingerprint": "a" * 64, "spec": {"dataset": "stdlib"}, "constants": {}}
    with pytest.raises(ray_node.DataMismatch, match=f"{'b' * 64}.*{'a' * 64}"):
        ray_node.local_data(manifest, "node-x")


TRAIN_PROGRAM = """# the default train.py on a Ray cluster
## Editable files
- train.py
## Budget
- budget_tokens: 16384
- timeout_seconds: 400
## Noise
- baseline_runs: 1
"""


@pytest.mark.slow
def test_default_train_py_on_the_cluster_with_data_prepared_on_the_nodes(cluster, prepared_data, tmp_path):
    """4 experiments of the real train.py; the nodes' cache starts empty and is prepared there
    from the manifest's spec, to the coordinator's fingerprint."""
    address, _, _, node_cache = cluster
    node_cache.mkdir(parents=True, exist_ok=True)  # the operator copies the coordinator's split key
    (node_cache / "split.key").write_bytes((prepared_data.parent / "split.key").read_bytes())
    root = make_repo(tmp_path, train_py=(REPO / "train.py").read_text(), program_md=TRAIN_PROGRAM, fixed_engine=False)
    done = run_cli(root, "loop", "--tag", "rt", "--agent", "offline", "--ray", address, "--max-experiments", "4",
                   "--data", str(prepared_data), env={"PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = ledger_rows(root, "rt")
    assert len(rows) == 4 and all(r["status"] in ("baseline", "confirm", "keep", "discard", "stale") for r in rows), rows
    _consistent(root, "rt", rows)
    fingerprint = json.loads((prepared_data / "manifest.json").read_text())["fingerprint"]
    assert all(r["manifest_fingerprint"] == fingerprint and 0 < r["val_bpb"] < 20 for r in rows)
    assert json.loads((node_cache / prepared_data.name / "manifest.json").read_text())["fingerprint"] == fingerprint
    kept = [r for r in rows if r["kept"]]
    assert all(r["node"] and Path(r["checkpoint"]).is_dir() for r in kept)  # left on the node (this machine)
    assert (root / "runs" / "rt" / "exp-0000" / "train.log").read_text().count("val_bpb") >= 1


def test_a_node_killed_mid_experiment_runs_it_again_once(cluster, tmp_path):
    """Last in this file: it kills the second node."""
    address, head, second, _ = cluster
    root = _command_repo(tmp_path)
    starts = tmp_path / "starts.txt"
    env = {**os.environ, "PYTHONPATH": str(REPO), "STARTS_FILE": str(starts), "JAX_PLATFORMS": "cpu",
           "SCORE_SLEEP": "4"}
    loop = subprocess.Popen([sys.executable, "-m", "engine.cli", "loop", "--tag", "rk", "--agent", "offline",
                             "--ray", address, "--max-experiments", "4"], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        doomed, end = second.raylet_pid(), time.monotonic() + 180
        while not any(pid == doomed for _, pid in _starts(starts)) and time.monotonic() < end:
            time.sleep(0.1)
        killed_x = next(x for x, pid in _starts(starts) if pid == doomed)
        second.kill()  # mid-experiment: its score sleeps 4 s
        output, _ = loop.communicate(timeout=300)
    finally:
        if loop.poll() is None:
            loop.kill()
    assert loop.returncode == 0, output
    rows = ledger_rows(root, "rk")
    assert len(rows) == 4 and all(r["status"] in ("baseline", "confirm", "keep", "discard", "stale") for r in rows), rows
    _consistent(root, "rk", rows)
    runs_of_killed = [pid for x, pid in _starts(starts) if x == killed_x]
    assert runs_of_killed == [doomed, head.raylet_pid()]  # started on the lost node, then once more on the head
    assert len(_starts(starts)) == 5  # 4 experiments, one of them twice
    assert len({r["node"] for r in rows}) == 1  # every recorded run finished on the head


@pytest.mark.slow
def test_a_command_tasks_score_is_contained_on_the_nodes(cluster, tmp_path):
    """On a Ray node the score runs contained too: its setsid daemon and double-forked child end with it."""
    from test_processes import assert_escapes_gone, escaping_task_repo
    root = escaping_task_repo(tmp_path)
    done = run_cli(root, "loop", "--tag", "rk", "--agent", "offline", "--ray", cluster[0], "--max-experiments", "4",
                   env={"PYTHONPATH": str(REPO), "PIDS_DIR": str(tmp_path / "pids"), "JAX_PLATFORMS": "cpu"},
                   timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(ledger_rows(root, "rk")) == 4
    assert_escapes_gone(tmp_path / "pids", 4)
