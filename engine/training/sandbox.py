"""Audit hooks (PEP 578) around train.py in the tracer process, the one place its Python runs.

Installed by the tracer (engine/training/tracer.py) before train.py is imported, for the
rest of the process:

- no opening, listing, linking, moving or deleting anything in the prepared cache (train
  and held-out splits alike: train.py sees data only as the batches its exported
  train_step gets in the trainer), the compilation cache, or other runs' files (a runs/
  directory outside this run's own);
- no writing outside its output folder (temporary files go there too): a file left in the
  repository, a cache or site-packages could run in the scorer or in every later run;
- no importing or reading the engine's data package (engine/data: sources, splits, prepare);
- no subprocesses, no network sockets (AF_UNIX socket pairs stay: asyncio needs them), no
  ctypes libraries, no tracing or profiling hooks, no walking the garbage collector;
- no replacing the code of the engine's functions in place (`object.__setattr__` on them;
  Python audits only some attributes, so rebinding names and class attributes is left to
  the engine snapshot, engine/training/integrity.py).

A refused event raises `Refused` where train.py made it, and is remembered: if train.py
catches it and goes on, the trainer still ends the run as a crash with that reason.

These hooks see what Python's own code does. A C extension that opens files itself, or a
program that escapes Python, is out of their sight; OS-level sandboxing (containers,
seccomp) is out of scope here (docs/guards.md).
"""
from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
from pathlib import Path

from engine import paths
from engine.errors import UserError


def install_for_tracer(out: Path, data_dir: Path, cache_root: Path, compiled: Path) -> "Sandbox":
    """The tracer's hooks (engine/training/tracer.py): the run's data, the data cache and the
    trainer's compilation cache unreadable, writes only in `out` (temporary files too), and
    relative paths resolved there."""
    private_temp(out)
    hooks = install(out, data_dir, cache_root, readable=[],
                    also_denied=[(compiled, "the trainer's compilation cache is not train.py's to read"),
                                 (paths.split_key_beside(data_dir), "the split key is not train.py's to read"),
                                 (DATA_PACKAGE, "the engine's data preparation is not train.py's to run")],
                    denied_modules=("engine.data",))
    os.chdir(out)
    return hooks


# The engine's data package (sources, splits, prepare): the tracer neither imports nor reads it.
DATA_PACKAGE = Path(__file__).resolve().parents[1] / "data"


class Refused(PermissionError):
    """train.py did something the training process may not do."""


@dataclasses.dataclass
class Sandbox:
    violations: list[str]

    def check(self) -> None:
        """Raise the first refusal, even one that train.py caught and swallowed."""
        if self.violations:
            raise Refused(self.violations[0])


_PATH_EVENTS = {  # event -> indices of its path arguments
    "open": (0,), "os.listdir": (0,), "os.scandir": (0,), "os.remove": (0,), "os.rmdir": (0,),
    "os.truncate": (0,), "os.link": (0, 1), "os.symlink": (0, 1), "os.rename": (0, 1),
    "shutil.copyfile": (0, 1), "shutil.copytree": (0, 1), "shutil.rmtree": (0,), "shutil.move": (0, 1),
    "glob.glob": (0,), "os.mkdir": (0,), "os.chmod": (0,),
}
_PROCESS_EVENTS = ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
                   "os.forkpty", "os.startfile", "os.kill", "os.killpg")
_NETWORK_EVENTS = ("socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo",
                   "socket.gethostbyname", "urllib.Request", "http.client.connect")
# Events that change the file system, -> indices of the paths they write (the destination of a
# copy, link or move; every path of a removal).
_WRITE_EVENTS = {
    "os.remove": (0,), "os.rmdir": (0,), "os.truncate": (0,), "os.link": (1,), "os.symlink": (1,),
    "os.rename": (0, 1), "os.mkdir": (0,), "os.chmod": (0,), "shutil.copyfile": (1,), "shutil.copytree": (1,),
    "shutil.rmtree": (0,), "shutil.move": (0, 1),
}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_CODE_ATTRIBUTES = ("__code__", "__defaults__", "__kwdefaults__", "__globals__", "__closure__")
_INTROSPECTION_EVENTS = ("ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata", "gc.get_objects", "gc.get_referrers",
                         "gc.get_referents", "sys._current_frames", "sys.settrace", "sys.setprofile")


def install(run_dir: Path, data_dir: Path, cache_root: Path, readable: list[Path],
            what: str = "train.py", writable: list[Path] = (), also_denied: list[tuple[Path, str]] = (),
            denied_modules: tuple[str, ...] = ()) -> Sandbox:
    """Add the hook; from now on this process is under it. `readable` paths inside the cache
    stay open to it; it writes only in its own folder `run_dir` (temporary files included:
    see `private_temp`) and the `writable` paths. `also_denied`: more (path, why) to refuse;
    `denied_modules`: packages it may not import (a first import of them is refused)."""
    realpath = os.path.realpath
    own = realpath(run_dir)
    other_runs = runs_root(Path(own))
    denied = [(realpath(data_dir), "the data (held-out splits above all) is not readable by train.py"),
              (realpath(cache_root), "the data cache is not readable by train.py")]
    denied += [(realpath(path), why) for path, why in also_denied]
    if other_runs is not None:
        denied.append((realpath(other_runs), "other runs' files are not readable by train.py"))
    violations: list[str] = []
    writable = (own, "/dev", *[realpath(path) for path in writable])
    sys.addaudithook(_hook(_path_rule(tuple([own] + [realpath(p) for p in readable]), tuple(denied), what),
                           _write_rule(writable, what),
                           violations, what, tuple(denied_modules)))
    return Sandbox(violations)


