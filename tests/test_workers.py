"""`autoresearch loop --workers 2`: two experiments at once, one coordinator, the keep rule under concurrency.

The stand-in trainer (loop_helpers.FAKE_TRAIN) holds a configuration while FAKE_GATES/hold-LR-DEPTH
exists, so the test orders the runs exactly: A and B overlap, B finishes after A was kept (merge
path), C finishes after the merged B' was kept and conflicts with it (stale path).
"""
import re
import sys

import pytest

from engine import cli
from engine.agents.base import Proposal
from engine.loop import driver
from loop_helpers import FAKE_TRAIN, git, ledger_rows, make_cache, make_repo

# The knobs sit apart, so changes to different knobs merge without a conflict.
TRAIN_PY = '''"""A train.py for the stand-in engine."""
LEARNING_RATE = 0.04  # peak learning rate

# model size
#
DEPTH = 5  # layers

# which idea this is
#
TAG = ""
SLEEP = 0
'''


class ChoreographedAgent:
    """Scripted proposals; asking for proposal k releases the runs that test scenario holds until then."""
    name = "scripted"

    def __init__(self, gates, script):
        self.gates, self.script, self.requests = gates, list(script), []

    def propose(self, request):
        self.requests.append(request)
        if not self.script:
            return None
        edit, release = self.script.pop(0)
        for key in release:
            (self.gates / f"hold-{key}").unlink()
        path = request.repo_root / "train.py"
        text = path.read_text()
        for name, value in edit.items():
            text = re.sub(rf"^{name} = .*$", f"{name} = {value!r}", text, flags=re.M)
        path.write_text(text)
        return Proposal(description=", ".join(f"{k}: {v}" for k, v in edit.items()), hypothesis="h")


@pytest.fixture
def workers_env(tmp_path, monkeypatch):
    root = make_repo(tmp_path, train_py=TRAIN_PY)
    fake = tmp_path / "fake_train.py"
    fake.write_text(FAKE_TRAIN)
    gates = tmp_path / "gates"
    gates.mkdir()
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(make_cache(tmp_path)))
    monkeypatch.setenv("AUTORESEARCH_TRAIN_COMMAND", f"{sys.executable} {fake}")
    monkeypatch.setenv("FAKE_GATES", str(gates))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.chdir(root)
    return root, gates


def test_two_workers_run_at_once_merge_and_go_stale(workers_env, monkeypatch):
    root, gates = workers_env
    (gates / "hold-0.02-5").write_text("started-0.04-4")  # A waits until B has started
    (gates / "hold-0.04-4").write_text("")  # B waits until C is proposed
    (gates / "hold-0.01-5").write_text("")  # C waits until D is proposed
    agent = ChoreographedAgent(gates, [
        ({"LEARNING_RATE": 0.02}, []),  # A, w0: kept first
        ({"DEPTH": 4, "TAG": "b"}, []),  # B, w1: beats its base, but the best moved: merged onto A
        ({"LEARNING_RATE": 0.01, "TAG": "c"}, ["0.04-4"]),  # C, on A: TAG conflicts with B' -> stale
        ({"DEPTH": 3}, ["0.01-5"]),  # D, on B'
    ])
    monkeypatch.setattr(driver, "make_agent", lambda *a, **k: agent)
    assert cli.main(["loop", "--tag", "par", "--workers", "2", "--max-experiments", "20"]) == 0

    rows = ledger_rows(root, "par")
    assert [r["experiment"] for r in rows] == list(range(len(rows)))
    by = {r["description"]: r for r in rows}
    a, b, c = by["LEARNING_RATE: 0.02"], by["DEPTH: 4, TAG: b"], by["LEARNING_RATE: 0.01, TAG: c"]
    merged = [r for r in rows if r.get("merged_from") is not None]
    assert a["kept"] and a["worker"] != b["worker"]
    assert a["started_at"] < b["ended_at"] and b["started_at"] < a["ended_at"]  # both ran at once
    assert b["status"] == "discard" and "merged onto" in b["decision"] and b["base_commit"] != a["commit"]
    assert len(merged) == 1 and merged[0]["merged_from"] == b["experiment"] and merged[0]["kept"]
    assert merged[0]["base_commit"] == a["commit"]
    assert git(root, "rev-parse", f"{merged[0]['commit']}~1") == a["commit"]  # B's change on top of A
    assert c["status"] == "stale" and c["base_commit"] == a["commit"] and not c["kept"]
    assert agent.requests[1].in_flight and agent.requests[1].in_flight[0]["description"] == "LEARNING_RATE: 0.02"
    # consistent: the branch is at the last kept row, the tree clean, the worktrees gone
    kept = [r for r in rows if r["kept"]]
    assert git(root, "rev-parse", "HEAD") == kept[-1]["commit"]
    assert git(root, "status", "--porcelain") == ""
    assert git(root, "worktree", "list").count("\n") == 0
    assert all((root / "runs" / "par" / f"exp-{r['experiment']:04d}" / "train.log").exists()
               for r in rows if r.get("log"))
    assert len((root / "runs" / "par" / "results.tsv").read_text().splitlines()) == len(rows) + 1


