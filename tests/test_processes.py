"""Commands end with their whole tree: score, check and agent commands whose setsid daemon and
double-forked child would outlive them are gone after a timeout and after a normal exit, in a
cgroup where this host allows one and with the subreaper fallback; their output is bounded."""
import os
import time
from pathlib import Path

import pytest

from engine import processes
from engine.agents.base import ProposalRequest
from engine.agents.command import CommandAgent
from engine.bounded_log import BoundedLog
from engine.loop.task_spec import TaskSpec
from engine.loop.tasks import CommandTask
from loop_helpers import git, make_repo


def escape(folder: Path, name: str) -> str:
    """A shell line that leaves a setsid daemon and a double-forked child, writing their pids."""
    return (f"setsid sh -c 'echo $$ > {folder}/{name}-daemon; exec sleep 300' > /dev/null 2>&1 & "
            f"(sh -c 'echo $$ > {folder}/{name}-forked; exec sleep 300' > /dev/null 2>&1 &); "
            f"while [ ! -s {folder}/{name}-daemon ] || [ ! -s {folder}/{name}-forked ]; do sleep 0.02; done")


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


def assert_all_gone(folder: Path, names: list[str]) -> None:
    pids = [int((folder / f"{name}-{kind}").read_text()) for name in names for kind in ("daemon", "forked")]
    deadline = time.monotonic() + 5
    while not all(gone(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(gone(pid) for pid in pids), [p for p in pids if not gone(p)]


@pytest.fixture(params=["cgroup", "subreaper"])
def containment(request, monkeypatch):
    if request.param == "subreaper":
        monkeypatch.setattr(processes, "_cgroup_base", None)
    elif processes.cgroup_base() is None:
        pytest.skip("no cgroup can be made here: the subreaper case covers this host")
    return request.param


@pytest.mark.parametrize("ending", ["exit", "timeout"])
def test_score_and_check_leave_nothing_running(containment, ending, tmp_path):
    tail = "; sleep 60" if ending == "timeout" else ""
    spec = TaskSpec(kind="command", editable=["x"], score=escape(tmp_path, "score") + "; echo 'm: 1'" + tail,
                    check=escape(tmp_path, "check"), metric="m")
    outcome = CommandTask(spec, timeout=3.0 if ending == "timeout" else 30.0).run(tmp_path / "exp", 0, tmp_path)
    assert outcome.status == ("timeout" if ending == "timeout" else "ok"), outcome.error
    assert_all_gone(tmp_path, ["score", "check"])


@pytest.mark.parametrize("ending", ["exit", "timeout"])
def test_the_agent_command_leaves_nothing_running(containment, ending, tmp_path):
    root = make_repo(tmp_path)
    run_dir = root / "runs" / "t"
    run_dir.mkdir(parents=True)
    tail = "; sleep 60" if ending == "timeout" else ""
    agent = CommandAgent(escape(tmp_path, "agent") + "; echo 'LEARNING_RATE = 0.02' >> train.py; echo idea" + tail,
                         timeout_s=3.0 if ending == "timeout" else 30.0, echo=False)
    request = ProposalRequest(repo_root=root, editable=["train.py"], program_text="", ledger=[], experiment=1,
                              run_dir=run_dir, hardware="cpu", budget="1 s")
    proposal = agent.propose(request)
    if ending == "exit":
        assert proposal is not None and proposal.description == "idea"
    else:
        assert proposal is None and agent.last_outcome == "unavailable"
    assert_all_gone(tmp_path, ["agent"])
    assert not (run_dir / "agent.json").exists()


def test_a_restarted_loop_ends_what_a_killed_one_left(containment, tmp_path):
    """The child record names the cgroup and token: end_orphan finds a daemon whose group leader is gone."""
    from engine.loop.orphans import end_orphan
    record = tmp_path / "child.json"
    container = processes.Container.make()
    import subprocess
    leader = subprocess.Popen(escape(tmp_path, "left"), shell=True, env=container.env(dict(os.environ)),
                              preexec_fn=container.preexec)
    leader.wait()  # the leader exits normally; its daemon and forked child stay
    processes.record_child(record, leader.pid, container)
    assert not gone(int((tmp_path / "left-daemon").read_text()))
    end_orphan(record)
    assert_all_gone(tmp_path, ["left"])
    if container.cgroup is not None:
        assert not container.cgroup.exists()


def test_output_past_the_cap_keeps_the_head_and_the_tail(tmp_path, monkeypatch):
    log_path = tmp_path / "out.log"
    log = BoundedLog(log_path, b"$ cmd\n", head_bytes=100, tail_bytes=50)
    for index in range(1000):
        log.feed(f"line {index:04d}\n".encode())
    log.close()
    text = log_path.read_text()
    assert text.startswith("$ cmd\nline 0000\n")
    assert text.endswith("line 0999\n")
    assert f"{10000 - 100 - log.tail_size:,} bytes of output elided" in text
    assert len(text) < 400
    assert "line 0999" in log.text() and "line 0000" in log.text()


def test_a_score_printing_past_the_cap_is_read_from_its_tail(tmp_path):
    spec = TaskSpec(kind="command", editable=["x"], metric="m",
                    score="yes 'debug print' | head -c 30000000; echo; echo 'm: 0.25'")
    outcome = CommandTask(spec, timeout=60).run(tmp_path / "exp", 0, tmp_path)
    assert outcome.status == "ok" and outcome.result["m"] == 0.25
    size = outcome.log_path.stat().st_size
    assert size < 3 << 20
    assert "bytes of output elided" in outcome.log_path.read_text()


ESCAPING_SCORE = """import os, subprocess, uuid, yaml
folder = os.environ['PIDS_DIR']
name = uuid.uuid4().hex
line = (f"setsid sh -c 'echo $$ > {folder}/{name}-daemon; exec sleep 300' > /dev/null 2>&1 & "
        f"(sh -c 'echo $$ > {folder}/{name}-forked; exec sleep 300' > /dev/null 2>&1 &); "
        f"while [ ! -s {folder}/{name}-daemon ] || [ ! -s {folder}/{name}-forked ]; do sleep 0.02; done")
subprocess.run(['sh', '-c', line], check=True)
x = yaml.safe_load(open('knob.yaml'))['x']
print('accuracy:', 1.0 - abs(x - 4.0) / 10)
"""
ESCAPING_PROGRAM = """# a command task whose score leaves a setsid daemon and a double-forked child each run
## Task
- kind: command
- editable: knob.yaml
- score: python score.py
- metric: accuracy
- direction: maximize
- pass_env: PIDS_DIR
## Noise
- baseline_runs: 1
"""


def escaping_task_repo(tmp_path: Path) -> Path:
    """A repo whose command task's score leaves two processes behind per run (pids in tmp_path/pids)."""
    root = tmp_path / "repo"
    root.mkdir()
    (tmp_path / "pids").mkdir()
    for name, text in {"knob.yaml": "x: 1.0\n", "score.py": ESCAPING_SCORE, "program.md": ESCAPING_PROGRAM,
                       ".gitignore": "runs/\n__pycache__/\n"}.items():
        (root / name).write_text(text)
    git(root, "init", "-q", "-b", "main")
    for args in (("add", "-A"), ("commit", "-q", "-m", "start")):
        git(root, "-c", "user.email=t@e", "-c", "user.name=t", *args)
    return root


def assert_escapes_gone(pids: Path, runs: int) -> None:
    names = sorted({path.name.rsplit("-", 1)[0] for path in pids.iterdir()})
    assert len(names) >= runs, names
    assert_all_gone(pids, names)


def test_workers_contain_a_command_tasks_score(containment, tmp_path):
    """--workers runs each score contained: what it leaves behind ends with it, in both containments."""
    from loop_helpers import ledger_rows, run_cli
    root = escaping_task_repo(tmp_path)
    env = {"PYTHONPATH": str(Path(__file__).resolve().parents[1]), "PIDS_DIR": str(tmp_path / "pids")}
    if containment == "subreaper":
        env["AUTORESEARCH_CONTAINMENT"] = "subreaper"
    done = run_cli(root, "loop", "--tag", "c", "--agent", "offline", "--workers", "2", "--max-experiments", "4",
                   env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert {row["worker"] for row in ledger_rows(root, "c")} == {"w0", "w1"}
    assert_escapes_gone(tmp_path / "pids", 4)


def test_a_child_whose_loop_died_before_its_death_signal_was_set_ends_itself():
    """The loop can die between the fork and PR_SET_PDEATHSIG: the child then has another parent
    already and must not run on unwatched."""
    import signal
    import subprocess
    container = processes.Container("orphaned-at-birth", parent=1)  # as if re-parented to init
    child = subprocess.Popen(["sleep", "30"], preexec_fn=container.preexec)
    assert child.wait(timeout=10) == -signal.SIGKILL
    watched = processes.Container("watched")
    child = subprocess.Popen(["sleep", "30"], preexec_fn=watched.preexec)
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            child.wait(timeout=0.5)
    finally:
        child.kill()
        child.wait()
