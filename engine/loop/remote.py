"""Git plumbing of a swarm: the shared remote, reached only through the loop's Repo (GitPython).

Two kinds of remote branch, per tag:
- the best, `autoresearch/TAG` (or one per device kind, see swarm.py): only ever advanced by a
  plain (fast-forward) push; a rejected push means another worker got there first;
- the ledger, `autoresearch/TAG-ledger`: files of each worker clone (engine/loop/swarm_files.py).
  A worker writes its whole files into a commit on top of the remote tip, built in a private
  index (so the working tree is never touched), and pushes; rejected, it fetches and rebuilds
  on the new tip. No two clones write the same file, so a retry never loses anyone's rows.

A worker's loop and its heartbeat thread share one Remote: `lock` keeps their fetches and
pushes in turn.

Remote state is fetched into refs/swarm/TAG/... of the local repository. An unreachable
remote raises `Unreachable`; the swarm carries on alone and syncs later.
"""
from __future__ import annotations

import os
import random
import tempfile
import threading
import time
from pathlib import Path

from engine.loop.repo import Repo

GIT_TIMEOUT_SECONDS = 60
PUSH_TRIES = 12
QUIET = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true", "GIT_SSH_COMMAND": "ssh -o BatchMode=yes"}
REJECTED = ("rejected", "non-fast-forward", "fetch first", "stale info", "failed to update ref",
            "cannot lock ref", "incorrect old value")


class Unreachable(Exception):
    """The remote could not be reached (network, a moved path, a stopped daemon), or a git
    command on its fetched copy failed (a file it does not hold)."""


class Rejected(Unreachable):
    """The remote refused a push because its branch moved on (not a network fault)."""


def ledger_branch(tag: str) -> str:
    return f"autoresearch/{tag}-ledger"


class Remote:
    def __init__(self, repo: Repo, url: str, tag: str):
        self.repo, self.url, self.tag = repo, url, tag
        self.local_prefix = f"refs/swarm/{tag}"
        self.lock = threading.RLock()

    # --- reading -----------------------------------------------------------------

    def _git(self, *args, env: dict | None = None) -> str:
        import git

        try:
            return self.repo.git.execute(["git", *args], env={**os.environ, **QUIET, **(env or {})},
                                         kill_after_timeout=GIT_TIMEOUT_SECONDS)
        except git.GitCommandError as error:
            raise _classify(error) from None

    def heads(self) -> dict[str, str]:
        """Branch name -> commit of every autoresearch/TAG* branch on the remote."""
        out = self._git("ls-remote", "--heads", self.url, f"refs/heads/autoresearch/{self.tag}*")
        found = {}
        for line in out.splitlines():
            sha, _, ref = line.partition("\t")
            found[ref.removeprefix("refs/heads/")] = sha
        return found

    def fetch(self) -> dict[str, str]:
        """Fetch this tag's remote branches into refs/swarm/TAG/; their names -> commits."""
        with self.lock:
            heads = self.heads()
            if heads:
                self._git("fetch", "--no-tags", "-q", self.url,
                          *[f"+refs/heads/{name}:{self.local_ref(name)}" for name in heads])
            return heads

    def known(self, branch: str) -> str | None:
        """The commit of branch as last fetched or pushed (None if never seen)."""
        try:
            return self._git("rev-parse", "-q", "--verify", f"{self.local_ref(branch)}^{{commit}}")
        except Unreachable:
            return None

    def local_ref(self, branch: str) -> str:
        return f"{self.local_prefix}/{branch}"

    def files(self, branch: str, folder: str) -> dict[str, str]:
        """Path -> text of the files under folder/ in the fetched copy of branch ({} if none)."""
        ref = self.local_ref(branch)
        try:
            names = self._git("ls-tree", "--full-tree", "--name-only", f"{ref}:{folder}").splitlines()
        except Unreachable:
            return {}
        return {f"{folder}/{name}": self._git("cat-file", "blob", f"{ref}:{folder}/{name}") for name in names}

    def file_or_none(self, branch: str, path: str) -> str | None:
        try:
            return self._git("cat-file", "blob", f"{self.local_ref(branch)}:{path}")
        except Unreachable:
            return None

    # --- writing -----------------------------------------------------------------

    def push_ref(self, sha: str, branch: str) -> bool:
        """Push sha to branch without forcing: True when it landed, False when the remote moved on."""
        try:
            with self.lock:
                self._git("push", "-q", self.url, f"{sha}:refs/heads/{branch}")
            return True
        except Rejected:
            return False

    def write_files(self, branch: str, files: dict[str, str], message: str, create_only: tuple = ()) -> str:
        """Replace these files on branch (other files kept), retrying on a rejected push; the new tip.
        Paths in create_only are written only where the branch does not hold them yet."""
        with self.lock:
            parent = self.known(branch)  # first try on the tip fetched last; fetch only when overtaken
            for attempt in range(PUSH_TRIES):
                if attempt:
                    parent = self.fetch().get(branch)
                kept = {path for path in create_only if parent and self._has(parent, path)}
                commit = self._commit_files(parent, {p: t for p, t in files.items() if p not in kept}, message)
                if self.push_ref(commit, branch):
                    self._git("update-ref", self.local_ref(branch), commit)
                    return commit
                time.sleep(random.uniform(0.05, 0.3) * (attempt + 1))  # another worker pushed first
            raise Unreachable(f"{PUSH_TRIES} pushes to {branch} were all overtaken by other workers")

    def _has(self, commit: str, path: str) -> bool:
        try:
            self._git("cat-file", "-e", f"{commit}:{path}")
            return True
        except Unreachable:
            return False

    def _commit_files(self, parent: str | None, files: dict[str, str], message: str) -> str:
        with tempfile.TemporaryDirectory() as scratch:
            env = {"GIT_INDEX_FILE": str(Path(scratch) / "index")}
            if parent:
                self._git("read-tree", parent, env=env)
            for path, text in files.items():
                blob_file = Path(scratch) / "blob"
                blob_file.write_text(text)
                blob = self._git("hash-object", "-w", str(blob_file))
                self._git("update-index", "--add", "--cacheinfo", f"100644,{blob},{path}", env=env)
            tree = self._git("write-tree", env=env)
        parents = ["-p", parent] if parent else []
        identity = {"GIT_AUTHOR_NAME": "autoresearch", "GIT_AUTHOR_EMAIL": "autoresearch@localhost",
                    "GIT_COMMITTER_NAME": "autoresearch", "GIT_COMMITTER_EMAIL": "autoresearch@localhost"}
        return self._git("commit-tree", tree, *parents, "-m", message, env=identity)


def _classify(error) -> Exception:
    text = f"{error.stderr or ''} {error.stdout or ''}".lower()
    if any(word in text for word in REJECTED):
        return Rejected(text.strip())
    return Unreachable(" ".join(text.split())[:300] or str(error))
