"""Kill -9 at any moment, start again: no experiment lost or counted twice, tree clean.
One loop per repository; no training child outlives its loop."""
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.loop import lock as locks
from engine.loop.orphans import end_orphan
from engine.processes import process_start_time
from engine.errors import UserError
from loop_helpers import git, ledger_rows

LOOP = ["-m", "engine.cli", "loop", "--tag", "k", "--agent", "offline", "--max-experiments", "9"]


def start_loop(root, sleep="0.4"):
    return subprocess.Popen([sys.executable, *LOOP], cwd=root, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env={**os.environ, "FAKE_TRAIN_SLEEP": sleep})


def still_running(child: dict) -> bool:
    """The recorded child runs: its pid has its start time and is no zombie (once its loop is
    gone, an unreaped zombie of a test process that made itself a subreaper, which never waits)."""
    try:
        state = (Path("/proc") / str(child["pid"]) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X") and process_start_time(child["pid"]) == child["start_time"]


def check_consistent(root, rows):
    assert [r["experiment"] for r in rows] == list(range(len(rows)))
    candidates = [r["commit"] for r in rows if r["role"] not in ("baseline", "rerun") and r["commit"]]
    assert len(candidates) == len(set(candidates)), "an experiment was counted twice"
    for r in rows:
        if r["commit"]:
            git(root, "cat-file", "-e", r["commit"])


def test_kill_minus_9_then_resume(loop_env):
    rng = random.Random(7)
    kills = 0
    for _ in range(6):
        process = start_loop(loop_env)
        time.sleep(rng.uniform(0.8, 2.5))
        if process.poll() is not None:
            break
        process.kill()  # SIGKILL: no cleanup in the loop at all
        process.wait()
        kills += 1
        record = loop_env / "runs" / "k" / "child.json"
        if record.exists():  # the training child went with its loop (PDEATHSIG)
            child = json.loads(record.read_text())  # maybe an earlier loop's: its pid may be reused
            deadline = time.monotonic() + 15  # a loaded machine is slow to end it
            while still_running(child) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not still_running(child)
        check_consistent(loop_env, ledger_rows(loop_env, "k"))
    assert kills >= 2
    final = start_loop(loop_env, sleep="0")
    _, err = final.communicate(timeout=120)
    assert final.returncode == 0, err.decode()
    rows = ledger_rows(loop_env, "k")
    assert len(rows) == 9
    check_consistent(loop_env, rows)
    assert git(loop_env, "status", "--porcelain") == ""
    assert git(loop_env, "rev-parse", "HEAD") == [r for r in rows if r["kept"]][-1]["commit"]
    tsv = (loop_env / "runs" / "k" / "results.tsv").read_text().splitlines()
    assert len(tsv) == 10


def test_second_loop_is_refused_and_a_dead_holder_is_taken_over(loop_env, tmp_path):
    runs = loop_env / "runs"
    held = locks.LoopLock(runs, "first").acquire()
    try:
        with pytest.raises(UserError, match="another loop is running.*first"):
            locks.LoopLock(runs, "second").acquire()
    finally:
        held.release()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from engine.loop.lock import LoopLock; "
                               f"LoopLock(__import__('pathlib').Path({str(runs)!r}), 'dead').acquire(); "
                               "print('held', flush=True); time.sleep(60)"], stdout=subprocess.PIPE)
    assert holder.stdout.readline().strip() == b"held"
    with pytest.raises(UserError):
        locks.LoopLock(runs, "x").acquire()
    holder.kill()
    holder.wait()
    locks.LoopLock(runs, "x").acquire().release()


def test_restarted_loop_ends_an_orphaned_child(tmp_path):
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    record = tmp_path / "child.json"
    record.write_text(json.dumps({"pid": orphan.pid, "pgid": orphan.pid,
                                  "start_time": process_start_time(orphan.pid)}))
    assert end_orphan(record) == orphan.pid
    orphan.wait(timeout=10)  # end_orphan may already have reaped it
    assert process_start_time(orphan.pid) is None
    assert not record.exists()
    record.write_text(json.dumps({"pid": os.getpid(), "pgid": os.getpid(), "start_time": "0"}))
    assert end_orphan(record) is None  # a reused pid is not ours to kill


# ---------------------------------------------------------------- what resume may discard

