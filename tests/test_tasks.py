"""The command task kind: check, then score; a misbehaving score is a crash with its reason."""
import sys
from pathlib import Path

import pytest

from engine.loop import tasks
from engine.loop.task_spec import TaskSpec


def run(tmp_path, score: str, check: str | None = None, timeout: float = 20.0, **spec):
    (tmp_path / "s.py").write_text(score)
    task = tasks.CommandTask(TaskSpec(kind="command", editable=["x"], score=f"python {tmp_path / 's.py'}",
                                      metric="p95_ms", check=check, **spec), timeout)
    return task.run(tmp_path / "exp", 3, tmp_path)


def test_the_last_metric_line_is_the_result(tmp_path):
    outcome = run(tmp_path, "print('p95_ms: 9.0')\nprint('note: hello')\nprint('p95_ms: 4.5')\nprint('p50_ms: 1')\n")
    assert outcome.status == "ok" and outcome.result["p95_ms"] == 4.5
    assert outcome.result["metric"] == "p95_ms" and outcome.result["direction"] == "minimize"
    assert outcome.result["figures"] == {"p95_ms": 4.5, "p50_ms": 1.0}
    assert outcome.log_path.read_text().count("p95_ms") == 2


@pytest.mark.parametrize("score, status, reason", [
    ("print('p50_ms: 3')", "crash", "printed no `p95_ms: value` line"),
    ("print('p95_ms: fast')", "crash", "`p95_ms: fast`, which is not a number"),
    ("print('p95_ms: nan')", "crash", "not a finite number"),
    ("print('p95_ms: 2'); raise SystemExit(3)", "crash", "exited with status 3"),
    ("import time; time.sleep(30)", "timeout", "ran past the 1 s timeout"),
])
def test_a_misbehaving_score_is_a_crash_with_its_reason(tmp_path, score, status, reason):
    outcome = run(tmp_path, score, timeout=1.0)
    assert outcome.status == status and reason in outcome.error


def test_a_failing_check_stops_before_the_score(tmp_path):
    check = f"{sys.executable} -c \"print('query 3 differs'); raise SystemExit(1)\""
    outcome = run(tmp_path, "open('scored', 'w'); print('p95_ms: 1')", check=check)
    assert outcome.status == "check_failed" and "query 3 differs" in outcome.error
    assert not (tmp_path / "scored").exists()


