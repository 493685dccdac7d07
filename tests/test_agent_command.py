"""The command agent, driven by small shell scripts in a throwaway git repository."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.agents.base import ProposalRequest
from engine.agents.command import CommandAgent

TRAIN_PY = "LEARNING_RATE = 0.01\nDEPTH = 4\n"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "--quiet", "-b", "main")
    git(root, "config", "user.email", "test@example.com")
    git(root, "config", "user.name", "test")
    (root / "train.py").write_text(TRAIN_PY)
    (root / "program.md").write_text("# program\n")
    (root / ".gitignore").write_text("runs/\n")
    git(root, "add", ".")
    git(root, "commit", "--quiet", "-m", "start")
    return root


def request(repo: Path, experiment: int = 3, last_log: Path | None = None) -> ProposalRequest:
    run_dir = repo / "runs" / "t"
    run_dir.mkdir(parents=True, exist_ok=True)
    return ProposalRequest(repo_root=repo, editable=["train.py"], program_text="# program\n", ledger=[],
                           experiment=experiment, run_dir=run_dir, hardware="cpu x1", budget="time 5 s",
                           last_log=last_log)


def script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "agent.py"
    path.write_text(body)
    return f"{sys.executable} {path}"


def test_edit_is_kept_and_last_printed_line_is_the_description(repo, tmp_path):
    cmd = script(tmp_path, "import pathlib\n"
                 "p = pathlib.Path('train.py')\n"
                 "p.write_text(p.read_text().replace('0.01', '0.02'))\n"
                 "print('thinking about it...')\n"
                 "print('double the learning rate\\t(0.01 -> 0.02)')\n"
                 "print('   ')\n")
    proposal = CommandAgent(cmd, echo=False).propose(request(repo))
    assert proposal is not None
    assert proposal.description == "double the learning rate (0.01 -> 0.02)"
    assert "0.02" in (repo / "train.py").read_text()


def test_no_change_is_no_experiment(repo, tmp_path):
    cmd = script(tmp_path, "print('I looked and changed nothing')\n")
    assert CommandAgent(cmd, echo=False).propose(request(repo)) is None


def test_nonzero_exit_is_no_experiment_even_with_an_edit(repo, tmp_path):
    cmd = script(tmp_path, "import pathlib, sys\n"
                 "pathlib.Path('train.py').write_text('DEPTH = 8\\n')\n"
                 "print('half done')\n"
                 "sys.exit(3)\n")
    assert CommandAgent(cmd, echo=False).propose(request(repo)) is None


def test_environment_names_experiment_program_results_and_last_log(repo, tmp_path):
    last_log = tmp_path / "exp-0002.log"
    last_log.write_text("val_bpb: 1.5\n")
    dump = tmp_path / "env.json"
    cmd = script(tmp_path, "import json, os, pathlib\n"
                 f"pathlib.Path({str(dump)!r}).write_text(json.dumps("
                 "{k: v for k, v in os.environ.items() if k.startswith('AUTORESEARCH_')}))\n"
                 "pathlib.Path('train.py').write_text('DEPTH = 8\\n')\n"
                 "print('deeper')\n")
    req = request(repo, experiment=7, last_log=last_log)
    assert CommandAgent(cmd, echo=False).propose(req).description == "deeper"
    env = json.loads(dump.read_text())
    assert env["AUTORESEARCH_EXPERIMENT"] == "7"
    assert Path(env["AUTORESEARCH_PROGRAM"]) == (repo / "program.md").resolve()
    assert Path(env["AUTORESEARCH_RESULTS"]) == (req.run_dir / "results.tsv").resolve()
    assert Path(env["AUTORESEARCH_LAST_LOG"]) == last_log.resolve()


def test_others_file_lists_ideas_in_flight_and_the_swarm(repo, tmp_path):
    seen = tmp_path / "others.txt"
    cmd = script(tmp_path, "import os, pathlib\n"
                 f"pathlib.Path({str(seen)!r}).write_text(pathlib.Path(os.environ['AUTORESEARCH_OTHERS']).read_text())\n"
                 "pathlib.Path('train.py').write_text('DEPTH = 8\\n')\n"
                 "print('deeper')\n")
    req = request(repo)
    req.in_flight = [{"worker": "w1", "description": "wider", "hypothesis": "h"}]
    assert CommandAgent(cmd, echo=False).propose(req).description == "deeper"
    assert json.loads(seen.read_text()) == {"in_flight": req.in_flight, "swarm": []}


def test_last_log_absent_for_the_first_experiment(repo, tmp_path, monkeypatch):
    monkeypatch.setenv("AUTORESEARCH_LAST_LOG", "/stale/from/outer/shell")
    cmd = script(tmp_path, "import os, pathlib\n"
                 "pathlib.Path('train.py').write_text(repr(os.environ.get('AUTORESEARCH_LAST_LOG')))\n"
                 "print('baseline-ish')\n")
    assert CommandAgent(cmd, echo=False).propose(request(repo, experiment=0)) is not None
    assert (repo / "train.py").read_text() == "None"


def test_runs_in_the_repo_root(repo, tmp_path):
    cmd = script(tmp_path, "import os, pathlib\n"
                 "pathlib.Path('train.py').write_text('# ran in ' + os.getcwd() + '\\n')\n"
                 "print('where')\n")
    CommandAgent(cmd, echo=False).propose(request(repo))
    assert str(repo) in (repo / "train.py").read_text()


def test_an_agent_that_commits_hands_back_its_edit_uncommitted(repo, tmp_path):
    """The agent's commit is a proposal; the loop's after-turn check (engine/loop/turn.py)
    turns it back into changes for the guard."""
    from engine.loop import turn
    from engine.loop.repo import Repo

    head = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "-b", "autoresearch/t")
    tree = Repo(repo)
    before = turn.before_turn(tree)
    cmd = ("sed -i 's/DEPTH = 4/DEPTH = 6/' train.py && git commit --quiet -am 'agent commit' "
           "&& echo 'depth 6'")
    proposal = CommandAgent(cmd, echo=False).propose(request(repo))
    assert proposal.description == "depth 6"
    after = turn.after_turn(tree, before, ["train.py"], branch="autoresearch/t")
    assert after.refusals == []
    assert git(repo, "rev-parse", "HEAD") == head
    assert tree.changed_paths() == ["train.py"]
    assert "DEPTH = 6" in (repo / "train.py").read_text()


def test_a_stuck_command_is_stopped_with_everything_it_started(repo, tmp_path):
    marker = tmp_path / "grandchild-finished"
    cmd = f"(sleep 30; touch {marker}) & sleep 30"
    started = time.monotonic()
    assert CommandAgent(cmd, timeout_s=0.5, echo=False).propose(request(repo)) is None
    assert time.monotonic() - started < 10
    time.sleep(0.2)
    assert not marker.exists()


def test_description_falls_back_when_nothing_is_printed(repo):
    proposal = CommandAgent("echo 'DEPTH = 5' > train.py; echo > /dev/null", echo=False).propose(request(repo))
    assert proposal is not None
    assert proposal.description == "command agent experiment 3"


# ---------------------------------------------------------------- through the real loop

from loop_helpers import ledger_rows, run_cli


def test_the_loop_runs_a_command_agent(loop_env, tmp_path):
    seen = tmp_path / "seen.txt"
    agent = script(tmp_path, "import os, pathlib\n"
                   "p = pathlib.Path('train.py')\n"
                   "p.write_text(p.read_text().replace('LEARNING_RATE = 0.04', 'LEARNING_RATE = 0.02'))\n"
                   f"with open({str(seen)!r}, 'a') as f:\n"
                   "    f.write(os.environ['AUTORESEARCH_EXPERIMENT'] + ' ' + os.environ['AUTORESEARCH_RESULTS'] + '\\n')\n"
                   "print('halve the learning rate')\n")
    done = run_cli(loop_env, "loop", "--tag", "c", "--agent", "command", "--agent-cmd", agent, "--max-experiments", "3")
    assert done.returncode == 0, done.stderr
    rows = ledger_rows(loop_env, "c")
    assert [row["status"] for row in rows] == ["baseline", "baseline", "keep"]
    assert rows[2]["description"] == "halve the learning rate"
    number, results = seen.read_text().split()
    assert number == "2" and Path(results) == (loop_env / "runs" / "c" / "results.tsv").resolve()


def test_a_file_planted_outside_the_editable_paths_is_removed_and_the_idea_rejected(loop_env, tmp_path):
    """A numpy.py beside the scripts the engine runs would run as numpy; files that were there
    before the agent ran (a .venv) are left alone."""
    (loop_env / ".venv").mkdir()
    (loop_env / ".venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    agent = script(tmp_path, "import pathlib\n"
                   "p = pathlib.Path('train.py')\n"
                   "p.write_text(p.read_text().replace('LEARNING_RATE = 0.04', 'LEARNING_RATE = 0.02'))\n"
                   "pathlib.Path('numpy.py').write_text('raise SystemExit(1)')\n"
                   "print('lower lr, and a helper')\n")
    done = run_cli(loop_env, "loop", "--tag", "p", "--agent", "command", "--agent-cmd", agent, "--max-experiments", "3")
    assert done.returncode == 0, done.stderr
    rows = ledger_rows(loop_env, "p")
    assert rows[2]["status"] == "rejected"
    assert "created files outside the editable paths: numpy.py (removed" in rows[2]["decision"]
    assert not (loop_env / "numpy.py").exists() and (loop_env / ".venv" / "pyvenv.cfg").exists()
    assert "LEARNING_RATE = 0.04" in (loop_env / "train.py").read_text()


def test_an_external_agent_driving_autoresearch_experiment(loop_env):
    """The workflow of docs/agents.md: the agent edits train.py, then one command per idea."""
    train = loop_env / "train.py"
    train.write_text(train.read_text().replace("LEARNING_RATE = 0.04", "LEARNING_RATE = 0.02"))
    first = run_cli(loop_env, "experiment", "halve the learning rate", "--tag", "x")
    assert first.returncode == 0, first.stderr
    assert "experiment 2: keep" in first.stdout  # the baseline ran first (0 and 1), then this idea

    train.write_text(train.read_text().replace("CRASH = 0", "CRASH = 1"))
    crashed = run_cli(loop_env, "experiment", "a crashing idea", "--tag", "x")
    assert crashed.returncode == 1 and "experiment 3: crash" in crashed.stdout
    assert "CRASH = 1" in train.read_text()  # the crashed idea is handed back to fix or drop
    git(loop_env, "checkout", "--", "train.py")  # the agent drops it: back at the best
    assert "CRASH = 0" in train.read_text() and "LEARNING_RATE = 0.02" in train.read_text()

    nothing = run_cli(loop_env, "experiment", "no edit", "--tag", "x")
    assert nothing.returncode == 2 and "nothing changed" in nothing.stderr
    assert [row["status"] for row in ledger_rows(loop_env, "x")] == ["baseline", "baseline", "keep", "crash"]


# ---------------------------------------------------------------- the agent's process group

def _alive(pid: int) -> bool:
    from engine.processes import process_start_time
    stat = process_start_time(pid)
    if stat is None:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


def _wait_gone(pid: int, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_what_the_agent_started_in_the_background_ends_with_its_turn(repo, tmp_path):
    """A background writer would edit train.py while the experiment runs."""
    pid_file = tmp_path / "bg.pid"
    cmd = (f"(while true; do sleep 0.1; done) & echo $! > {pid_file}; "
           "sed -i 's/DEPTH = 4/DEPTH = 5/' train.py; echo deeper")
    proposal = CommandAgent(cmd, echo=False).propose(request(repo))
    assert proposal.description == "deeper"
    assert _wait_gone(int(pid_file.read_text()), 3)
    assert not (repo / "runs" / "t" / "agent.json").exists()


def test_a_failing_agent_command_is_an_agent_failure_not_an_empty_idea(repo):
    agent = CommandAgent("echo 'rate limited' >&2; exit 1", echo=False)
    assert agent.propose(request(repo)) is None and agent.last_outcome == "unavailable"
    agent = CommandAgent("echo nothing to do", echo=False)
    assert agent.propose(request(repo)) is None and agent.last_outcome == "proposed"


@pytest.mark.parametrize("how", ["sigterm", "kill-9"])
def test_a_stopped_loop_ends_the_agents_processes(loop_env, tmp_path, how):
    """SIGTERM: at once, by the loop. kill -9: the loop cannot, so its next start does."""
    import signal

    pid_file = tmp_path / "bg.pid"
    agent = f"(while true; do sleep 0.1; done) & echo $! > {pid_file}; sleep 60"
    loop = subprocess.Popen([sys.executable, "-m", "engine.cli", "loop", "--tag", "g", "--agent", "command",
                             "--agent-cmd", agent, "--max-experiments", "4"], cwd=loop_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.3)
    background = int(pid_file.read_text())
    loop.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGKILL)
    loop.wait(timeout=30)
    if how == "kill-9":
        assert _alive(background)  # PDEATHSIG took the shell only
        pid_file.unlink()
        again = run_cli(loop_env, "loop", "--tag", "g", "--agent", "command", "--agent-cmd", "exit 0",
                        "--max-experiments", "2")
        assert "ended the agent command's processes" in again.stdout, again.stdout + again.stderr
    assert _wait_gone(background), f"the agent's background process {background} outlived the loop"


def test_autoresearch_experiment_judges_a_commit_the_agent_made(loop_env):
    assert run_cli(loop_env, "experiment", "baseline", "--tag", "e").returncode == 0
    train = loop_env / "train.py"
    train.write_text(train.read_text().replace("LEARNING_RATE = 0.04", "LEARNING_RATE = 0.01"))
    git(loop_env, "commit", "-qam", "agent: lr 0.01")
    kept = run_cli(loop_env, "experiment", "lr 0.01", "--tag", "e")
    assert kept.returncode == 0 and "experiment 2: keep" in kept.stdout, kept.stdout + kept.stderr
    (loop_env / "prepare.py").write_text("# the metric, improved\n")
    train.write_text(train.read_text().replace("DEPTH = 3", "DEPTH = 4"))
    git(loop_env, "commit", "-qam", "agent: a fixed file too")
    refused = run_cli(loop_env, "experiment", "with prepare.py", "--tag", "e")
    assert refused.returncode == 2 and "may not edit: prepare.py" in refused.stderr
    assert len(ledger_rows(loop_env, "e")) == 3
    assert git(loop_env, "rev-parse", "HEAD") == ledger_rows(loop_env, "e")[2]["commit"]
    assert "# the metric, improved" in (loop_env / "prepare.py").read_text()  # the user's to judge, not deleted


def test_autoresearch_experiment_never_discards_a_users_edit_outside_the_editable_paths(loop_env):
    program = loop_env / "program.md"
    program.write_text(program.read_text() + "\nmy note\n")
    train = loop_env / "train.py"
    train.write_text(train.read_text().replace("LEARNING_RATE = 0.04", "LEARNING_RATE = 0.01"))
    refused = run_cli(loop_env, "experiment", "lr", "--tag", "u")
    assert refused.returncode == 2 and "program.md" in refused.stderr
    assert "my note" in program.read_text() and "LEARNING_RATE = 0.01" in train.read_text()