def _loop(root, tag="r", *extra):
    from loop_helpers import run_cli
    return run_cli(root, "loop", "--tag", tag, "--agent", "offline", "--max-experiments", "2", *extra)


def test_resume_discards_only_editable_changes_and_names_the_users_others(loop_env):
    assert _loop(loop_env).returncode == 0
    program, train, fixed = loop_env / "program.md", loop_env / "train.py", loop_env / "prepare.py"
    program.write_text(program.read_text() + "\nA note the user is writing.\n")  # the human's: kept, read
    fixed.write_text(fixed.read_text() + "# the user's own change\n")
    train.write_text(train.read_text().replace("DEPTH = 3", "DEPTH = 4"))
    refused = _loop(loop_env, "r", "--max-experiments", "3")
    assert refused.returncode == 2 and "prepare.py" in refused.stderr and "nothing was discarded" in refused.stderr
    assert "A note the user is writing." in program.read_text() and "DEPTH = 4" in train.read_text()
    git(loop_env, "stash", "push", "-q", "--", "prepare.py")  # the user sets the change aside
    resumed = _loop(loop_env, "r", "--max-experiments", "3")
    assert resumed.returncode == 0, resumed.stderr
    assert "discarding uncommitted changes to editable files left by an interrupted step: train.py" in resumed.stdout
    assert "DEPTH = 3" in train.read_text() and "A note the user is writing." in program.read_text()


def test_a_commit_the_loop_did_not_make_is_guarded_on_resume(loop_env):
    assert _loop(loop_env).returncode == 0
    best = git(loop_env, "rev-parse", "HEAD")
    (loop_env / "prepare.py").write_text("# changed by an agent\n")
    train = loop_env / "train.py"
    train.write_text(train.read_text().replace("LEARNING_RATE = 0.04", "LEARNING_RATE = 0.01"))
    git(loop_env, "commit", "-qam", "sneaky")
    sneaky = git(loop_env, "rev-parse", "HEAD")
    refused = _loop(loop_env, "r", "--max-experiments", "3")
    assert refused.returncode == 2
    assert f"commit {sneaky[:7]}" in refused.stderr and "changed files it may not: prepare.py" in refused.stderr
    assert git(loop_env, "rev-parse", "HEAD") == sneaky  # nothing deleted: the user decides
    assert len(ledger_rows(loop_env, "r")) == 2 and best != sneaky


def test_fixed_files_message_names_the_tasks_own_files(tmp_path):
    from engine.loop.guards import FixedFiles, FixedFilesChanged
    (tmp_path / "score.py").write_text("print('m: 1')\n")
    fixed = FixedFiles(tmp_path, None, files=[tmp_path / "score.py"])
    (tmp_path / "score.py").write_text("print('m: 0')\n")
    with pytest.raises(FixedFilesChanged, match=r"git checkout -- score\.py`") as caught:
        fixed.check("before a run")
    assert "engine model prepare.py" not in str(caught.value)


def test_a_tag_keeps_the_metric_and_direction_of_its_first_row(loop_env):
    assert _loop(loop_env).returncode == 0
    rows = ledger_rows(loop_env, "r")
    assert rows[0]["metric"] == "val_bpb" and rows[0]["direction"] == "minimize"
    program = loop_env / "program.md"
    program.write_text(program.read_text() + "\n## Task\n- kind: command\n- editable: train.py\n"
                       "- score: python -c \"print('val_bpb: 1')\"\n- metric: val_bpb\n- direction: maximize\n")
    git(loop_env, "commit", "-qam", "flip the direction")
    refused = _loop(loop_env, "r", "--max-experiments", "3")
    assert refused.returncode == 2
    assert "val_bpb (minimize)" in refused.stderr and "val_bpb (maximize)" in refused.stderr, refused.stderr
    assert len(ledger_rows(loop_env, "r")) == 2


def test_status_warns_about_rows_of_another_objective(tmp_path):
    from engine.report.status import status_lines
    run_dir = tmp_path / "runs" / "o"
    run_dir.mkdir(parents=True)
    rows = [{"experiment": 0, "metric": "loss", "direction": "minimize", "status": "keep", "role": "baseline"},
            {"experiment": 1, "metric": "loss", "direction": "maximize", "status": "keep", "role": "candidate"}]
    (run_dir / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = "\n".join(status_lines(run_dir))
    assert "the tag's objective is loss (minimize)" in text and "experiment 1: loss maximize" in text
