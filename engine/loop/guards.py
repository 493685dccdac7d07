"""Guards: a proposal touches only editable files and they parse; the fixed files never change.

Fixed files are prepare.py, engine/, modelkit/ and the data cache (manifest, tokenizer,
splits). They are hashed once at start; later checks compare each file's stat
(size, mtime, ctime, inode: ctime cannot be set back by a process) and rehash only
files whose stat moved, so a check costs milliseconds even for a large cache.
"""
from __future__ import annotations

import ast
import dataclasses
import fnmatch
import os
from pathlib import Path

from engine.errors import UserError
from engine.files import sha256_file

FIXED_IN_REPO = ("prepare.py", "engine", "modelkit")
SKIP_PARTS = {"__pycache__", ".pytest_cache"}
SKIP_SUFFIXES = (".pyc", ".pyo")


class FixedFilesChanged(UserError):
    """A fixed file changed while the loop ran: results would no longer be comparable."""


@dataclasses.dataclass
class Verdict:
    ok: bool
    changed: list[str]
    reason: str = ""


def check_proposal(changed: list[str], editable: list[str], root: Path) -> Verdict:
    """Only editable paths changed, and every changed Python file parses."""
    outside = [path for path in changed if not is_editable(path, editable)]
    if outside:
        return Verdict(False, changed, f"changed files it may not: {', '.join(outside)} "
                                       f"(editable: {', '.join(editable)})")
    for path in changed:
        file = root / path
        if path.endswith(".py") and file.exists():
            try:
                ast.parse(file.read_text(), filename=path)
            except SyntaxError as error:
                return Verdict(False, changed, f"{path} does not parse: line {error.lineno}: {error.msg}")
            except UnicodeDecodeError:
                return Verdict(False, changed, f"{path} is not UTF-8 text")
    if "train.py" in changed and not (root / "train.py").exists():
        return Verdict(False, changed, "train.py was deleted")
    return Verdict(True, changed)


def is_editable(path: str, editable: list[str]) -> bool:
    """Whether path matches one of program.md's editable paths or globs."""
    return any(path == pattern or fnmatch.fnmatchcase(path, pattern) for pattern in editable)


def _fixed_files(root: Path, data_dir: Path | None) -> list[Path]:
    files = []
    for name in FIXED_IN_REPO:
        base = root / name
        if base.is_file():
            files.append(base)
        elif base.is_dir():
            files.extend(_walk(base))
    if data_dir is not None and data_dir.is_dir():
        files.extend(_walk(data_dir))
    return sorted(files)


def _walk(base: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_PARTS)
        found.extend(Path(dirpath) / f for f in filenames if not f.endswith(SKIP_SUFFIXES))
    return found


def _stat_key(path: Path) -> tuple:
    st = path.stat()
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)




class FixedFiles:
    """The fingerprint of the fixed files, taken at start."""

    def __init__(self, root: Path, data_dir: Path | None):
        self.root, self.data_dir = Path(root), data_dir
        self.hashes: dict[Path, str] = {}
        self.stats: dict[Path, tuple] = {}
        for path in _fixed_files(self.root, data_dir):
            self.stats[path] = _stat_key(path)
            self.hashes[path] = sha256_file(path)

    def differences(self) -> list[str]:
        now = set(_fixed_files(self.root, self.data_dir))
        before = set(self.hashes)
        changes = [f"{self._show(p)} added" for p in sorted(now - before)]
        changes += [f"{self._show(p)} removed" for p in sorted(before - now)]
        for path in sorted(now & before):
            key = _stat_key(path)
            if key != self.stats[path]:
                if sha256_file(path) != self.hashes[path]:
                    changes.append(f"{self._show(path)} modified")
                else:
                    self.stats[path] = key
        return changes

    def check(self, when: str) -> None:
        changes = self.differences()
        if changes:
            raise FixedFilesChanged(
                f"fixed files changed {when}: {'; '.join(changes[:5])}"
                f"{' ...' if len(changes) > 5 else ''}. The loop stopped: results after this would not be "
                "comparable. Restore them (git checkout -- engine model prepare.py, or prepare the data again) "
                "and start the loop again")

    def _show(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)
