"""Engine-owned snapshots: one `git worktree` per worker, under .autoresearch/TAG/ (ignored).

Every experiment, serial or parallel, runs from a worktree at the exact candidate commit,
never from the tree the agent edits: the serial loop is a pool of one worker (w0). A parallel
worker's agent also proposes in its worktree, on a detached HEAD at the best commit it
started from; the main tree stays on branch autoresearch/TAG at the best. The snapshots live
outside runs/, where a training run may read (the trainer's sandbox refuses other runs' files).

`snapshot_state` and `verify_snapshot` check that what ran is the commit: the worktree's HEAD
and tree hash are the commit's, and no file in it was added, removed or touched since it was
checked out (the ctime in each file's stat cannot be set back, so an edit that was undone
before the run ended is still seen). All worktrees share the repository's objects, so a commit made
in one is known to all. `apply_onto` is the 3-way merge of a candidate's change onto a newer
best (a cherry-pick): the combination, or None when the change no longer applies.
"""
from __future__ import annotations

import os
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
    """A worktree's HEAD (detached) and files to sha, untracked files removed (ignored ones too:
    a stale `__pycache__/` or a planted module is not part of the commit)."""
    tree.git.checkout("-q", "--detach", "--force", sha)
    tree.git.clean("-f", "-d", "-x", "-q")


def snapshot_state(root: Path) -> dict[str, tuple]:
    """{relative path: (size, mtime_ns, ctime_ns, inode)} of every file in a worktree but .git."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        for name in filenames:
            path = Path(dirpath) / name
            if path == root / ".git":
                continue
            st = path.lstat()
            state[str(path.relative_to(root))] = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    return state


def verify_snapshot(tree: Repo, sha: str, before: dict[str, tuple]) -> str | None:
    """None when the worktree still is commit sha exactly as checked out (state `before`);
    else what differs, in words."""
    head = tree.head()
    if head != sha:
        return f"its HEAD moved to {head[:7]}"
    if tree.git.rev_parse("HEAD^{tree}") != tree.git.rev_parse(f"{sha}^{{tree}}"):
        return "its tree is not the commit's"
    now = snapshot_state(tree.root)
    added = sorted(set(now) - set(before))
    removed = sorted(set(before) - set(now))
    touched = sorted(path for path in set(now) & set(before) if now[path] != before[path])
    parts = [f"{what}: {', '.join(paths[:5])}" for what, paths in
             (("files added", added), ("files removed", removed), ("files changed", touched)) if paths]
    return "; ".join(parts) or None


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
