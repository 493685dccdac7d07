"""`autoresearch report`: hand-written ledgers over a real git history, held-out scoring
faked at the subprocess boundary; and (slow) the report of a real short loop on CPU."""
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from engine.report import heldout
from engine.report import report
from engine.errors import UserError

FINGERPRINT = "f" * 64


def git(repo, *args):
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True,
                          text=True).stdout.strip()


def commit_train(repo, lr, message):
    (repo / "train.py").write_text(f"LR = {lr}\nDEPTH = 2\n")
    git(repo, "add", "train.py")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def row(experiment, commit, status, val_bpb, description, hour, **extra):
    base = {"experiment": experiment, "commit": commit, "status": status, "role": "candidate",
            "description": description, "kept": status == "keep", "seed": 0,
            "started": f"2025-11-26T{hour:02d}:00:00+00:00",
            "finished": f"2025-11-26T{hour:02d}:30:00+00:00", "val_bpb": val_bpb,
            "peak_vram_mb": 2048.0, "device": "TPU v5 lite x8", "platform": "tpu",
            "num_devices": 8, "num_processes": 1, "budget": "time 300 s",
            "manifest_fingerprint": FINGERPRINT, "cost_usd": 0.01,
            "noise": 0.0 if experiment < 2 else 0.04}
    base.update(extra)
    return base


def lr_of(checkpoint, rows, learning_rates) -> float:
    """The LR of the commit whose experiment saved `checkpoint` (runs/TAG/exp-NNNN/checkpoint)."""
    experiment = int(Path(checkpoint).parent.name.split("-")[1])
    return learning_rates[next(r["commit"] for r in rows if r["experiment"] == experiment)]


