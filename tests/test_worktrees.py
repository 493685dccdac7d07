"""Worker worktrees and the 3-way merge of a change onto a newer best."""
import sys
from pathlib import Path

from engine.loop.repo import Repo
from engine.loop.worktrees import Worktrees, apply_onto
from loop_helpers import git, make_repo

TRAIN = "A = 1\n\n#\n#\nB = 1\n"


def _commit(tree: Repo, text: str, message: str) -> str:
    (tree.root / "train.py").write_text(text)
    return tree.commit(["train.py"], message)


def test_worktrees_share_commits_and_are_removed(tmp_path):
    root = make_repo(tmp_path, train_py=TRAIN)
    repo = Repo(root)
    trees = Worktrees(repo, root / "runs" / "t" / "worktrees")
    base = repo.head()
    w0 = trees.open(0, base)
    change = _commit(w0, TRAIN.replace("A = 1", "A = 2"), "a")
    assert repo.git_repo.commit(change).parents[0].hexsha == base  # the main repo sees it
    assert repo.current_branch() == "main" and repo.head() == base  # main tree untouched
    trees.open(0, base)  # reopening replaces the old one
    trees.close_all()
    assert not (root / "runs" / "t" / "worktrees" / "w0").exists()
    assert git(root, "worktree", "list").count("\n") == 0


def test_apply_onto_merges_disjoint_changes_and_refuses_conflicts(tmp_path):
    root = make_repo(tmp_path, train_py=TRAIN)
    repo = Repo(root)
    trees = Worktrees(repo, root / "runs" / "t" / "worktrees")
    base = repo.head()
    w0, w1 = trees.open(0, base), trees.open(1, base)
    best = _commit(w0, TRAIN.replace("A = 1", "A = 2"), "a to 2")
    other = _commit(w1, TRAIN.replace("B = 1", "B = 3"), "b to 3")
    clash = _commit(trees.open(1, base), TRAIN.replace("A = 1", "A = 9"), "a to 9")
    merged = apply_onto(w1, other, best, "b onto a")
    assert merged and repo.file_at(merged, "train.py").strip() == "A = 2\n\n#\n#\nB = 3"
    assert repo.parent(merged) == best
    assert apply_onto(w1, clash, best, "conflict") is None
    assert w1.changed_paths() == [] and w1.head() == best  # left clean at the best
    assert apply_onto(w1, best, merged, "already there") is None  # nothing left to apply
    trees.close_all()


# ---------------------------------------------------------------- what ran is the commit

from engine.loop.worktrees import snapshot_state, verify_snapshot  # noqa: E402


def test_a_snapshot_that_changed_in_any_way_is_not_the_commit(tmp_path):
    """Edited and put back (ctime moves), a file added (ignored ones too), HEAD moved: each is
    seen; an untouched snapshot passes."""
    root = make_repo(tmp_path, train_py=TRAIN)
    repo = Repo(root)
    trees = Worktrees(repo, root / ".autoresearch" / "t")
    sha = repo.head()
    tree = trees.open(0, sha)
    before = snapshot_state(tree.root)
    assert verify_snapshot(tree, sha, before) is None
    train = tree.root / "train.py"
    text = train.read_text()
    train.write_text("A = 99\n")
    train.write_text(text)  # put back: same bytes, but the edit happened
    assert "files changed: train.py" in verify_snapshot(tree, sha, before)
    tree = trees.open(0, sha)  # reopened: clean again (ignored files removed too)
    before = snapshot_state(tree.root)
    (tree.root / "__pycache__").mkdir()
    (tree.root / "__pycache__" / "train.cpython-311.pyc").write_bytes(b"planted")
    assert "files added: __pycache__/train.cpython-311.pyc" in verify_snapshot(tree, sha, before)
    tree = trees.open(0, sha)
    assert not (tree.root / "__pycache__").exists()
    before = snapshot_state(tree.root)
    other = _commit(tree, TRAIN.replace("A = 1", "A = 3"), "moved")
    assert verify_snapshot(tree, sha, before).startswith(f"its HEAD moved to {other[:7]}")
    trees.close_all()


def test_the_serial_loop_runs_the_commit_from_its_own_worktree(loop_env, tmp_path, monkeypatch):
    """The run's working directory is the engine's worktree, not the repository; a run whose
    worktree changed under it is a crash that says so, never a keep."""
    from engine import cli
    from loop_helpers import FAKE_TRAIN, ledger_rows

    seen = tmp_path / "cwds.txt"
    fake = tmp_path / "fake_train_tamper.py"
    fake.write_text(FAKE_TRAIN.replace('started_at = time.time()', (
        f'open({str(seen)!r}, "a").write(os.getcwd() + "\\n")\n'
        'if consts.get("TAMPER"): open(a.path, "a").write("# touched during the run\\n")\n'
        'started_at = time.time()')))
    monkeypatch.setenv("AUTORESEARCH_TRAIN_COMMAND", f"{sys.executable} {fake}")
    train = loop_env / "train.py"
    train.write_text(train.read_text() + "TAMPER = 0\n")
    git(loop_env, "commit", "-qam", "tamper knob")
    train.write_text(train.read_text().replace("TAMPER = 0", "TAMPER = 1").replace("LEARNING_RATE = 0.04",
                                                                                    "LEARNING_RATE = 0.01"))
    assert cli.main(["experiment", "tamper with the snapshot", "--tag", "s"]) == 1
    rows = ledger_rows(loop_env, "s")
    assert [r["status"] for r in rows] == ["baseline", "baseline", "crash"]
    assert "what ran is not commit" in rows[2]["error"] and "files changed: train.py" in rows[2]["error"]
    cwds = seen.read_text().split()
    assert len(cwds) == 3 and all(Path(c) == loop_env / ".autoresearch" / "s" / "w0" for c in cwds)
    assert git(loop_env, "rev-parse", "HEAD") == rows[1]["commit"]
