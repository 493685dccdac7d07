"""One `git worktree` per parallel worker, under runs/TAG/worktrees/ (ignored by the main tree).

Each experiment in flight is proposed, committed and trained in its worker's worktree, on a
detached HEAD at the best commit it started from; the main tree stays on branch
autoresearch/TAG at the best. All worktrees share the repository's objects, so a commit made
in one is known to all. `apply_onto` is the 3-way merge of a candidate's change onto a newer
best (a cherry-pick): the combination, or None when the change no longer applies.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from engine.loop.repo import Repo


class Worktrees:
    def __init__(self, repo: Repo, folder: Path):
        self.repo = repo
        self.folder = Path(folder)
        self.made: dict[Path, Repo] = {}  # worktrees this loop added

    def path(self, worker: int) -> Path:
        return self.folder / f"w{worker}"

    def open(self, worker: int, sha: str) -> Repo:
        """The worker's worktree at sha, clean: the one this loop made, moved there, or a new one
        (a leftover of a killed loop is replaced)."""
        path = self.path(worker)
        if path in self.made:
            move_to(self.made[path], sha)
            return self.made[path]
        if path.exists():
            self._remove(path)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.repo.git.worktree("add", "--detach", "--force", "-q", str(path), sha)
        self.made[path] = Repo(path)
        return self.made[path]

    def close_all(self) -> None:
        """Remove every worker worktree (the loop's end, or leftovers of a killed one)."""
        if self.folder.is_dir():
            for path in sorted(self.folder.iterdir()):
                self._remove(path)
        self.made.clear()
        self.repo.git.worktree("prune")

    def _remove(self, path: Path) -> None:
        try:
            self.repo.git.worktree("remove", "--force", "--force", str(path))
        except Exception:  # GitCommandError: not a registered worktree (a half-made one)
            shutil.rmtree(path, ignore_errors=True)
            self.repo.git.worktree("prune")


def move_to(tree: Repo, sha: str) -> None:
    """A worktree's HEAD (detached) and files to sha, untracked files removed."""
    tree.git.checkout("-q", "--detach", "--force", sha)
    tree.git.clean("-f", "-d", "-q")


def apply_onto(tree: Repo, change: str, onto: str, message: str) -> str | None:
    """Commit `change` (a commit) re-applied onto `onto` by a 3-way merge, in tree; None when it
    conflicts, or when nothing of it is left to apply (the best already has it)."""
    move_to(tree, onto)
    try:
        tree.git.cherry_pick("--no-commit", "--strategy=recursive", change)
    except Exception:  # GitCommandError: the change conflicts with the new best
        _abandon(tree, onto)
        return None
    paths = tree.changed_paths()
    if not paths:
        _abandon(tree, onto)
        return None
    return tree.commit(paths, message)


def _abandon(tree: Repo, onto: str) -> None:
    try:
        tree.git.cherry_pick("--abort")
    except Exception:  # nothing to abort (--no-commit leaves no sequencer state on success)
        pass
    tree.reset_to(onto)