@pytest.fixture
def loop_repo(tmp_path, monkeypatch):
    """A repository whose loop kept two of four changes; test_bpb = LR of the commit."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "t@example.com")
    git(repo, "config", "user.name", "t")
    base = commit_train(repo, 1.0, "baseline")
    first = commit_train(repo, 0.9, "lower lr")
    git(repo, "reset", "-q", "--hard", first)
    second = commit_train(repo, 0.8, "lower lr again")
    # As the loop writes them: the baseline runs twice (noise), a small gain is re-run.
    rows = [row(0, base, "keep", 2.02, "baseline", 1, role="baseline", best_after=2.02),
            row(1, base, "keep", 1.98, "baseline (run 2 of 2)", 2, role="baseline", best_after=2.0),
            row(2, first, "keep", 1.9, "lower lr", 3, best_after=1.9),
            row(3, "d" * 40, "discard", 2.3, "wider mlp", 4, best_after=1.9),
            row(4, "e" * 40, "crash", None, "bf16 everywhere", 5, best_after=1.9),
            row(5, "f" * 40, "discard", 9.0, "huge lr", 6, best_after=1.9),
            row(6, "a" * 40, "timeout", None, "deeper model", 7, best_after=1.9),
            row(7, second, "discard", 1.72, "lower lr again", 8, best_after=1.9, needs_rerun=True),
            row(8, second, "keep", 1.68, "lower lr again (re-run of #7, seed 1)", 9,
                role="rerun", rerun_of=7, best_after=1.70),
            row(9, None, "rejected", None, "touched prepare.py", 9, best_after=1.70)]
    run_dir = repo / "runs" / "night"
    run_dir.mkdir(parents=True)
    (run_dir / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for r in rows:
        (run_dir / f"exp-{r['experiment']:04d}" / "checkpoint").mkdir(parents=True)
    cache = tmp_path / "cache"
    (cache / "stdlib-v512-0000").mkdir(parents=True)
    (cache / "stdlib-v512-0000" / "manifest.json").write_text(json.dumps({"fingerprint": FINGERPRINT}))
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(cache))
    calls = []

    learning_rates = {base: 1.0, first: 0.9, second: 0.8}

    def fake_evaluate(tmp, checkpoint, data, repo_root):
        calls.append(checkpoint)
        lr = lr_of(checkpoint, rows, learning_rates)
        assert data == cache / "stdlib-v512-0000"
        return {"test_bpb": lr + 1.05, "tokens": 4096, "manifest_fingerprint": FINGERPRINT,
                "checkpoint": str(checkpoint), "error": None}

    monkeypatch.setattr(heldout, "_run_evaluate", fake_evaluate)
    monkeypatch.chdir(repo)
    return SimpleNamespace(repo=repo, run_dir=run_dir, rows=rows, calls=calls, learning_rates=learning_rates,
                           commits=(base, first, second))


def run_report(capsys, **kwargs):
    args = SimpleNamespace(tag=kwargs.get("tag", "night"), out=kwargs.get("out"),
                           json=kwargs.get("json", True))
    assert report.main(args) == 0
    return capsys.readouterr().out


def test_report_facts_figures_and_rates(loop_repo, capsys):
    facts = json.loads(run_report(capsys))
    assert facts["hardware"]["device"] == "TPU v5 lite x8"
    assert facts["budget"] == "time 300 s"
    assert facts["noise"] > 0 and facts["noise_df"] >= 1  # pooled from the ledger's repeated commits, not copied from a row
    # the figures the loop compared: the baseline's mean, the re-run change's mean
    assert facts["baseline"]["val_bpb"] == 2.0 and facts["baseline"]["experiments"] == [0, 1]
    assert facts["best"]["val_bpb"] == 1.7 and facts["best"]["experiments"] == [7, 8]
    assert facts["best"]["description"] == "lower lr again"
    assert facts["baseline"]["test_bpb"] == pytest.approx(2.05)
    assert facts["best"]["test_bpb"] == pytest.approx(1.85)
    assert facts["gain"]["val_bpb"] == {"absolute": pytest.approx(0.3), "relative": pytest.approx(0.15)}
    assert facts["gain"]["test_bpb"]["absolute"] == pytest.approx(0.2)
    # status words: the baseline's runs are baseline, not keep (results.tsv, status and the live line agree)
    assert facts["counts"] == {"keep": 2, "discard": 3, "crash": 1, "timeout": 1, "rejected": 1, "invalid": 0,
                               "stale": 0, "unscored": 0, "baseline": 2, "confirm": 0, "adopted": 0}
    assert facts["tally"] == {"experiments": 10, "baseline_runs": 2, "confirmations": 0, "adopted": 0, "candidates": 7,
                              "reruns": 1, "kept": 2, "undecided": 0,
                              "outcomes": {"keep": 2, "discard": 2, "crash": 1, "timeout": 1, "rejected": 1}}
    assert facts["counts_after_baseline"]["keep"] == 2 and facts["counts_after_baseline"]["discard"] == 2
    # 6 decided candidates ran (the re-run series once): 2 kept, 2 discarded, 1 crash, 1 timeout.
    assert facts["rates"] == {"keep": pytest.approx(2 / 6, abs=1e-4), "discard": pytest.approx(2 / 6, abs=1e-4),
                              "crash": pytest.approx(1 / 6, abs=1e-4),
                              "timeout": pytest.approx(1 / 6, abs=1e-4), "invalid": 0.0}
    # 9 ran between 01:00 and 09:30.
    assert facts["experiments_per_hour"] == pytest.approx(9 / 8.5, abs=0.01)
    assert [k["description"] for k in facts["kept"]] == ["lower lr", "lower lr again"]
    assert facts["kept"][0]["val_gain"] == pytest.approx(0.1)
    assert facts["kept"][1]["val_gain"] == pytest.approx(0.2)
    assert facts["kept"][1]["test_gain"] == pytest.approx(0.1)
    assert "-LR = 0.9" in facts["kept"][1]["diff"] and "+LR = 0.8" in facts["kept"][1]["diff"]
    assert facts["warnings"] == []
    # test_bpb only for runs of the baseline and the kept commits, from their checkpoints
    assert sorted(Path(c).parent.name for c in loop_repo.calls) == [
        "exp-0000", "exp-0001", "exp-0002", "exp-0007", "exp-0008"]


def test_report_md_and_png_are_written(loop_repo, capsys):
    out = run_report(capsys, json=False)
    md = (loop_repo.run_dir / "report.md").read_text()
    assert "TPU v5 lite x8" in md and "time 300 s" in md and "noise" in md
    assert "| baseline | 0, 1 `" in md and "2.000000" in md and "2.050000" in md
    assert "| best | 7, 8 `" in md and "1.700000" in md and "1.850000" in md
    assert "+0.300000 (+15.00%)" in md
    assert "### 2. experiments 7, 8" in md and "lower lr again" in md and "+LR = 0.8" in md
    assert "| crash | 1 | 17% |" in md and "| keep | 2 | 33% |" in md and "| rejected | 1 |  |" in md
    # every experiment in order, a re-run under its candidate, the gain over the best then (positive is better)
    assert "10 experiments: 2 baseline runs; 7 candidates (2 kept, 2 discard, 1 crash, 1 timeout, 1 rejected), " \
           "1 re-run." in md
    table = [line for line in md.splitlines() if re.match(r"^\| (↳ )?\d+ \|", line)]
    assert [line.split(" | ")[0] for line in table] == [f"| {n}" for n in range(8)] + ["| ↳ 8", "| 9"]
    assert table[5].startswith("| 5 | huge lr | - | 9.000000 | -7.1 | discard |")
    assert table[2].startswith("| 2 | lower lr | - | 1.900000 | +0.1 | **keep** |")
    assert "| 0 | baseline | - | 2.020000 |  | baseline |" in table[0]
    png = loop_repo.run_dir / "progress.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    assert "report.md" in out


def test_the_charts_data_covers_every_point(loop_repo, capsys):
    facts = json.loads(run_report(capsys))
    chart = facts["chart"]
    assert [p["experiment"] for p in chart["points"]] == list(range(10))
    kinds = {p["experiment"]: p["kind"] for p in chart["points"]}
    assert kinds == {0: "baseline", 1: "baseline", 2: "kept", 3: "discard", 4: "crash", 5: "discard",
                     6: "timeout", 7: "discard", 8: "kept", 9: "rejected"}
    low, high = chart["y_limits"]
    far = [p for p in chart["points"] if p["clipped"]]
    assert [(p["experiment"], p["value"]) for p in far] == [(5, 9.0)] and far[0]["shown_at"] == high
    assert all(low <= p["value"] <= high for p in chart["points"] if p["value"] is not None and not p["clipped"])
    assert low < 1.68 and high > 2.3  # every point but the far outlier inside the axes
    assert chart["best_line"][0] == [1, 2.0] and chart["best_line"][-1] == [9, 1.7]
    assert chart["noise_sigma"] == facts["noise"] and chart["band"][-1] == [9, 1.7 - facts["noise"], 1.7 + facts["noise"]]
    assert chart["test_bpb"] == {"baseline": pytest.approx(2.05), "best": pytest.approx(1.85), "baseline_x": 1,
                                 "best_x": 8}


def test_second_report_uses_the_cache(loop_repo, capsys):
    run_report(capsys)
    assert len(loop_repo.calls) == 5
    run_report(capsys)
    assert len(loop_repo.calls) == 5
    cached = json.loads((loop_repo.run_dir / "heldout.json").read_text())
    assert len(cached["entries"]) == 5


def test_test_bpb_never_reaches_the_ledger(loop_repo, capsys):
    before = (loop_repo.run_dir / "results.jsonl").read_text()
    run_report(capsys)
    assert (loop_repo.run_dir / "results.jsonl").read_text() == before
    assert "test" not in before


def test_val_and_test_disagreement_is_flagged(loop_repo, capsys, monkeypatch):
    def overfit(tmp, checkpoint, data, repo_root):
        lr = lr_of(checkpoint, loop_repo.rows, loop_repo.learning_rates)
        return {"test_bpb": 3.0 - lr, "tokens": 1, "manifest_fingerprint": FINGERPRINT,
                "checkpoint": str(checkpoint), "error": None}

    monkeypatch.setattr(heldout, "_run_evaluate", overfit)
    facts = json.loads(run_report(capsys))
    text = " ".join(facts["warnings"])
    assert "may be over-fitted" in text
    assert "experiment 8 ('lower lr again') improved val_bpb" in text
    assert "over-fitted" in (loop_repo.run_dir / "report.md").read_text()


def test_missing_checkpoint_is_a_warning_and_retried(loop_repo, capsys):
    for run in ("exp-0007", "exp-0008"):
        (loop_repo.run_dir / run / "checkpoint").rmdir()
    facts = json.loads(run_report(capsys))
    assert facts["best"]["test_bpb"] is None
    assert any("no test_bpb for experiment 8" in w for w in facts["warnings"])
    for run in ("exp-0007", "exp-0008"):
        (loop_repo.run_dir / run / "checkpoint").mkdir()
    facts = json.loads(run_report(capsys))
    assert facts["best"]["test_bpb"] == pytest.approx(1.85)


def test_out_dir_holds_both_files(loop_repo, capsys, tmp_path):
    run_report(capsys, out=str(tmp_path / "morning"))
    assert (tmp_path / "morning" / "report.md").exists()
    assert (tmp_path / "morning" / "progress.png").exists()


def test_empty_ledger_is_a_user_error(loop_repo, capsys):
    (loop_repo.run_dir / "results.jsonl").write_text("")
    with pytest.raises(UserError, match="no finished experiment"):
        run_report(capsys)


def test_crash_only_loop_still_reports(tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "runs" / "bad"
    run_dir.mkdir(parents=True)
    rows = [row(0, "c" * 40, "crash", None, "baseline", 1, role="baseline")]
    (run_dir / "results.jsonl").write_text(json.dumps(rows[0]) + "\n")
    monkeypatch.chdir(tmp_path)
    facts = json.loads(run_report(capsys, tag="bad"))
    assert facts["best"] is None and facts["kept"] == []
    assert "No change beat the baseline" in (run_dir / "report.md").read_text()
    assert (run_dir / "progress.png").exists()


def test_overnight_script_runs_the_loop_then_the_report(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "autoresearch"
    fake.write_text('#!/bin/sh\necho "autoresearch $*"\n')
    fake.chmod(0o755)
    script = Path(__file__).resolve().parents[1] / "scripts" / "overnight.sh"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "OVERNIGHT_NO_TMUX": "1", "HOME": str(tmp_path)}
    out = subprocess.run(["bash", str(script), "night", "--agent", "offline", "--max-hours", "8"],
                         cwd=repo, env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    log = repo / "runs" / "night" / "overnight.log"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and "done" not in (log.read_text() if log.exists() else ""):
        time.sleep(0.1)
    text = log.read_text()
    assert "autoresearch loop --tag night --agent offline --max-hours 8" in text
    assert "loop exited with 0" in text
    assert text.index("loop --tag") < text.index("autoresearch report --tag night")


# ---------------------------------------------------------------- a real loop, end to end

FIXTURE_TRAIN = Path(__file__).parent / "fixtures" / "tiny_train.py"
TINY_PROGRAM = """# tiny program

