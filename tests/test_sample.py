"""`autoresearch sample`: text from a tiny checkpoint trained by the real engine."""
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from engine.scoring import sample
from engine.errors import UserError

FIXTURE_TRAIN = Path(__file__).parent / "fixtures" / "tiny_train.py"
GIT_IDENTITY = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
                "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}


def git(repo, *args):
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True,
                          env={**os.environ, **GIT_IDENTITY}).stdout.strip()


def cli(repo, *argv):
    return subprocess.run([sys.executable, "-m", "engine.cli", *argv], cwd=repo,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def trained(prepared_data, tmp_path_factory):
    """A repository whose loop 'sampled' kept one checkpoint: trained for real, ledger by hand."""
    repo = tmp_path_factory.mktemp("sample") / "repo"
    repo.mkdir()
    (repo / "train.py").write_text(FIXTURE_TRAIN.read_text())
    (repo / ".gitignore").write_text("runs/\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "tiny model")
    exp_dir = repo / "runs" / "s" / "exp-0000"
    done = cli(repo, "train", "train.py", "--budget-tokens", "30720", "--seed", "0",
               "--run-dir", str(exp_dir), "--json", str(exp_dir / "result.json"))
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((exp_dir / "result.json").read_text())
    row = {**result, "experiment": 0, "commit": git(repo, "rev-parse", "HEAD"), "status": "keep",
           "kept": True, "role": "baseline", "description": "baseline",
           "best_after": result["val_bpb"]}
    (repo / "runs" / "s" / "results.jsonl").write_text(json.dumps(row) + "\n")
    return SimpleNamespace(repo=repo, row=row, checkpoint=exp_dir / "checkpoint",
                           data=prepared_data)


def test_greedy_sample_continues_the_prompt_and_is_repeatable(trained):
    first = cli(trained.repo, "sample", "--tag", "s", "--prompt", "def ", "--max-tokens", "24",
                "--temperature", "0")
    assert first.returncode == 0, first.stderr
    again = cli(trained.repo, "sample", "--tag", "s", "--prompt", "def ", "--max-tokens", "24",
                "--temperature", "0")
    assert first.stdout.startswith("def ") and len(first.stdout.strip()) > len("def ")
    assert first.stdout == again.stdout
    assert "experiment 0" in first.stderr and "baseline" in first.stderr


def test_sampling_follows_the_seed(trained):
    texts = {seed: sample.sample_text(trained.checkpoint, trained.data,
                                      "import ", 32, 1.0, 50, seed)
             for seed in (0, 0, 1)}
    again = sample.sample_text(trained.checkpoint, trained.data,
                               "import ", 32, 1.0, 50, 0)
    assert texts[0] == again
    assert texts[0] != texts[1]


def test_a_checkpoint_without_programs_is_told_to_train_again(trained, tmp_path):
    import shutil
    copy = tmp_path / "checkpoint"
    shutil.copytree(trained.checkpoint, copy)
    shutil.rmtree(copy / "programs")
    with pytest.raises(UserError, match="holds no exported programs"):
        sample.sample_text(copy, trained.data, "x", 4, 0.0, 0, 0)


def test_sampling_never_imports_train_py(trained, tmp_path):
    """train.py may be gone or broken: sampling runs the checkpoint's programs."""
    (trained.repo / "train.py").write_text("raise SystemExit('train.py ran')\n")
    try:
        text = sample.sample_text(trained.checkpoint, trained.data, "def ", 8, 0.0, 0, 0)
    finally:
        git(trained.repo, "checkout", "--", "train.py")
    assert isinstance(text, str)


def test_bad_settings_are_refused(trained):
    for flags, message in ((["--max-tokens", "0"], "--max-tokens"),
                           (["--temperature", "-1"], "--temperature"),
                           (["--top-k", "-2"], "--top-k")):
        done = cli(trained.repo, "sample", "--tag", "s", *flags)
        assert done.returncode == 2 and message in done.stderr, done.stderr


def test_no_kept_experiment_is_a_user_error(trained, tmp_path, monkeypatch):
    run_dir = tmp_path / "runs" / "empty"
    run_dir.mkdir(parents=True)
    crashed = {**trained.row, "status": "crash", "kept": False, "val_bpb": None}
    (run_dir / "results.jsonl").write_text(json.dumps(crashed) + "\n")
    monkeypatch.chdir(tmp_path)
    args = SimpleNamespace(tag="empty", prompt="", max_tokens=4, temperature=0.0, top_k=0, seed=0)
    with pytest.raises(UserError, match="no checkpoint to sample: its baseline failed"):
        sample.main(args)
