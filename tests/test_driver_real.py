"""The loop with the real engine: `autoresearch train` on tests/fixtures/tiny_train.py, tiny budgets."""
import subprocess
import sys
from pathlib import Path

import pytest

from loop_helpers import git, ledger_rows, make_repo

FIXTURE = Path(__file__).parent / "fixtures" / "tiny_train.py"
PROGRAM = """# tiny
## Editable files
- train.py
## Budget
- budget_seconds: 2
- timeout_seconds: 240
## Noise
- baseline_runs: 1
"""


@pytest.mark.slow
def test_real_engine_loop(prepared_data, tmp_path, monkeypatch):
    root = make_repo(tmp_path, train_py=FIXTURE.read_text(), program_md=PROGRAM, fixed_engine=False)
    monkeypatch.delenv("AUTORESEARCH_TRAIN_COMMAND", raising=False)
    done = subprocess.run([sys.executable, "-m", "engine.cli", "loop", "--tag", "real", "--agent", "offline",
                           "--max-experiments", "3", "--data", str(prepared_data)],
                          cwd=root, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = ledger_rows(root, "real")
    assert len(rows) == 3 and rows[0]["role"] == "baseline" and rows[0]["status"] == "baseline"
    assert all(r["status"] in ("baseline", "keep", "discard") for r in rows), [r.get("error") for r in rows]
    assert all(0 < r["val_bpb"] < 20 and r["platform"] == "cpu" for r in rows)
    assert rows[0]["manifest_fingerprint"] and rows[0]["training_seconds"] > 0
    assert (root / "runs" / "real" / "exp-0000" / "train.log").read_text().count("val_bpb") >= 1
    assert git(root, "status", "--porcelain") == ""
    assert git(root, "rev-parse", "HEAD") == [r for r in rows if r["kept"]][-1]["commit"]
