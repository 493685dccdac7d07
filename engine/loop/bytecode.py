"""The engine's bytecode: one private pycache prefix per loop session, frozen once warm.

Python loads a module's compiled copy from `__pycache__/` beside its source whenever the
copy's stamp (the source's mtime and size) matches, and git ignores those folders: a compiled
copy of a fixed engine module planted there would run in the scorer. So engine processes
read and write bytecode only under a prefix (`python -X pycache_prefix=DIR`, see
engine/processes.py's engine_command), a folder this module makes per loop session with
mode 0700 outside the repository.

A fresh prefix per process would be airtight, but every start would compile jax from source:
measured on this project's CPU machine, `import jax, flax.nnx, optax, orbax.checkpoint` took
5.3 s with an empty prefix against 1.9 s with a warm one (1.8 s with the usual cache), and
an experiment starts two or three engine processes. So the session warms one prefix once
(the engine's imports, in a child), after which engine processes only read it (`-B`,
PYTHONDONTWRITEBYTECODE: a module not warmed is compiled in memory), makes it read-only
(which does not stop root, hence the check) and records the stat of every
folder and file in it (size, mtime, ctime, inode; ctime cannot be set back, and writing into
a read-only entry first needs a chmod, which moves it). `changes()` lists what differs; the
loop calls it after every agent turn and before a result counts, and `check()` lists the
changes and replaces a prefix that changed with a fresh one.
"""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from engine import processes

# What an experiment's engine processes import (trainer, scorer): compiled once, before freezing.
# Beside the engine's modules, the libraries they import only when they need them: the tracer's
# flax.nnx and optax (before train.py), the checkpoint's orbax, the confinement's landlock. One
# left out is compiled from source in every process that imports it (flax.nnx and optax cost the
# tracer 1.5 s; orbax the checkpoint 0.4 s, measured on a 2-core CPU).
WARM_MODULES = ("engine.cli", "engine.training.launcher", "engine.training.trainer", "engine.scoring.scorer",
                "engine.scoring.evaluate", "engine.training.tracer", "engine.training.export",
                "flax.nnx", "optax", "orbax.checkpoint", "landlock")
WARM_TIMEOUT_S = 600
NAME = "autoresearch-pyc-"  # then the loop's pid: a prefix whose loop died (kill -9) is removed later


def remove_stale() -> None:
    """Delete the prefixes of loops that are gone (killed before they could clean up). Loops
    starting at once on one machine race here: a prefix another one deleted first is skipped."""
    for path in Path(tempfile.gettempdir()).glob(f"{NAME}*"):
        pid = path.name[len(NAME):].split("-", 1)[0]
        if not pid.isdigit() or processes.process_alive(int(pid)):
            continue
        try:
            ours = path.stat().st_uid == os.getuid()
        except FileNotFoundError:
            continue
        if ours:
            _delete(path)


class BytecodeCache:
    def __init__(self, warm: bool = True):
        self.warm_modules = WARM_MODULES if warm else ()
        self.lock = threading.Lock()
        self.path = self._make()
        self.state = entries_state(self.path)
        processes.set_bytecode_prefix(self.path)

    def _make(self) -> Path:
        remove_stale()
        path = Path(tempfile.mkdtemp(prefix=f"{NAME}{os.getpid()}-"))  # mode 0700, this user's only
        if self.warm_modules:
            _warm(path, self.warm_modules)
        _freeze(path)
        return path

    def changes(self) -> list[str]:
        """What was added, removed or touched in the prefix since it was frozen (none: [])."""
        now = entries_state(self.path)
        added = sorted(set(now) - set(self.state))
        removed = sorted(set(self.state) - set(now))
        touched = sorted(p for p in set(now) & set(self.state) if now[p] != self.state[p])
        return ([f"{p} added" for p in added] + [f"{p} removed" for p in removed]
                + [f"{p} modified" for p in touched])

    def renew(self) -> None:
        """Replace the prefix by a fresh, warmed, frozen one (the old one is deleted)."""
        old = self.path
        self.path = self._make()
        self.state = entries_state(self.path)
        processes.set_bytecode_prefix(self.path)
        _delete(old)

    def check(self) -> list[str]:
        """changes(), and a fresh prefix in place of one that changed; safe from several threads
        (parallel workers check after each run, the coordinator after each agent turn)."""
        with self.lock:
            changed = self.changes()
            if changed:
                self.renew()
            return changed

    def close(self) -> None:
        processes.set_bytecode_prefix(None)
        _delete(self.path)


def entries_state(root: Path) -> dict[str, tuple]:
    """{relative path ('.' for the root): (mode, size, mtime_ns, ctime_ns, inode)} of every entry."""
    state = {}
    if not root.exists():
        return state
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [".", *dirnames, *filenames]:
            path = Path(dirpath) / name if name != "." else Path(dirpath)
            st = path.lstat()
            state[str(path.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    return state


def _warm(path: Path, modules: tuple[str, ...]) -> None:
    """Import the engine's modules once with this prefix, so later processes read them compiled.
    A module this engine does not have (yet) is skipped."""
    code = ("import importlib.util, sys\n"
            f"for name in {list(modules)!r}:\n"
            "    try:\n"
            "        if importlib.util.find_spec(name) is not None: importlib.import_module(name)\n"
            "    except Exception as error: print(f'warm-up: {name}: {error}', file=sys.stderr)\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-P", "-X", f"pycache_prefix={path}", "-c", code], env=env,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=WARM_TIMEOUT_S, check=False)


def _freeze(root: Path) -> None:
    """Read-only for everyone: an engine process then compiles in memory what is missing."""
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            os.chmod(Path(dirpath) / name, stat.S_IRUSR)
        for name in dirnames:
            os.chmod(Path(dirpath) / name, stat.S_IRUSR | stat.S_IXUSR)
    os.chmod(root, stat.S_IRUSR | stat.S_IXUSR)


def _delete(root: Path) -> None:
    if not root.exists():
        return
    for dirpath, dirnames, _ in os.walk(root):
        try:
            os.chmod(dirpath, stat.S_IRWXU)
        except FileNotFoundError:  # deleted meanwhile by another loop (remove_stale)
            pass
    shutil.rmtree(root, ignore_errors=True)
