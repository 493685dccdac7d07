"""`autoresearch status` against hand-written ledgers in the documented format."""
import json
import os
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from engine.loop import standings
from engine.report import runs, status
from engine.errors import UserError


def ledger_row(experiment, status_, val_bpb, description, kept=None, **extra):
    row = {"experiment": experiment, "commit": f"{experiment:07x}abc", "status": status_,
           "description": description, "kept": status_ == "keep" if kept is None else kept,
           "seed": 0, "started": "2025-11-26T01:00:00+00:00",
           "finished": "2025-11-26T01:06:00+00:00", "val_bpb": val_bpb,
           "peak_vram_mb": 1024.0, "device": "cpu x2", "budget": "time 15 s"}
    row.update(extra)
    return row


def write_loop(root, tag, rows, lock_pid=None, partial_line=False):
    run_dir = root / "runs" / tag
    run_dir.mkdir(parents=True)
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if partial_line:
        text += '{"experiment": 9, "stat'
    (run_dir / "results.jsonl").write_text(text)
    if lock_pid is not None:  # as engine/loop/lock.py writes it
        (run_dir / "loop.lock").write_text(json.dumps({"tag": f"{tag}26", "pid": lock_pid,
                                                        "since": time.time()}))
    return run_dir


ROWS = [
    ledger_row(0, "keep", 2.0, "baseline"),
    ledger_row(1, "discard", 2.1, "wider mlp"),
    ledger_row(2, "keep", 1.8, "double the learning rate"),
    ledger_row(3, "crash", None, "bf16 everywhere"),
    ledger_row(4, "timeout", None, "deeper model"),
]


def test_counts_best_and_last_from_the_ledger(tmp_path):
    run_dir = write_loop(tmp_path, "demo", ROWS)
    text = "\n".join(status.status_lines(run_dir))
    assert "running:  no" in text
    assert "5 experiments: 1 baseline run; 4 candidates (1 discard, 1 kept, 1 crash, 1 timeout)" in text
    assert "baseline: val_bpb 2.000000" in text
    assert "best:     val_bpb 1.800000  (experiment 2" in text
    assert "'double the learning rate'" in text and "-10.00% vs baseline" in text
    assert "last:     experiment 4 timeout val_bpb -" in text


def test_best_is_the_last_kept_row_not_the_lowest_single_run(tmp_path):
    """The first baseline run came in below the baseline's mean; the kept change beat the mean."""
    rows = [ledger_row(0, "keep", 2.2446, "baseline", role="baseline", best_after=2.2446),
            ledger_row(1, "keep", 2.2580, "baseline", role="baseline", best_after=2.2513),
            ledger_row(2, "keep", 2.2487, "halve the batch", best_after=2.2487)]
    text = "\n".join(status.status_lines(write_loop(tmp_path, "noisy", rows)))
    assert "best:     val_bpb 2.248700  (experiment 2" in text
    assert standings.best_row(rows)["experiment"] == 2


def test_running_loop_shows_the_experiment_in_progress(tmp_path):
    run_dir = write_loop(tmp_path, "live", ROWS, lock_pid=os.getpid(), partial_line=True)
    exp = run_dir / "exp-0005"
    exp.mkdir()
    (exp / "train.log").write_text("compiling\nstep 40 loss 3.2100\n")
    text = "\n".join(status.status_lines(run_dir))
    assert f"running:  yes, pid {os.getpid()}" in text
    assert "experiment 5, started" in text
    assert "step 40 loss 3.2100" in text
    assert "5 experiments" in text  # the half-written row is not counted


def test_running_experiment_shows_step_loss_and_time_left_from_its_progress_file(tmp_path):
    run_dir = write_loop(tmp_path, "prog", ROWS, lock_pid=os.getpid())
    exp = run_dir / "exp-0005"
    exp.mkdir()
    (exp / "train.log").write_text("step    40 | loss 3.2100 | ...\n")
    (exp / "progress.json").write_text(json.dumps({  # as engine/training/progress.py writes it
        "step": 120, "loss": 3.14159, "fraction": 0.4, "remaining_seconds": 180.4, "phase": "training"}))
    assert "          step 120, loss 3.1416, 40% of budget, ~180 s left" in status.status_lines(run_dir)


def test_stale_lock_is_reported_not_trusted(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run_dir = write_loop(tmp_path, "stale", ROWS, lock_pid=dead.pid)
    text = "\n".join(status.status_lines(run_dir))
    assert f"stale loop.lock from pid {dead.pid}" in text


def test_default_tag_is_the_most_recent_loop(tmp_path, monkeypatch, capsys):
    old = write_loop(tmp_path, "old", ROWS[:2])
    write_loop(tmp_path, "new", ROWS)
    stamp = time.time() - 3600
    os.utime(old / "results.jsonl", (stamp, stamp))
    monkeypatch.chdir(tmp_path)
    assert status.main(SimpleNamespace(tag=None)) == 0
    out = capsys.readouterr().out
    assert out.startswith("loop new")
    assert "other loops: old" in out


def test_unknown_tag_names_the_known_ones(tmp_path):
    write_loop(tmp_path, "demo", ROWS)
    with pytest.raises(UserError, match=r"'nope'.*demo"):
        runs.resolve_run_dir("nope", tmp_path / "runs")


def test_no_loops_says_how_to_start_one(tmp_path):
    with pytest.raises(UserError, match="autoresearch loop --tag"):
        runs.resolve_run_dir(None, tmp_path / "runs")


def test_cli_status_runs_without_jax(tmp_path):
    write_loop(tmp_path, "demo", ROWS)
    code = ("import sys; from engine.cli import main; rc = main(['status']); "
            "assert 'jax' not in sys.modules; sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    assert "best:     val_bpb 1.800000" in out.stdout


def test_baseline_runs_are_averaged_and_best_is_the_loops_figure(tmp_path):
    rows = [ledger_row(0, "keep", 2.02, "baseline", role="baseline", best_after=2.02),
            ledger_row(1, "keep", 1.98, "baseline (run 2 of 2)", role="baseline", best_after=2.0),
            ledger_row(2, "discard", 1.95, "small gain", role="candidate", best_after=2.0,
                       needs_rerun=True),
            ledger_row(3, "keep", 1.93, "small gain (re-run of #2, seed 1)", role="rerun",
                       best_after=1.94)]
    text = "\n".join(status.status_lines(write_loop(tmp_path, "noise", rows)))
    assert "baseline: val_bpb 2.000000 (mean of 2 runs)" in text
    assert "best:     val_bpb 1.940000  (experiment 3" in text and "-3.00% vs baseline" in text