def test_the_score_sees_no_secrets_but_those_passed(tmp_path, monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", "k" * 12)
    monkeypatch.setenv("OTHER_TOKEN", "t" * 12)
    score = "import os; print('seen:', sorted(k for k in os.environ if k in ('GEMINI_API_KEY', 'OTHER_TOKEN')))\n" \
            "print('p95_ms:', os.environ['AUTORESEARCH_SEED'])"
    outcome = run(tmp_path, score, pass_env=["GEMINI_API_KEY"])
    assert outcome.result["p95_ms"] == 3.0
    assert "seen: ['GEMINI_API_KEY']" in outcome.log_path.read_text()


def test_fixed_paths_are_the_tracked_files_outside_editable_and_runs(tmp_path):
    tracked = ["engine/a.py", "ex/score.py", "ex/tuning.sql", "runs/t/results.tsv", "ex/conf/a.yaml"]
    fixed = tasks.fixed_paths(tmp_path, tracked, ["ex/tuning.sql", "ex/conf/*.yaml"])
    assert fixed == [tmp_path / "engine/a.py", tmp_path / "ex/score.py"]


SCORE = """import sys, yaml
x = yaml.safe_load(open('value.yaml'))['x']
if x < 0.5:
    sys.exit('score blew up at x = %s' % x)
print('loss:', (x - 3) ** 2)
"""
CHECK = """import sys, yaml
x = yaml.safe_load(open('value.yaml'))['x']
sys.exit(0 if x < 2.5 else 'x must stay below 2.5, not %s' % x)
"""
PROGRAM = """# t
## Task
- kind: command
- editable: value.yaml
- score: python score.py
- metric: loss
- direction: minimize
- check: python check.py
## Noise
- baseline_runs: 2
"""


@pytest.mark.parametrize("new_x, status, reason", [
    ("2.0", "keep", "gain +3 (needs more than 0: no noise; run 1 of "),  # a deterministic score: any real gain is kept
    ("3.0", "discard", "check failed: check `python check.py` exited with status 1: x must stay below 2.5"),
    ("0.25", "crash", "the score command exited with status 1: score blew up at x = 0.25"),
])
def test_the_loop_keeps_discards_on_a_failed_check_and_records_crashes(tmp_path, new_x, status, reason):
    from loop_helpers import git, ledger_rows, run_cli
    root = tmp_path / "repo"
    root.mkdir()
    for name, text in {"value.yaml": "x: 1.0\n", "score.py": SCORE, "check.py": CHECK, "program.md": PROGRAM,
                       ".gitignore": "runs/\n__pycache__/\n"}.items():
        (root / name).write_text(text)
    git(root, "init", "-q", "-b", "main")
    for args in (("add", "-A"), ("commit", "-q", "-m", "start")):
        git(root, "-c", "user.email=t@e", "-c", "user.name=t", *args)
    agent = f"sed -i 's/x: 1.0/x: {new_x}/' value.yaml && echo set x to {new_x}"
    repo = str(Path(__file__).resolve().parents[1])
    done = run_cli(root, "loop", "--tag", "t", "--agent", "command", "--agent-cmd", agent, "--max-experiments", "3",
                   env={"PYTHONPATH": repo})
    assert done.returncode == 0, done.stderr
    rows = ledger_rows(root, "t")
    assert rows[2]["status"] == status and reason in (rows[2].get("decision") or "")
    assert rows[2]["kept"] == (status == "keep")
    assert (root / "value.yaml").read_text() == (f"x: {new_x}\n" if status == "keep" else "x: 1.0\n")


def test_a_baseline_that_fails_its_check_stops_the_loop_with_what_to_fix(tmp_path):
    from loop_helpers import git, run_cli
    root = tmp_path / "repo"
    root.mkdir()
    for name, text in {"value.yaml": "x: 9.0\n", "score.py": SCORE, "check.py": CHECK, "program.md": PROGRAM,
                       ".gitignore": "runs/\n"}.items():
        (root / name).write_text(text)
    git(root, "init", "-q", "-b", "main")
    for args in (("add", "-A"), ("commit", "-q", "-m", "start")):
        git(root, "-c", "user.email=t@e", "-c", "user.name=t", *args)
    done = run_cli(root, "loop", "--tag", "t", "--agent", "offline", "--max-experiments", "2",
                   env={"PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert done.returncode != 0 and "x must stay below 2.5" in done.stderr
    assert "fix the task's files or its check and score commands" in done.stderr


def test_a_score_commands_background_child_ends_with_it(tmp_path):
    pid_file = tmp_path / "bg.pid"
    score = ("import subprocess, sys\n"
             "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
             f"open({str(pid_file)!r}, 'w').write(str(p.pid))\n"
             "print('p95_ms: 3.0')\n")
    outcome = run(tmp_path, score)
    assert outcome.status == "ok"
    pid = int(pid_file.read_text())
    state = Path(f"/proc/{pid}/stat")
    assert not state.exists() or state.read_text().rsplit(")", 1)[1].split()[0] == "Z"


@pytest.mark.parametrize("check", [None, "sleep 30"])
def test_a_hung_score_or_check_is_stopped_within_a_second_of_its_timeout(tmp_path, check):
    import time
    started = time.monotonic()
    outcome = run(tmp_path, "import time, signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(30)\n",
                  check=check, timeout=1.0)
    assert outcome.status == "timeout"
    assert time.monotonic() - started < 2.0
