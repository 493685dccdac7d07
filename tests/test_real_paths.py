"""The real paths a user takes, with the repository's own default train.py (not a fixture):
the serial loop, `--workers 2`, a two-worker swarm on a bare remote, and `autoresearch
experiment`, each at a tiny token budget on the tiny prepared cache. Each must end with a
consistent ledger, its branch at the last kept commit, and a clean tree.

These tests know nothing of the trainer's internals: they run `autoresearch` as a user would.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from loop_helpers import git, ledger_rows, make_repo

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TRAIN = (REPO / "train.py").read_text()
BUDGET = ["--budget-tokens", "16384"]
PROGRAM = """# real paths
## Editable files
- train.py
## Budget
- budget_tokens: 16384
- timeout_seconds: 600
## Noise
- baseline_runs: 1
"""
STATUSES = {"keep", "discard", "crash", "timeout", "rejected", "invalid", "stale", "baseline", "confirm"}


@pytest.fixture
def real_repo(prepared_data, tmp_path, monkeypatch):
    monkeypatch.delenv("AUTORESEARCH_TRAIN_COMMAND", raising=False)
    root = make_repo(tmp_path, train_py=DEFAULT_TRAIN, program_md=PROGRAM, fixed_engine=False)
    return root


def autoresearch(root: Path, *argv: str, timeout: float = 1200) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
    env.pop("AUTORESEARCH_TRAIN_COMMAND", None)
    done = subprocess.run([sys.executable, "-m", "engine.cli", *argv], cwd=root, capture_output=True, text=True,
                          timeout=timeout, env=env)
    return done


def check_consistent(root: Path, tag: str, experiments: int | None) -> list[dict]:
    """Numbered rows without gaps (`experiments` of them; None: any number), every status known,
    no error in a row that ran, every commit real, the branch at the last kept commit, nothing
    left in the tree."""
    rows = ledger_rows(root, tag)
    experiments = len(rows) if experiments is None else experiments
    assert [r["experiment"] for r in rows] == list(range(experiments))
    assert {r["status"] for r in rows} <= STATUSES
    failed = [(r["experiment"], r["status"], r.get("error")) for r in rows if r["status"] in ("crash", "invalid", "timeout")]
    assert not failed, failed
    assert rows[0]["role"] == "baseline" and rows[0]["kept"] and 0 < rows[0]["val_bpb"] < 20
    for row in rows:
        if row.get("commit"):
            git(root, "cat-file", "-e", row["commit"])
    kept = [r for r in rows if r["kept"]]
    assert git(root, "rev-parse", "--abbrev-ref", "HEAD") == f"autoresearch/{tag}"
    assert git(root, "rev-parse", "HEAD") == kept[-1]["commit"]
    assert git(root, "status", "--porcelain") == ""
    tsv = (root / "runs" / tag / "results.tsv").read_text().splitlines()
    assert len(tsv) == experiments + 1
    return rows


def test_the_serial_loop(real_repo, prepared_data):
    done = autoresearch(real_repo, "loop", "--tag", "serial", "--agent", "offline", "--max-experiments", "3",
                        "--data", str(prepared_data), *BUDGET)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = check_consistent(real_repo, "serial", 3)
    assert "every file matches its sha256" in done.stdout
    # TensorBoard's own reader finds each run's per-step loss, the loop's val_bpb per experiment, the HParams
    from test_tracking import event_runs, scalars, session_hparams
    runs = event_runs(real_repo / "runs" / "serial" / "tensorboard")
    assert sorted(runs) == ["exp-0000", "exp-0001", "exp-0002", "loop"]
    loss = scalars(runs["exp-0000"], "train/loss")
    assert len(loss) >= 2 and min(loss) == 1 and all(0 < v < 20 for v in loss.values())
    assert scalars(runs["loop"], "loop/val_bpb") == pytest.approx({r["experiment"]: r["val_bpb"] for r in rows})
    assert "HEAD_DIM" in session_hparams(runs["exp-0001"]) and session_hparams(runs["exp-0000"])["status"] == "baseline"


def test_two_workers(real_repo, prepared_data):
    done = autoresearch(real_repo, "loop", "--tag", "par", "--agent", "offline", "--max-experiments", "3",
                        "--workers", "2", "--data", str(prepared_data), *BUDGET)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = check_consistent(real_repo, "par", 3)
    assert {r.get("worker") for r in rows} <= {"w0", "w1"}


def test_autoresearch_experiment(real_repo, prepared_data):
    train = real_repo / "train.py"
    train.write_text(re.sub(r"^WARMDOWN = [0-9.]+", "WARMDOWN = 0.3", train.read_text(), flags=re.M))
    done = autoresearch(real_repo, "experiment", "shorter warmdown", "--tag", "ext", "--data", str(prepared_data),
                        *BUDGET)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = check_consistent(real_repo, "ext", None)  # the baseline, the change, and its re-runs or confirmations
    assert len(rows) >= 2 and rows[1]["description"] == "shorter warmdown"
    change = [r for r in rows[1:] if r["role"] not in ("confirm", "pair", "baseline")]
    assert {r["commit"] for r in change} == {rows[1]["commit"]} and change[-1]["status"] in ("keep", "discard")


def test_a_two_worker_swarm_on_a_bare_remote(real_repo, prepared_data, tmp_path):
    remote = tmp_path / "remote.git"
    git(tmp_path, "clone", "-q", "--bare", str(real_repo), str(remote))
    clones = []
    for name in ("a", "b"):
        clone = tmp_path / name
        git(tmp_path, "clone", "-q", str(remote), str(clone))
        git(clone, "config", "user.email", f"{name}@example.com")
        git(clone, "config", "user.name", name)
        clones.append(clone)
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
    env.pop("AUTORESEARCH_TRAIN_COMMAND", None)
    workers = [subprocess.Popen([sys.executable, "-m", "engine.cli", "loop", "--tag", "sw", "--agent", "offline",
                                 "--remote", str(remote), "--worker", clone.name, "--max-experiments", "2",
                                 "--seed", str(i), "--data", str(prepared_data), *BUDGET],
                                cwd=clone, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for i, clone in enumerate(clones)]
    outputs = [w.communicate(timeout=1500)[0] for w in workers]
    for worker, output in zip(workers, outputs):
        assert worker.returncode == 0, output[-3000:]
    for clone in clones:
        rows = ledger_rows(clone, "sw")
        assert [r["experiment"] for r in rows] == list(range(len(rows))) and len(rows) >= 2
        assert not [r for r in rows if r["status"] in ("crash", "invalid", "timeout")], [r.get("error") for r in rows]
        assert git(clone, "status", "--porcelain") == ""
        kept = [r for r in rows if r["kept"]]
        assert git(clone, "rev-parse", "HEAD") == kept[-1]["commit"]
    shared = git(remote, "ls-tree", "--name-only", "autoresearch/sw-ledger:workers").split()
    assert sorted(name.split(".")[0] for name in shared) == ["a", "b"]  # workers/NAME.CLONE.jsonl
    assert all(re.fullmatch(r"[ab]\.[0-9a-f]{12}\.jsonl", name) for name in shared), shared
