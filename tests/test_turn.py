"""After every agent turn (engine/loop/turn.py): git put back, the agent's commits judged by the
guard, files it left anywhere (ignored ones, the engine's cache) removed."""
import sys

from loop_helpers import git, ledger_rows, run_cli

AGENT = r'''
import os, pathlib, subprocess, sys
n = int(os.environ["AUTORESEARCH_EXPERIMENT"])
def git(*a): subprocess.run(["git", *a], check=True, capture_output=True)
def lr(value):
    p = pathlib.Path("train.py")
    text = p.read_text()
    import re
    p.write_text(re.sub(r"LEARNING_RATE = [0-9.]+", f"LEARNING_RATE = {value}", text))
if n == 2:  # a commit that also changes a fixed file
    lr(0.02); pathlib.Path("prepare.py").write_text("# changed\n"); git("commit", "-qam", "mine")
    print("commit with prepare.py")
elif n == 3:  # another branch
    git("checkout", "-qb", "elsewhere"); lr(0.02); git("commit", "-qam", "there"); print("on another branch")
elif n == 4:  # a clean commit of the editable file, and files left in ignored and cache folders
    lr(0.02); git("commit", "-qam", "lr 0.02")
    pyc = pathlib.Path("engine/__pycache__/fixed.cpython-311.pyc"); pyc.parent.mkdir(exist_ok=True)
    pyc.write_bytes(b"planted")
    pathlib.Path(os.environ["AUTORESEARCH_CACHE"], "xla").mkdir(exist_ok=True)
    pathlib.Path(os.environ["AUTORESEARCH_CACHE"], "xla", "entry").write_bytes(b"planted")
    print("committed lr 0.02")
elif n == 5:  # HEAD moved back, off the best
    git("reset", "-q", "--hard", "HEAD~1"); lr(0.03); print("reset back")
'''


def test_git_and_files_after_each_agent_turn(loop_env, tmp_path):
    agent = tmp_path / "agent.py"
    agent.write_text(AGENT)
    done = run_cli(loop_env, "loop", "--tag", "t", "--agent", "command", "--agent-cmd",
                   f"{sys.executable} {agent}", "--max-experiments", "6",
                   "--max-agent-failure-minutes", "0.01")
    assert done.returncode == 0, done.stderr
    rows = ledger_rows(loop_env, "t")
    assert [r["status"] for r in rows] == ["baseline", "baseline", "rejected", "rejected", "keep", "rejected"], \
        [r.get("decision") for r in rows]
    assert "changed files it may not: prepare.py" in rows[2]["decision"]
    assert "left autoresearch/t for branch elsewhere" in rows[3]["decision"]
    assert "which is not built on" in rows[5]["decision"]
    assert (loop_env / "prepare.py").read_text() == "# fixed\n"
    assert git(loop_env, "rev-parse", "--abbrev-ref", "HEAD") == "autoresearch/t"
    assert git(loop_env, "rev-parse", "HEAD") == rows[4]["commit"]
    assert git(loop_env, "log", "-1", "--format=%s", rows[4]["commit"]) == "committed lr 0.02"
    assert git(loop_env, "status", "--porcelain") == ""
    assert not (loop_env / "engine" / "__pycache__" / "fixed.cpython-311.pyc").exists()
    assert not (tmp_path / "cache" / "xla" / "entry").exists()
    assert "removed files the agent's turn left" in done.stdout


LEDGER_AGENT = r'''
import json, os, pathlib, re
n = int(os.environ["AUTORESEARCH_EXPERIMENT"])
p = pathlib.Path("train.py")
p.write_text(re.sub(r"LEARNING_RATE = [0-9.]+", "LEARNING_RATE = 0.02", p.read_text()))
ledger = pathlib.Path("runs/t/results.jsonl")  # the baseline's row made unbeatable, a fake best added
rows = [json.loads(line) for line in ledger.read_text().splitlines()]
rows[0]["val_bpb"] = 0.01
rows.append({**rows[0], "experiment": len(rows), "status": "keep", "val_bpb": 0.001})
ledger.write_text("".join(json.dumps(r) + "\n" for r in rows))
print("edited the ledger")
'''


def test_an_agent_that_edits_the_ledger_is_refused_and_the_ledger_restored(loop_env, tmp_path):
    """runs/ is the loop's output and was not looked at after a turn: rows an agent's shell changed
    or added were believed by a resumed loop (its best) and by the report."""
    agent = tmp_path / "agent.py"
    agent.write_text(LEDGER_AGENT)
    done = run_cli(loop_env, "loop", "--tag", "t", "--agent", "command", "--agent-cmd",
                   f"{sys.executable} {agent}", "--max-experiments", "3")
    assert done.returncode == 0, done.stderr
    rows = ledger_rows(loop_env, "t")
    assert [r["status"] for r in rows] == ["baseline", "baseline", "rejected"]  # the baseline runs twice
    assert "changed the ledger" in rows[2]["decision"]
    assert rows[0]["val_bpb"] > 0.5
