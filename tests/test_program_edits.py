"""program.md belongs to the human: appended to during an agent turn and during a run, a real
loop takes the edits in (never resets or blames them), keeps the agent from changing settings,
and refuses a change of the tag's budget while keeping the edit on disk."""
import os
import subprocess
import sys
import textwrap

from engine.loop.program_edits import RE_READ
from loop_helpers import FAKE_TRAIN, ledger_rows

AGENT = textwrap.dedent('''
    import os, re
    number = int(os.environ["AUTORESEARCH_EXPERIMENT"])
    program = os.environ["AUTORESEARCH_PROGRAM"]
    if number == 2:  # a human appends while the agent thinks (or the agent tries to raise its limit)
        with open(program, "a") as handle:
            handle.write("\\nDuring the turn: prefer small steps.\\n\\n## Stopping criteria\\n- max_experiments: 50\\n")
    text = open("train.py").read()
    rate = 0.04 / (number + 1)
    open("train.py", "w").write(re.sub(r"LEARNING_RATE = [0-9.e-]+", f"LEARNING_RATE = {rate:g}", text))
    print(f"learning rate {rate:g}")
''')

TRAIN = textwrap.dedent('''
    import os, sys
    program, counter = os.environ["HUMAN_PROGRAM"], os.environ["HUMAN_COUNTER"]
    runs = int(open(counter).read()) + 1 if os.path.exists(counter) else 1
    open(counter, "w").write(str(runs))
    edits = {3: "\\nDuring a run: look at depth.\\n", 5: "\\n## Budget\\n- budget_seconds: 7\\n"}
    if runs in edits:  # the human edits program.md while an experiment runs
        with open(program, "a") as handle:
            handle.write(edits[runs])
    os.execv(sys.executable, [sys.executable, os.environ["FAKE"], *sys.argv[1:]])
''')


def test_edits_during_a_turn_and_during_a_run_are_the_humans(loop_env, tmp_path):
    root = loop_env
    (tmp_path / "agent.py").write_text(AGENT)
    (tmp_path / "train_wrapper.py").write_text(TRAIN)
    (tmp_path / "fake.py").write_text(FAKE_TRAIN)
    env = {**os.environ, "HUMAN_PROGRAM": str(root / "program.md"), "HUMAN_COUNTER": str(tmp_path / "runs"),
           "FAKE": str(tmp_path / "fake.py"),
           "AUTORESEARCH_TRAIN_COMMAND": f"{sys.executable} {tmp_path / 'train_wrapper.py'}"}
    loop = [sys.executable, "-m", "engine.cli", "loop", "--tag", "h", "--agent", "command",
            "--agent-cmd", f"{sys.executable} {tmp_path / 'agent.py'}"]
    done = subprocess.run(loop, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = ledger_rows(root, "h")
    assert len(rows) == 6  # max_experiments 6: the agent's (or a human's in-turn) `50` was not taken in
    assert not [r for r in rows if r["status"] == "rejected"], [r.get("decision") for r in rows]
    text = (root / "program.md").read_text()
    assert "During a run: look at depth." in text and "During the turn: prefer small steps." in text
    assert "budget_seconds: 7" in text  # refused, but kept on disk
    output = done.stdout + done.stderr
    assert output.count(RE_READ) >= 2, output
    assert "max_experiments changed during an agent's turn and were not taken in" in output
    assert "outside the editable paths" not in output and "program.md" not in str([r.get("decision") for r in rows])
    assert "program.md changed, refused: tag h runs under budget time 1 s" in output
    assert all(r.get("budget") in (None, "time 1 s") for r in rows)


def test_a_worker_agent_reads_the_humans_text_not_its_worktrees_stale_copy(tmp_path):
    from engine.agents.base import ProposalRequest
    from engine.agents.command import CommandAgent
    worktree, run_dir = tmp_path / "worktree", tmp_path / "runs" / "h"
    worktree.mkdir()
    (worktree / "program.md").write_text("committed text\n")
    request = ProposalRequest(repo_root=worktree, editable=["train.py"], program_text="committed text\nhuman's line\n",
                              ledger=[], experiment=1, run_dir=run_dir, hardware="cpu", budget="time 1 s")
    handed = CommandAgent("true")._program_path(request)
    assert handed.read_text() == "committed text\nhuman's line\n" and handed != worktree / "program.md"
    (worktree / "program.md").write_text(request.program_text)  # serial: the human's own file, same text
    assert CommandAgent("true")._program_path(request) == (worktree / "program.md").resolve()


def test_switching_to_a_branch_where_program_md_differs_keeps_the_edit_and_says_why(tmp_path):
    import pytest

    from engine.errors import UserError
    from engine.loop.repo import Repo
    from loop_helpers import git, make_repo
    root = make_repo(tmp_path)
    git(root, "checkout", "-q", "-b", "autoresearch/t")
    (root / "program.md").write_text("the branch's own text\n")
    git(root, "-c", "user.email=t@e", "-c", "user.name=t", "commit", "-qam", "program on the branch")
    git(root, "checkout", "-q", "-")
    (root / "program.md").write_text((root / "program.md").read_text() + "\nmy overnight note\n")
    repo = Repo(root)
    repo.human_files = ["program.md"]
    with pytest.raises(UserError, match="could not switch to branch autoresearch/t.*edits of program.md"):
        repo.checkout_branch("t")
    assert "my overnight note" in (root / "program.md").read_text()
