"""Git for the loop (GitPython): branch autoresearch/TAG, a commit per proposal,
keep advances the branch, anything else resets it to the best commit.

runs/ is never committed: the loop makes sure git ignores it. Files git does not track
count as changes only inside the editable paths: anything else untracked (a .venv, an
editor's files) never stops the loop, and resets leave it alone.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

from engine.errors import UserError
from engine.loop.guards import is_editable

FALLBACK_IDENTITY = {"GIT_AUTHOR_NAME": "autoresearch", "GIT_AUTHOR_EMAIL": "autoresearch@localhost",
                     "GIT_COMMITTER_NAME": "autoresearch", "GIT_COMMITTER_EMAIL": "autoresearch@localhost"}


def branch_name(tag: str) -> str:
    return f"autoresearch/{tag}"


class Repo:
    def __init__(self, path: Path | str = ".", editable: list[str] | tuple[str, ...] = ("train.py",)):
        import git  # GitPython is imported only where the loop uses it

        try:
            self.git_repo = git.Repo(path, search_parent_directories=True)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            raise UserError(f"{Path(path).resolve()} is not inside a git repository: "
                            "the loop keeps and discards experiments with git; run `git init` and commit first") from None
        if self.git_repo.bare or not self.git_repo.head.is_valid():
            raise UserError("the repository has no commit yet: commit train.py and program.md first")
        self.root = Path(self.git_repo.working_tree_dir)
        self.git = self.git_repo.git
        self.editable = list(editable)  # the loop sets program.md's list; untracked files count only there
        # files the human edits while the loop runs (program.md): never a change of the agent's,
        # never reset, stashed or committed by the loop (engine/loop/program_edits.py)
        self.human_files: list[str] = []

    # --- state -----------------------------------------------------------------

    def head(self) -> str:
        return self.git_repo.head.commit.hexsha

    def current_branch(self) -> str | None:
        return None if self.git_repo.head.is_detached else self.git_repo.active_branch.name

    def changed_paths(self) -> list[str]:
        """Tracked files that differ from HEAD, and untracked (not ignored) files in editable paths."""
        out = self.git.status("--porcelain", "-z", "--untracked-files=no")
        paths, entries = [], out.split("\0")
        i = 0
        while i < len(entries):
            entry = entries[i]
            if len(entry) > 3:
                paths.append(entry[3:])
                if entry[0] in "RC":
                    i += 1  # renames carry the old path in the next entry
                    paths.append(entries[i])
            i += 1
        return sorted((set(paths) | set(self.untracked_editable())) - set(self.human_files))

    def untracked_editable(self) -> list[str]:
        """Files git neither tracks nor ignores that lie in the editable paths."""
        out = self.git.ls_files("--others", "--exclude-standard", "-z", "--", *self.editable)
        return sorted(path for path in out.split("\0") if path and is_editable(path, self.editable))

    def untracked_elsewhere(self) -> set[str]:
        """Files git neither tracks nor ignores outside the editable paths (a .venv, notes):
        the loop leaves those alone, but notices the ones an agent adds."""
        out = self.git.ls_files("--others", "--exclude-standard", "-z")
        return {path for path in out.split("\0") if path and not is_editable(path, self.editable)}

    def remove_untracked(self, paths: list[str]) -> None:
        for path in paths:
            self._remove(self.root / path)

    def tracked_files(self) -> list[str]:
        """Every path git tracks at HEAD and in the index, relative to the root."""
        return [path for path in self.git.ls_files("-z").split("\0") if path]

    def is_clean(self) -> bool:
        return not self.changed_paths()

    def message(self, sha: str) -> str:
        return self.git_repo.commit(sha).message

    def is_ancestor(self, older: str, newer: str) -> bool:
        """Whether commit older is newer or one of its ancestors."""
        return self.git_repo.is_ancestor(older, newer)

    def parent(self, sha: str) -> str | None:
        parents = self.git_repo.commit(sha).parents
        return parents[0].hexsha if parents else None

    def file_at(self, sha: str, path: str) -> str:
        return self.git.show(f"{sha}:{path}")

    def diff(self, old: str, new: str) -> str:
        return self.git.diff(old, new)

    def clear_stale_index_lock(self) -> bool:
        """A loop killed inside `git commit` leaves .git/index.lock; only call this holding the loop lock."""
        stale = Path(self.git_repo.git_dir) / "index.lock"
        if stale.exists():
            stale.unlink()
            return True
        return False

    # --- changes -----------------------------------------------------------------

    def ensure_ignored(self, relative: str) -> None:
        """Make git ignore relative (e.g. runs/) even if the repo's .gitignore does not."""
        if self.git_repo.ignored(relative):
            return
        exclude = Path(self.git_repo.git_dir) / "info" / "exclude"
        exclude.parent.mkdir(parents=True, exist_ok=True)
        text = exclude.read_text() if exclude.exists() else ""
        exclude.write_text(text + ("" if text.endswith("\n") or not text else "\n") + f"/{relative.strip('/')}/\n")

    def checkout_branch(self, tag: str) -> bool:
        """Switch to autoresearch/TAG, creating it from the current commit; True if it is new."""
        import git
        name = branch_name(tag)
        if self.current_branch() == name:
            return False
        exists = name in [head.name for head in self.git_repo.heads]
        if not exists and not self.is_clean():
            raise UserError(f"uncommitted changes in {', '.join(self.changed_paths()[:5])}: "
                            f"commit or stash them before starting branch {name}")
        if exists and not self.is_clean():
            raise UserError(f"uncommitted changes in {', '.join(self.changed_paths()[:5])}: "
                            f"commit or stash them before resuming branch {name}")
        try:
            self.git.checkout(*([name] if exists else ["-b", name]))
        except git.GitCommandError as error:  # the human's edit of program.md differs on that branch
            said = " ".join(str(error.stderr).replace("stderr:", "").strip(" '\n").split())
            raise UserError(f"could not switch to branch {name} (git: {said[:300]}): commit or set aside your "
                            "edits of program.md, then run again") from None
        return not exists

    def commit(self, paths: list[str], message: str) -> str:
        """Commit paths; a refusal by git (a signing key it cannot use, a hook) is a UserError
        naming git's reason, with the tree back at HEAD and nothing left staged."""
        import git

        env = None if self._has_identity() else FALLBACK_IDENTITY
        try:
            self.git.add("-A", "--", *paths)
            self._unstage_human_files()
            self.git.commit("--no-verify", "-q", "-m", message, env=env)
        except git.GitCommandError as error:
            self.restore()
            reason = " ".join(str(error.stderr or error).split()).removeprefix("stderr: ").strip("' ")
            raise UserError(f"git refused to commit the experiment in {self.root}: {reason[:500]}. The change "
                            f"was discarded and nothing is staged. Fix git's complaint (for a signing key: "
                            f"`git config commit.gpgsign false` in this repository, or make the key usable), "
                            f"then start again") from None
        return self.head()

    def _has_identity(self) -> bool:
        reader = self.git_repo.config_reader()
        return bool(reader.get_value("user", "email", "")) and bool(reader.get_value("user", "name", ""))

    def reset_to(self, sha: str) -> None:
        """Branch and tree to sha; untracked files in editable paths removed, all others kept, and
        the human's files (program.md) as they are on disk."""
        with self.keeping_human_files():
            self.git.reset("--hard", "-q", sha)
        for path in self.untracked_editable():
            self._remove(self.root / path)

    @contextlib.contextmanager
    def keeping_human_files(self):
        """Around a git command that rewrites the tree: the human's files keep their text on disk."""
        kept = {}
        for name in self.human_files:
            try:
                kept[name] = (self.root / name).read_bytes()
            except OSError:
                continue
        try:
            yield
        finally:
            for name, data in kept.items():
                path = self.root / name
                try:
                    if not path.exists() or path.read_bytes() != data:
                        path.write_bytes(data)
                except OSError:
                    pass

    def _unstage_human_files(self) -> None:
        tracked = [name for name in self.human_files if self.git.ls_files("--", name)]
        if tracked:
            self.git.reset("-q", "--", *tracked)

    def _remove(self, file: Path) -> None:
        """Delete an untracked file and the folders it leaves empty (never the root)."""
        file.unlink(missing_ok=True)
        folder = file.parent
        while folder != self.root and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
            folder = folder.parent

    def stash(self, message: str) -> bool:
        """Set the changes (changed_paths) aside in git's stash; other untracked files stay put."""
        changed = self.changed_paths()
        if changed:
            self.git.stash("push", "--include-untracked", "-q", "-m", message, "--", *changed)
        return bool(changed)

    def changed_in(self, sha: str) -> list[str]:
        """Paths the commit changed against its parent."""
        return self.git.diff("--name-only", f"{sha}~1", sha).splitlines()

    def put_back(self, sha: str) -> list[str]:
        """Write the files a commit changed, as they are in it, into the working tree
        (uncommitted): a crashed idea goes back to the agent that will fix it."""
        restored = []
        for path in self.changed_in(sha):
            try:
                text = self.file_at(sha, path)
            except Exception:  # GitPython's GitCommandError: deleted in that commit
                continue
            (self.root / path).write_text(text)
            restored.append(path)
        return restored

    def unstash(self) -> None:
        self.git.stash("pop", "-q")

    def restore(self) -> None:
        """Throw away every uncommitted change (a rejected or abandoned proposal)."""
        self.reset_to("HEAD")
