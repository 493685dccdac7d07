"""The runner: result from the JSON file, secrets scrubbed, whole process group killed at the timeout."""
import json
import sys
import textwrap
import time

from engine.loop import runner
from engine.processes import process_start_time


def script(tmp_path, body: str):
    path = tmp_path / "child.py"
    path.write_text(textwrap.dedent(body))
    return [sys.executable, str(path)]


def test_result_comes_from_the_json_not_the_output(tmp_path):
    command = script(tmp_path, """
        import json, sys
        print("val_bpb: 0.001")  # a printed figure must not count
        json.dump({"status": "ok", "error": None, "val_bpb": 1.5}, open(sys.argv[1], "w"))
    """) + [str(tmp_path / "exp" / "result.json")]
    outcome = runner.run_training(command, tmp_path / "exp", timeout=60, cwd=tmp_path)
    assert outcome.status == "ok" and outcome.result["val_bpb"] == 1.5
    assert "val_bpb: 0.001" in outcome.log_path.read_text()


def test_crash_nan_and_missing_result(tmp_path):
    exp = tmp_path / "exp"
    crash = runner.run_training(script(tmp_path, "raise SystemExit(3)"), exp, timeout=60, cwd=tmp_path)
    assert crash.status == "crash" and "exit status 3" in crash.error
    nan = runner.run_training(script(tmp_path, f"""
        import json; json.dump({{"status": "nan", "error": "loss is nan at step 7"}}, open({str(exp / 'result.json')!r}, "w"))
        raise SystemExit(1)
    """), exp, timeout=60, cwd=tmp_path)
    assert nan.status == "crash" and "loss is nan" in nan.error
    silent = runner.run_training(script(tmp_path, "pass"), exp, timeout=60, cwd=tmp_path)
    assert silent.status == "crash" and "val_bpb" in silent.error


def test_secrets_never_reach_the_child(tmp_path, monkeypatch):
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GITHUB_TOKEN", "DB_PASSWORD", "AWS_SECRET_ACCESS_KEY",
                 "GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_GENAI_USE_VERTEXAI"):
        monkeypatch.setenv(name, "s3cret")
    monkeypatch.setenv("AUTORESEARCH_CACHE", "/cache")
    out = tmp_path / "env.json"
    runner.run_training(script(tmp_path, f"import json, os; json.dump(dict(os.environ), open({str(out)!r}, 'w'))"),
               tmp_path / "exp", timeout=60, cwd=tmp_path)
    env = json.loads(out.read_text())
    assert "s3cret" not in env.values()
    assert env["AUTORESEARCH_CACHE"] == "/cache"


def test_timeout_kills_the_whole_group(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    command = script(tmp_path, f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        open({str(pid_file)!r}, "w").write(str(child.pid))
        time.sleep(600)
    """)
    record = tmp_path / "child.json"
    ticks = []
    start = time.monotonic()
    outcome = runner.run_training(command, tmp_path / "exp", timeout=2, cwd=tmp_path, child_record=record,
                         on_tick=ticks.append)
    assert outcome.status == "timeout" and time.monotonic() - start < 30
    assert ticks and not record.exists()
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while process_start_time(grandchild) is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert process_start_time(grandchild) is None


def test_build_command_passes_budget_seed_and_paths(tmp_path, monkeypatch):
    monkeypatch.delenv("AUTORESEARCH_TRAIN_COMMAND", raising=False)
    command = runner.build_command("train.py", tmp_path, 3, ["--budget-seconds", "15"], "/data")
    assert command[1:5] == ["-P", "-m", "engine.cli", "train"]
    assert command[5:] == ["train.py", "--json", str(tmp_path / "result.json"), "--run-dir", str(tmp_path),
                           "--seed", "3", "--budget-seconds", "15", "--data", "/data"]


def test_an_unscored_result_is_its_own_status_not_a_crash():
    from engine.loop.runner import classify

    status, reason = classify(1, False, {"status": "unscored", "error": "the scorer exited with status -9"})
    assert status == "unscored" and "status -9" in reason


def test_a_timeout_names_the_phase_that_ran_out_and_what_to_change(tmp_path):
    """The engine writes its phase file into the run directory; killed at the timeout, the run
    says which phase ran out and the seconds of those before it."""
    phase_file = tmp_path / "exp" / "phase.json"
    command = script(tmp_path, f"""
        import json, time
        seconds = {{"trace": 1.5, "compile": 4.0, "train": 30.2, "checkpoint": 0.4}}
        json.dump({{"phase": "scoring", "since": time.time(), "seconds": seconds}}, open({str(phase_file)!r}, "w"))
        time.sleep(600)
    """)
    outcome = runner.run_training(command, tmp_path / "exp", timeout=2, cwd=tmp_path)
    assert outcome.status == "timeout"
    assert "killed at the hard timeout of 2 s, in the scoring phase after" in outcome.error
    assert "(trace 1.5 s, compile 4.0 s, train 30.2 s, checkpoint 0.4 s)" in outcome.error
    assert "--timeout" in outcome.error and "timeout_seconds" in outcome.error


def test_the_hard_timeout_is_budget_compile_and_scoring_sized_from_the_eval_tokens():
    small, large = runner.scoring_allowance(4096, 64), runner.scoring_allowance(131_072, 512)
    assert small < large and large == runner.SCORING_FLOOR_SECONDS + (5 * 131_072 + 512 ** 2) / 2000.0
    assert runner.scoring_allowance(131_072, 512, measured_seconds=10.0) == runner.SCORING_FLOOR_SECONDS + 30.0
    assert runner.train_timeout(30.0, 180.0, large) == 30.0 + 180.0 + large