def _resolver():
    """raw path argument of an audit event -> its real absolute path, or None for an open file
    descriptor (its path was checked when it was opened) or a value that is no path. What it
    uses is bound here, out of reach of train.py's assignments to os."""
    realpath, sep, join, fspath, getcwd = os.path.realpath, os.sep, os.path.join, os.fspath, os.getcwd

    def resolve(raw) -> str | None:
        if isinstance(raw, int) or raw is None:
            return None
        try:
            text = fspath(raw)
            text = text.decode() if isinstance(text, bytes) else text
            return realpath(text if text.startswith(sep) else join(getcwd(), text))
        except (TypeError, ValueError, OSError):
            return None
    return resolve


def _path_rule(allowed: tuple, denied: tuple, what: str):
    """path -> the refusal message, or None. Everything it uses is bound here, out of reach of
    train.py's assignments to this module."""
    resolve, sep = _resolver(), os.sep

    def under(path: str, root: str) -> bool:
        return path == root or path.startswith(root + sep)

    def rule(raw) -> str | None:
        path = resolve(raw)
        if path is None or any(under(path, root) for root in allowed):
            return None
        for root, why in denied:
            if under(path, root):
                return f"{what} opened {path}: {why}"
        return None
    return rule


def _write_rule(writable: tuple, what: str):
    """path -> the refusal message for writing there, or None: the training process writes only
    its own run directory, temporary files and the compilation cache. Anywhere else (the
    repository, site-packages) a file it left could run in the scorer, or in every later run."""
    resolve, sep = _resolver(), os.sep

    def rule(raw) -> str | None:
        path = resolve(raw)
        if path is None or any(path == root or path.startswith(root + sep) for root in writable):
            return None
        return (f"{what} wrote {path}: train.py's process may write only in its own output folder "
                "and temporary files")
    return rule


def _writes(args: tuple, write_flags: int) -> bool:
    """Whether an "open" event opens for writing: a mode with w, a, x or +, or write flags."""
    mode = args[1] if len(args) > 1 else None
    flags = args[2] if len(args) > 2 else 0
    return (isinstance(mode, str) and any(c in mode for c in "wax+")) or \
        (isinstance(flags, int) and bool(flags & write_flags))


def _hook(path_rule, write_rule, violations: list, what: str, denied_modules: tuple = ()):
    write_events, write_flags, writes = dict(_WRITE_EVENTS), _WRITE_FLAGS, _writes
    path_events, process_events = dict(_PATH_EVENTS), frozenset(_PROCESS_EVENTS)
    network_events, introspection_events = frozenset(_NETWORK_EVENTS), frozenset(_INTROSPECTION_EVENTS)
    code_attributes, engine_function, name_of = frozenset(_CODE_ATTRIBUTES), _is_engine_function, _name_of
    af_unix = getattr(__import__("socket"), "AF_UNIX", 1)

    def refuse(message: str):
        violations.append(message)
        raise Refused(message)

    def hook(event: str, args: tuple) -> None:
        written = write_events.get(event, (0,) if event == "open" and writes(args, write_flags) else ())
        for index in written:
            message = write_rule(args[index]) if index < len(args) else None
            if message:
                refuse(message)
        if event in path_events:
            for index in path_events[event]:
                message = path_rule(args[index]) if index < len(args) else None
                if message:
                    refuse(message)
        elif event in process_events:
            refuse(f"{what} started a process ({event}): train.py's process may not start "
                   "processes or signal others")
        elif event == "socket.__new__":
            if len(args) > 1 and args[1] not in (af_unix, -1):
                refuse(f"{what} opened a network socket: train.py's process has no network")
        elif event == "import" and args and isinstance(args[0], str) and denied_modules \
                and any(args[0] == m or args[0].startswith(m + ".") for m in denied_modules):
            refuse(f"{what} imported {args[0]}: the engine's data preparation is not {what}'s to run")
        elif event in network_events:
            refuse(f"{what} used the network ({event}): train.py's process has no network")
        elif event in introspection_events:
            refuse(f"{what} called {event}: train.py's process may not load C libraries, "
                   "trace, or search memory for the engine's objects")
        elif event == "object.__setattr__" and len(args) > 1 and args[1] in code_attributes \
                and engine_function(args[0]):
            refuse(f"{what} changed {name_of(args[0])}.{args[1]}: the engine's code is not "
                   f"{what}'s to change")
    return hook


def runs_root(run_dir: Path) -> Path | None:
    """The nearest directory named runs/ that holds this run (a loop's runs/TAG/exp-N)."""
    for parent in run_dir.parents:
        if parent.name == "runs":
            return parent
    return None


def _is_engine_function(obj) -> bool:
    """An engine function (classes are left out: Python sets their __doc__ and __module__ as it
    creates them, when an engine module is imported after the hook)."""
    module = getattr(obj, "__module__", None)
    return (isinstance(module, str) and (module == "engine" or module.startswith("engine."))
            and callable(obj) and not isinstance(obj, type))


def _name_of(obj) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"


def private_temp(run_dir: Path) -> Path:
    """Temporary files of this process go inside its run directory, the one place it may write."""
    temp = Path(run_dir) / "tmp"
    temp.mkdir(parents=True, exist_ok=True)
    os.environ["TMPDIR"] = str(temp)
    tempfile.tempdir = str(temp)
    return temp


def check_paths(run_dir: Path, data_dir: Path) -> None:
    """The run must not live inside the data cache (its files would be unreadable to it)."""
    if Path(os.path.realpath(run_dir)).is_relative_to(os.path.realpath(data_dir)):
        raise UserError(f"the run directory {run_dir} is inside the data cache {data_dir}: "
                        "pass --run-dir outside it")