## Editable files
- train.py

## Noise
- baseline_runs: 2
- max_runs: 1
- confirm_runs: 0
- confidence: 0.8

## Budget
- timeout_seconds: 300
"""
DOUBLE_LR = ("sed -i 's/^LEARNING_RATE = 3e-3/LEARNING_RATE = 6e-3/' train.py && "
             "echo 'double the learning rate'")


def cli(repo, *argv, timeout=300):
    env = {k: v for k, v in os.environ.items() if k != "AUTORESEARCH_TRAIN_COMMAND"}
    env.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com")
    done = subprocess.run([sys.executable, "-m", "engine.cli", *argv], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout


@pytest.fixture(scope="module")
def real_loop(prepared_data, tmp_path_factory):
    """Baseline + one kept change of the tiny fixture model, under a token budget so the
    result does not depend on how loaded the machine is."""
    repo = tmp_path_factory.mktemp("real") / "repo"
    repo.mkdir()
    (repo / "train.py").write_text(FIXTURE_TRAIN.read_text())
    (repo / "program.md").write_text(TINY_PROGRAM)
    (repo / ".gitignore").write_text("runs/\n__pycache__/\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-q", "-m", "start")
    cli(repo, "loop", "--tag", "real", "--agent", "command", "--agent-cmd", DOUBLE_LR,
        "--max-experiments", "3", "--budget-tokens", "30720")
    return repo


@pytest.mark.slow
def test_report_of_a_real_loop(real_loop):
    run_dir = real_loop / "runs" / "real"
    ledger_text = (run_dir / "results.jsonl").read_text()
    rows = [json.loads(line) for line in ledger_text.splitlines()]
    assert [r["status"] for r in rows] == ["baseline", "baseline", "keep"], rows
    facts = json.loads(cli(real_loop, "report", "--tag", "real", "--json"))
    assert facts["baseline"]["val_bpb"] == pytest.approx((rows[0]["val_bpb"] + rows[1]["val_bpb"]) / 2)
    assert facts["best"]["val_bpb"] == pytest.approx(rows[2]["val_bpb"])
    assert facts["hardware"]["platform"] == "cpu" and facts["budget"].startswith("tokens")
    # test_bpb from the saved checkpoints: a real, different figure for each model
    base_test, best_test = facts["baseline"]["test_bpb"], facts["best"]["test_bpb"]
    assert 0.5 < base_test / facts["baseline"]["val_bpb"] < 2
    assert base_test != best_test
    assert facts["kept"][0]["description"] == "double the learning rate"
    assert "+LEARNING_RATE = 6e-3" in facts["kept"][0]["diff"]
    md = (run_dir / "report.md").read_text()
    assert f"{base_test:.6f}" in md and f"{facts['best']['val_bpb']:.6f}" in md
    png = run_dir / "progress.png"
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 20_000
    cached = json.loads((run_dir / "heldout.json").read_text())["entries"]
    cached_values = [e["test_bpb"] for e in cached.values()]  # both baseline runs and the kept change
    assert len(cached_values) == 3 and any(v == pytest.approx(best_test, abs=1e-6) for v in cached_values)
    # never written where the loop or an agent reads
    assert (run_dir / "results.jsonl").read_text() == ledger_text
    assert "test_bpb" not in ledger_text and "test_bpb" not in (run_dir / "results.tsv").read_text()


@pytest.mark.slow
def test_status_of_a_real_loop(real_loop):
    status = cli(real_loop, "status", "--tag", "real")
    assert "done:     3 experiments: 2 baseline runs; 1 candidate (1 " in status
    assert "'double the learning rate'" in status


def test_no_held_out_evaluation_while_a_loop_holds_the_accelerator(loop_repo, capsys):
    run_report(capsys)  # caches the baseline's and the kept runs' figures
    cache = loop_repo.run_dir / "heldout.json"
    entries = json.loads(cache.read_text())["entries"]
    dropped = next(k for k in entries if k.startswith("8:"))
    del entries[dropped]
    cache.write_text(json.dumps({"entries": entries}))
    (loop_repo.run_dir / "loop.lock").write_text(json.dumps({"pid": os.getpid(), "tag": "night"}))
    calls = len(loop_repo.calls)
    facts = json.loads(run_report(capsys))
    assert len(loop_repo.calls) == calls  # nothing evaluated while the loop runs
    assert facts["baseline"]["test_bpb"] == pytest.approx(2.05)  # from the cache
    assert facts["best"]["test_bpb"] == pytest.approx(1.85)  # run 7 cached, run 8 deferred
    (loop_repo.run_dir / "loop.lock").unlink()
    run_report(capsys)
    assert len(loop_repo.calls) == calls + 1