def test_killed_coordinator_resumes_with_a_consistent_ledger(workers_env):
    import os
    import signal
    import subprocess
    import time

    root, _ = workers_env
    argv = [sys.executable, "-m", "engine.cli", "loop", "--tag", "k", "--agent", "offline", "--workers", "2",
            "--max-experiments", "9"]
    env = {**os.environ, "FAKE_TRAIN_SLEEP": "0.3"}
    first = subprocess.Popen(argv, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end = time.monotonic() + 60
    while len(ledger_rows(root, "k")) < 4 and time.monotonic() < end:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)  # mid-flight: two runs going, worktrees out
    first.wait()
    done = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = ledger_rows(root, "k")
    assert [r["experiment"] for r in rows] == list(range(9))
    assert git(root, "rev-parse", "HEAD") == [r for r in rows if r["kept"]][-1]["commit"]
    assert git(root, "status", "--porcelain") == "" and git(root, "worktree", "list").count("\n") == 0
    assert not (root / "runs" / "k" / "inflight").exists() or not any((root / "runs" / "k" / "inflight").iterdir())


def test_an_error_in_the_coordinator_ends_the_runs_in_flight(workers_env, monkeypatch):
    import os
    import time

    root, gates = workers_env
    (gates / "hold-0.02-5").write_text("")  # A would run until the test ends

    class BreaksOnSecondIdea(ChoreographedAgent):
        def propose(self, request):
            if self.requests:
                end = time.monotonic() + 30
                while not (gates / "started-0.02-5").exists() and time.monotonic() < end:
                    time.sleep(0.02)  # A is training now
                raise RuntimeError("the agent broke")
            return super().propose(request)

    agent = BreaksOnSecondIdea(gates, [({"LEARNING_RATE": 0.02}, [])])
    monkeypatch.setattr(driver, "make_agent", lambda *a, **k: agent)
    with pytest.raises(RuntimeError, match="the agent broke"):
        cli.main(["loop", "--tag", "err", "--workers", "2", "--max-experiments", "20"])
    pid = int((gates / "started-0.02-5").read_text())
    end = time.monotonic() + 10
    while time.monotonic() < end:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"training process {pid} outlived the coordinator")
    assert git(root, "worktree", "list").count("\n") == 0


MAXIMIZE_SCORE = """import yaml
x = yaml.safe_load(open('knob.yaml'))['x']
print('accuracy:', 1.0 - abs(x - 4.0) / 10)
"""
MAXIMIZE_PROGRAM = """# two workers on a command task
## Task
- kind: command
- editable: knob.yaml
- score: python score.py
- metric: accuracy
- direction: maximize
## Noise
- baseline_runs: 1
"""


def test_workers_run_a_command_task_in_its_direction(tmp_path):
    """--workers judges a command task's metric, higher is better, and keeps only gains."""
    from pathlib import Path

    from loop_helpers import run_cli
    root = tmp_path / "repo"
    root.mkdir()
    for name, text in {"knob.yaml": "x: 1.0\n", "score.py": MAXIMIZE_SCORE, "program.md": MAXIMIZE_PROGRAM,
                       ".gitignore": "runs/\n__pycache__/\n"}.items():
        (root / name).write_text(text)
    git(root, "init", "-q", "-b", "main")
    for args in (("add", "-A"), ("commit", "-q", "-m", "start")):
        git(root, "-c", "user.email=t@e", "-c", "user.name=t", *args)
    repo = str(Path(__file__).resolve().parents[1])
    done = run_cli(root, "loop", "--tag", "w", "--agent", "offline", "--workers", "2", "--max-experiments", "8",
                   env={"PYTHONPATH": repo})
    assert done.returncode == 0, done.stderr
    rows = ledger_rows(root, "w")
    assert (root / "runs" / "w" / "results.tsv").read_text().splitlines()[0].split("\t")[1] == "accuracy"
    assert {row["worker"] for row in rows} == {"w0", "w1"}
    kept = [row["best_after"] for row in rows if row.get("kept")]
    assert len(kept) >= 2 and kept == sorted(kept) and kept[-1] > kept[0]  # each keep raised accuracy
