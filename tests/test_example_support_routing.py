"""examples/support-routing: its data, score and check, and the loop maximizing accuracy."""
import json
import os
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
        if row["status"] == "keep" and row.get("role") == "candidate":
            assert row["best_after"] > row["best_before"], row
        elif row["status"] == "discard" and "accuracy" in row:
            # a gain the sequential keep rule cannot yet tell from noise is re-run, not kept
            assert row["accuracy"] <= row["best_before"] or row.get("needs_rerun") or \
                row.get("gain", 0) <= row.get("keep_bound", float("inf")), row
    bests = [r["best_after"] for r in rows]
    assert bests == sorted(bests)  # the best only ever rises
    assert any(r["status"] == "keep" for r in rows[1:]) and any(r["status"] == "discard" for r in rows[1:])


def test_the_prompt_variant_scores_gemini_answers(tmp_path):
    from fake_gemini import FakeGemini, answer
    rows = [json.loads(line) for line in (EXAMPLE / "tickets.jsonl").read_text().splitlines()]
    dev = [r for r in rows if r["split"] == "dev"][:20]
    wrong = {"billing": "sales", "sales": "billing", "account": "technical", "technical": "account",
             "shipping": "returns", "returns": "shipping"}
    first = {"labels": [{"id": r["id"], "team": r["label"]} for r in dev[:10]]}
    second = {"labels": [{"id": r["id"], "team": r["label"] if i < 5 else wrong[r["label"]]}
                         for i, r in enumerate(dev[10:19])]}  # the 20th ticket left out: wrong
    with FakeGemini() as fake:
        fake.script(answer(first), answer(second))
        env = {**os.environ, "GEMINI_API_KEY": "fake-key-123456", "GOOGLE_GEMINI_BASE_URL": fake.url}
        done = subprocess.run([sys.executable, str(EXAMPLE / "score_prompt.py"), "--limit", "20", "--batch", "10"],
                              capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "accuracy: 0.7500"
    assert len(fake.requests) == 2 and "You route customer support tickets" in fake.requests[0].prompt_text()
    assert str(dev[0]["id"]) in fake.requests[0].prompt_text()
    assert subprocess.run([sys.executable, str(EXAMPLE / "check_prompt.py")]).returncode == 0


def test_the_prompt_variant_needs_a_key(monkeypatch):
    env = {k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY", "GOOGLE_API_KEY")}
    done = subprocess.run([sys.executable, str(EXAMPLE / "score_prompt.py")], capture_output=True, text=True, env=env)
    assert done.returncode == 2 and "GEMINI_API_KEY" in done.stderr
