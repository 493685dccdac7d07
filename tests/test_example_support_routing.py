"""examples/support-routing: its data, score and check, and the loop maximizing accuracy."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

from loop_helpers import git, ledger_rows, run_cli

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "support-routing"


def script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(EXAMPLE / name), *args], capture_output=True, text=True, timeout=60)


def test_the_shipped_tickets_are_what_the_generator_makes(tmp_path):
    rows = [json.loads(line) for line in (EXAMPLE / "tickets.jsonl").read_text().splitlines()]
    assert len(rows) >= 1000 and {r["split"] for r in rows} == {"dev", "test"}
    assert len({r["text"] for r in rows}) > 0.95 * len(rows)
    copy = tmp_path / "gen"
    shutil.copytree(EXAMPLE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, str(copy / "make_tickets.py")], check=True, capture_output=True)
    assert (copy / "tickets.jsonl").read_text() == (EXAMPLE / "tickets.jsonl").read_text()


def test_score_and_check(tmp_path):
    dev = script("score.py", "--split", "dev")
    assert dev.returncode == 0 and dev.stdout.strip().splitlines()[-1].startswith("accuracy: 0.")
    assert "tickets: 600" in dev.stdout
    assert script("check.py").returncode == 0
    broken = tmp_path / "rules.yaml"
    text = (EXAMPLE / "rules.yaml").read_text()
    broken.write_text(text.replace("invoice: 1.0", "invoice: -9.0"))
    check = script("check.py", "--rules", str(broken))
    assert check.returncode == 1 and "invoice" in check.stdout and "routes to" in check.stdout
    broken.write_text(text.replace("default: technical", "default: legal"))
    assert "default 'legal'" in script("check.py", "--rules", str(broken)).stdout
    assert script("score.py", "--rules", str(broken)).returncode == 2


def test_the_loop_maximizes_accuracy(tmp_path):
    root = tmp_path / "repo"
    shutil.copytree(EXAMPLE, root / "examples" / "support-routing", ignore=shutil.ignore_patterns("__pycache__"))
    (root / ".gitignore").write_text("runs/\n__pycache__/\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "-c", "user.email=t@e", "-c", "user.name=t", "add", "-A")
    git(root, "-c", "user.email=t@e", "-c", "user.name=t", "commit", "-q", "-m", "start")
    done = run_cli(root, "loop", "--tag", "r", "--program", "examples/support-routing/program.md",
                   "--agent", "offline", "--max-experiments", "7", "--seed", "3",
                   env={"PYTHONPATH": str(REPO)}, timeout=300)
    assert done.returncode == 0, done.stderr + done.stdout
    rows = ledger_rows(root, "r")
    assert len(rows) == 7 and rows[0]["direction"] == "maximize"
    for row in rows[1:]:
        if row["status"] == "keep":
            assert row["accuracy"] > row["best_before"] and row["best_after"] == row["accuracy"]
        elif row["status"] == "discard" and "accuracy" in row:
            assert row["accuracy"] <= row["best_before"]
    bests = [r["best_after"] for r in rows]
    assert bests == sorted(bests)  # the best only ever rises
    assert any(r["status"] == "keep" for r in rows[1:]) and any(r["status"] == "discard" for r in rows[1:])
