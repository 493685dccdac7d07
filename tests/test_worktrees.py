"""Worker worktrees and the 3-way merge of a change onto a newer best."""
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
