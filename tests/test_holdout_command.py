"""The report of a command task: held-out figures from its holdout command, best and gains by direction."""
import json

from engine.report.facts import gather_facts
from engine.report.markdown import render_markdown
from loop_helpers import git

HOLDOUT = "import pathlib; print('acc:', float(pathlib.Path('value.txt').read_text()) / 2)\n"


def make(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    (root / "holdout.py").write_text(HOLDOUT)
    (root / "value.txt").write_text("0.8\n")
    (root / ".gitignore").write_text("runs/\n")
    git(root, "init", "-q", "-b", "main")
    for args in (("add", "-A"), ("commit", "-q", "-m", "start")):
        git(root, "-c", "user.email=t@e", "-c", "user.name=t", *args)
    first = git(root, "rev-parse", "HEAD")
    (root / "value.txt").write_text("1.2\n")
    git(root, "-c", "user.email=t@e", "-c", "user.name=t", "commit", "-qam", "higher")
    return root, first, git(root, "rev-parse", "HEAD")


def row(n, commit, acc, kept, best_after, role="candidate"):
    return {"experiment": n, "commit": commit, "role": role, "status": "keep" if kept else "discard", "kept": kept,
            "acc": acc, "metric": "acc", "direction": "maximize", "task": "command", "best_after": best_after,
            "holdout_command": "python holdout.py", "description": f"exp {n}"}


def test_holdout_figures_and_gains_follow_the_direction(tmp_path):
    root, first, second = make(tmp_path)
    run_dir = root / "runs" / "t"
    run_dir.mkdir(parents=True)
    rows = [row(0, first, 0.6, True, 0.6, role="baseline"), row(1, second, 0.5, False, 0.6),
            row(2, second, 0.9, True, 0.9)]
    facts = gather_facts(run_dir, rows, root)
    assert facts["task"] == "command" and facts["metric"] == "acc" and facts["direction"] == "maximize"
    assert facts["best"]["commit"] == second and facts["best"]["val_bpb"] == 0.9
    assert facts["baseline"]["test_bpb"] == 0.4 and facts["best"]["test_bpb"] == 0.6
    assert facts["gain"]["val_bpb"]["absolute"] == 0.3 and facts["gain"]["test_bpb"]["absolute"] == 0.2
    assert facts["kept"][0]["val_gain"] == 0.3 and "value.txt" in facts["kept"][0]["diff"]
    assert json.loads((run_dir / "holdout.json").read_text())  # cached for the next report
    text = render_markdown(facts)
    assert "| | experiment | acc | holdout acc |" in text and "higher is better" in text


def test_a_failing_holdout_is_reported_not_fatal(tmp_path):
    root, first, _ = make(tmp_path)
    run_dir = root / "runs" / "t"
    run_dir.mkdir(parents=True)
    rows = [dict(row(0, first, 0.6, True, 0.6, role="baseline"), holdout_command="python -c 'print(1)'")]
    facts = gather_facts(run_dir, rows, root)
    assert facts["baseline"]["test_bpb"] is None
    assert any("printed no `acc: value` line" in w for w in facts["warnings"])
