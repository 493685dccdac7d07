"""After every agent turn: what the agent left behind, found and undone before anything runs.

An agent (a coding agent with a shell) can do more than edit the editable files. Around each
turn the loop records the state it cares about and, afterwards:

- git: the tree must be on branch autoresearch/TAG (a parallel worker's worktree: detached)
  at the commit the turn started from, or on commits built on it. Those commits are undone
  into staged changes (`git reset --soft`), so the same guard judges them as an uncommitted
  change; a switched branch or a HEAD moved anywhere else is put back, and the proposal is
  refused with the reason.
- files: new files anywhere in the repository (git-ignored ones included: a planted
  `__pycache__/x.pyc` is ignored by git) and in the engine's cache folder
  ($AUTORESEARCH_CACHE: data, compilation cache) are removed; a new file git would see outside
  the editable paths also refuses the proposal (a module beside a script the engine runs
  would run as it). A changed existing `.pyc` is removed too.
- bytecode: the engine's private bytecode prefix (engine/loop/bytecode.py) must be untouched;
  if not, it is replaced and the proposal refused.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from engine import paths
from engine.loop.guards import is_editable
from engine.loop.repo import Repo

SKIP_TOP = {".git", "runs", ".autoresearch"}  # git's own, the loop's output, the engine's worktrees


@dataclasses.dataclass
class Before:
    head: str
    branch: str | None
    files: dict[str, tuple]


@dataclasses.dataclass
class After:
    refusals: list[str]  # reasons the proposal must not run
    planted: list[str]  # visible new files outside the editable paths (removed)
    notes: list[str]  # what was cleaned up without refusing


def before_turn(repo: Repo) -> Before:
    return Before(repo.head(), repo.current_branch(), scan(repo.root))


def after_turn(repo: Repo, before: Before, editable: list[str], bytecode=None,
               branch: str | None = None) -> After:
    """Undo what the turn must not leave (see the module's docstring); branch None: a worktree
    on a detached HEAD."""
    after = After([], [], [])
    reason = settle_git(repo, before.head, branch)
    if reason:
        after.refusals.append(reason)
    _clean_files(repo, before, editable, after)
    if bytecode is not None:
        changed = bytecode.check()
        if changed:
            after.refusals.append(f"changed the engine's bytecode cache ({'; '.join(changed[:3])}); "
                                  "it was replaced by a fresh one")
    return after


def settle_git(repo: Repo, base: str, branch: str | None) -> str | None:
    """Put HEAD back on branch (or detached) at base; commits built on base become staged
    changes. Returns why the proposal is refused, or None."""
    current = repo.current_branch()
    if current != branch:
        where = f"branch {current}" if current else "a detached HEAD"
        with repo.keeping_human_files():
            repo.git.checkout("-q", "-f", branch if branch else "--detach", *([] if branch else [base]))
        repo.reset_to(base)
        return f"left {branch or 'its detached HEAD'} for {where}; put back at {base[:7]}"
    head = repo.head()
    if head == base:
        return None
    if repo.is_ancestor(base, head):
        repo.git.reset("--soft", "-q", base)  # its commits, as changes the guard judges
        return None
    repo.reset_to(base)
    return f"moved {branch or 'HEAD'} to {head[:7]}, which is not built on {base[:7]}; put back at {base[:7]}"


def _clean_files(repo: Repo, before: Before, editable: list[str], after: After) -> None:
    now = scan(repo.root)
    added = sorted(set(now) - set(before.files))
    touched_pyc = sorted(p for p in set(now) & set(before.files)
                         if now[p] != before.files[p] and p.endswith((".pyc", ".pyo")))
    visible = repo.untracked_elsewhere()
    tracked = set(repo.tracked_files())
    for path in added:
        inside = not os.path.isabs(path)
        if inside and (is_editable(path, editable) or path in tracked):
            continue  # the proposal itself (an untracked editable file, or one its commit added)
        _remove(Path(path) if not inside else repo.root / path)
        if inside and path in visible:
            after.planted.append(path)
        else:
            after.notes.append(path)
    for path in touched_pyc:
        _remove(Path(path) if os.path.isabs(path) else repo.root / path)
        after.notes.append(path)


def scan(root: Path) -> dict[str, tuple]:
    """{path: (size, mtime_ns, ctime_ns, inode)} of the repository's files (relative paths) but
    .git, runs/ and the engine's worktrees, and of the engine's cache folder (absolute paths)."""
    files = _walk(Path(root), Path(root), SKIP_TOP)
    cache = paths.cache_root()
    if cache.is_dir() and not _inside(cache, Path(root)):
        files.update(_walk(cache, None, set()))
    return files


def _walk(base: Path, relative_to: Path | None, skip_top: set[str]) -> dict[str, tuple]:
    found = {}
    for dirpath, dirnames, filenames in os.walk(base):
        if Path(dirpath) == base:
            dirnames[:] = [d for d in dirnames if d not in skip_top]
        for name in filenames:
            path = Path(dirpath) / name
            try:
                st = path.lstat()
            except OSError:
                continue
            key = str(path.relative_to(relative_to)) if relative_to is not None else str(path)
            found[key] = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    return found


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        pass
