"""engine/loop/repo.py: untracked files outside the editable paths are never changes and never removed."""
import subprocess
from pathlib import Path

import pytest

from engine.errors import UserError
from engine.loop.repo import Repo


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo_dir(tmp_path):
    git(tmp_path, "init", "-q", "-b", "main")
    git(tmp_path, "config", "user.email", "t@t")
    git(tmp_path, "config", "user.name", "t")
    (tmp_path / "train.py").write_text("LR = 1\n")
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "util.py").write_text("X = 1\n")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-q", "-m", "start")
    venv = tmp_path / ".venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "Activate.ps1").write_text("# a venv that writes no .gitignore of its own\n")
    (tmp_path / "notes.txt").write_text("mine\n")
    return tmp_path


def test_untracked_files_outside_editable_paths_are_not_changes(repo_dir):
    repo = Repo(repo_dir)
    assert repo.changed_paths() == [] and repo.is_clean()
    assert repo.checkout_branch("demo")  # would have refused: "uncommitted changes in .venv/..."
    (repo_dir / "train.py").write_text("LR = 2\n")
    assert repo.changed_paths() == ["train.py"]


def test_new_files_in_editable_paths_count_and_are_removed_on_reset(repo_dir):
    repo = Repo(repo_dir, editable=["train.py", "lib/*.py"])
    (repo_dir / "lib" / "new.py").write_text("Y = 2\n")
    (repo_dir / "lib" / "deep").mkdir()
    (repo_dir / "lib" / "deep" / "more.py").write_text("Z = 3\n")
    (repo_dir / "train.py").write_text("LR = 2\n")
    assert repo.changed_paths() == ["lib/deep/more.py", "lib/new.py", "train.py"]
    repo.restore()
    assert repo.is_clean()
    assert not (repo_dir / "lib" / "new.py").exists() and not (repo_dir / "lib" / "deep").exists()
    assert (repo_dir / "train.py").read_text() == "LR = 1\n"
    assert (repo_dir / ".venv" / "bin" / "Activate.ps1").exists() and (repo_dir / "notes.txt").exists()


def test_reset_to_an_older_commit_keeps_other_untracked_files(repo_dir):
    repo = Repo(repo_dir)
    first = repo.head()
    (repo_dir / "train.py").write_text("LR = 3\n")
    repo.commit(["train.py"], "try LR 3")
    repo.reset_to(first)
    assert repo.head() == first and (repo_dir / "train.py").read_text() == "LR = 1\n"
    assert (repo_dir / ".venv" / "bin" / "Activate.ps1").read_text().startswith("# a venv")


def test_stash_sets_aside_only_the_changes(repo_dir):
    repo = Repo(repo_dir)
    (repo_dir / "train.py").write_text("LR = 4\n")
    assert repo.stash("set aside")
    assert repo.is_clean() and (repo_dir / ".venv" / "bin" / "Activate.ps1").exists()
    git(repo_dir, "stash", "pop", "-q")
    assert (repo_dir / "train.py").read_text() == "LR = 4\n"
    repo.restore()
    assert not repo.stash("nothing to set aside")
    assert (repo_dir / "notes.txt").exists()


def test_tracked_changes_outside_editable_paths_still_count(repo_dir):
    (repo_dir / "lib" / "util.py").write_text("X = 2\n")
    repo = Repo(repo_dir)
    assert repo.changed_paths() == ["lib/util.py"]
    with pytest.raises(UserError, match="uncommitted changes in lib/util.py"):
        repo.checkout_branch("demo")


def test_a_refused_commit_is_a_clear_error_with_nothing_staged(repo_dir):
    """commit.gpgsign with a key git cannot use: the error names git's reason, the tree is back."""
    git(repo_dir, "config", "commit.gpgsign", "true")
    git(repo_dir, "config", "user.signingkey", "0xDEADBEEF00000000")
    git(repo_dir, "config", "gpg.program", "false")
    repo = Repo(repo_dir)
    head = repo.head()
    (repo_dir / "train.py").write_text("LR = 2\n")
    (repo_dir / "new.py").write_text("Y = 1\n")
    with pytest.raises(UserError, match=r"git refused to commit.*(gpg|sign).*gpgsign false"):
        repo.commit(["train.py", "new.py"], "an idea")
    assert repo.head() == head
    assert git(repo_dir, "diff", "--cached", "--name-only") == ""
    assert (repo_dir / "train.py").read_text() == "LR = 1\n"
    assert (repo_dir / "notes.txt").read_text() == "mine\n"  # the user's untracked files stay
