"""Guards: a proposal touches only editable files and they parse; the fixed files never change.

Fixed files are prepare.py, engine/, model/ and the data cache (manifest, tokenizer,
splits). They are hashed once at start; later checks compare each file's stat
(size, mtime, ctime, inode: ctime cannot be set back by a process) and rehash only
files whose stat moved, so a check costs milliseconds even for a large cache.
"""
from __future__ import annotations

import ast
import dataclasses
import fnmatch
import json
import os
import tomllib
from pathlib import Path

from engine.errors import UserError
from engine.files import sha256_file

FIXED_IN_REPO = ("prepare.py", "engine", "model")
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
        if file.is_file():
            try:
                problem = parse_problem(path, file.read_text())
            except UnicodeDecodeError:
                problem = "is not UTF-8 text"
            if problem:
                return Verdict(False, changed, f"{path} {problem}")
    if "train.py" in changed and not (root / "train.py").exists():
        return Verdict(False, changed, "train.py was deleted")
    return Verdict(True, changed)


def parse_problem(path: str, text: str) -> str | None:
    """Why a Python, JSON, TOML or YAML file's text does not parse (None when it does, or when
    the format has no parser here)."""
    suffix = Path(path).suffix.lower()
    try:
        if suffix == ".py":
            ast.parse(text, filename=path)
        elif suffix == ".json":
            json.loads(text)
        elif suffix == ".toml":
            tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml  # PyYAML, imported only for a YAML file
            yaml.safe_load(text)
    except SyntaxError as error:
        return f"does not parse: line {error.lineno}: {error.msg}"
    except (ValueError, tomllib.TOMLDecodeError) as error:  # JSONDecodeError is a ValueError
        return f"does not parse: {str(error).splitlines()[0]}"
    except Exception as error:  # yaml.YAMLError, without importing yaml for every check
        if type(error).__module__.startswith("yaml"):
            return f"does not parse: {' '.join(str(error).split())[:200]}"
        raise
    return None


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
    """The fingerprint of the fixed files, taken at start. `files` replaces the train task's set
    (FIXED_IN_REPO and the data cache) with a given list (a command task's)."""

    def __init__(self, root: Path, data_dir: Path | None, files: list[Path] | None = None):
        self.root, self.data_dir = Path(root), data_dir
        self.files = None if files is None else sorted(Path(f) for f in files if Path(f).is_file())
        self.hashes: dict[Path, str] = {}
        self.stats: dict[Path, tuple] = {}
        for path in self._list():
            self.stats[path] = _stat_key(path)
            self.hashes[path] = sha256_file(path)

    def _list(self) -> list[Path]:
        if self.files is not None:  # a given set: a file can go missing, none can join
            return [path for path in self.files if path.exists()]
        return _fixed_files(self.root, self.data_dir)

    def differences(self) -> list[str]:
        now = set(self._list())
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
                f"comparable. {self._how_to_restore(changes)}, and start the loop again")

    def _how_to_restore(self, changes: list[str]) -> str:
        """The commands that put these fixed files back: git for the repository's, prepare for the cache's."""
        names = [change.rsplit(" ", 1)[0] for change in changes]
        in_repo = [n for n in names if not Path(n).is_absolute()]
        in_cache = [n for n in names if Path(n).is_absolute()]
        steps = []
        if in_repo:
            steps.append(f"restore them with `git checkout -- {' '.join(in_repo[:5])}`")
        if in_cache:
            steps.append("prepare the data again (`autoresearch prepare` with the same settings)")
        return "; ".join(steps).capitalize() if steps else "Restore them"

    def _show(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)
