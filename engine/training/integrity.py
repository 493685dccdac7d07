"""The engine's code stays the engine's: a snapshot taken before train.py is imported.

train.py runs in the training process, so it could replace the engine's functions (the
clock's, the loader's, the exporter's) by assigning to their modules. The trainer takes
a snapshot of every loaded engine module, of `time` and `os` (the clock reads them),
and of the classes the engine defines, and compares it after each stretch of train.py's
code: import and experiment(ctx), tracing and compiling, training, export. Replacing a
function's code in place is refused at once by the audit hook (engine/training/sandbox.py);
this catches the rebinding of names and class attributes, which no audit event reports.
"""
from __future__ import annotations

import sys
import types

WATCHED = ("time", "os", "os.path")


class Tampered(Exception):
    """train.py replaced part of the engine."""


def _watched_modules() -> dict[str, types.ModuleType]:
    return {name: module for name, module in list(sys.modules.items())
            if module is not None and (name == "engine" or name.startswith("engine.") or name in WATCHED)}


def snapshot() -> dict:
    """{(module, name): id of the value} plus, for engine classes, {(class, attr): id}."""
    seen = {}
    for name, module in _watched_modules().items():
        for attr, value in list(vars(module).items()):
            seen[(name, attr)] = id(value)
            if isinstance(value, type) and getattr(value, "__module__", "") == name:
                for key, member in list(vars(value).items()):
                    seen[(f"{name}.{attr}", key)] = id(member)
    return {"ids": seen, "modules": set(_watched_modules())}


def verify(before: dict, what: str = "train.py") -> None:
    """Raise Tampered naming the first engine name train.py rebound or removed."""
    after = snapshot()["ids"]
    for key, value in before["ids"].items():
        if after.get(key) != value:
            owner, attr = key
            raise Tampered(f"{what} replaced {owner}.{attr}: the engine's code is not {what}'s to change, "
                           "so the run does not count")
