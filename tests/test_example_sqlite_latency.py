"""examples/sqlite-latency at a small size: score, check, and a command-kind loop through the real loop."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from loop_helpers import git, ledger_rows, run_cli

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "sqlite-latency"


@pytest.fixture
def small_db(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("AUTORESEARCH_SQLITE_ROWS", "5000")
    return tmp_path


def script(name: str, *args: str, cwd=REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(EXAMPLE / name), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_score_prints_p95_last_and_check_passes(small_db):
    done = script("score.py")
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("p95_ms: ") and float(last.split()[1]) > 0
    assert "executions: 28" in done.stdout
    assert script("score.py", "--workload", "holdout").returncode == 0
    check = script("check.py")
    assert check.returncode == 0 and "check: ok" in check.stdout


def test_check_fails_a_tuning_that_changes_answers(small_db):
    tuning = small_db / "bad.sql"
    tuning.write_text((EXAMPLE / "tuning.sql").read_text()
                      + "-- rewrite: status_counts\nSELECT status, count(*) - 1 FROM orders WHERE day >= :since "
                        "GROUP BY status ORDER BY status;\nDELETE FROM customers WHERE id = 1;\n")
    check = script("check.py", "--tuning", str(tuning))
    assert check.returncode == 1 and "query status_counts" in check.stdout


def test_a_rewrite_that_keeps_the_rows_passes(small_db):
    tuning = small_db / "good.sql"
    tuning.write_text("CREATE INDEX orders_day ON orders(day);\n-- rewrite: order_lookup\n"
                      "SELECT id, customer_id, product_id, day, quantity, total_cents, status FROM orders "
                      "WHERE id = :id;\n")
    assert script("check.py", "--tuning", str(tuning)).returncode == 0


def test_four_experiments_through_the_real_loop(small_db):
    root = small_db / "repo"
    shutil.copytree(EXAMPLE, root / "examples" / "sqlite-latency", ignore=shutil.ignore_patterns("__pycache__"))
    (root / ".gitignore").write_text("runs/\n__pycache__/\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "-c", "user.email=t@e", "-c", "user.name=t", "add", "-A")
    git(root, "-c", "user.email=t@e", "-c", "user.name=t", "commit", "-q", "-m", "start")
    done = run_cli(root, "loop", "--tag", "t", "--program", "examples/sqlite-latency/program.md",
                   "--agent", "offline", "--max-experiments", "4", env={"PYTHONPATH": str(REPO)}, timeout=300)
    assert done.returncode == 0, done.stderr + done.stdout
    rows = ledger_rows(root, "t")
    assert len(rows) == 4 and [r["role"] for r in rows[:2]] == ["baseline", "baseline"]
    assert all(r["metric"] == "p95_ms" and r["p95_ms"] > 0 for r in rows if r["status"] in ("keep", "discard"))
    assert all(r["description"].split(":")[0] in ("cache_size", "mmap_size", "temp_store") for r in rows[2:]
               if r.get("role") != "rerun")
    header = (root / "runs" / "t" / "results.tsv").read_text().splitlines()[0]
    assert header.split("\t") == ["commit", "p95_ms", "memory_gb", "status", "description"]
    assert git(root, "status", "--porcelain") == ""
    best = [r for r in rows if r["kept"]][-1]["commit"]
    assert git(root, "rev-parse", "HEAD") == best


def test_the_database_build_is_deterministic(tmp_path):
    sys.path.insert(0, str(EXAMPLE))
    import hashlib
    import workload
    first, second = tmp_path / "a.db", tmp_path / "b.db"
    workload.build(first, 3000)
    workload.build(second, 3000)
    assert hashlib.sha256(first.read_bytes()).hexdigest() == hashlib.sha256(second.read_bytes()).hexdigest()
