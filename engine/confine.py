"""Kernel-enforced file confinement (Landlock, Linux 5.13+) for processes that run agent code.

`confine(denied, writable)` restricts the calling process and every child it starts, for
good: it may read anything except the `denied` folders, and write only in the `writable`
ones. Unlike the audit hooks (engine/training/sandbox.py), which see only what Python code
does, the kernel enforces this for C extensions too (tensorstore, `numpy.fromfile`), so
train.py cannot read the held-out text in the tracer by going around Python.

Landlock grants rights to whole folder trees and has no "everything but": readable here
is every entry of each folder on the way from / to a denied folder, except the entries
on that way and links that lead onto it or into a denied tree. Folders and files created
later directly in a folder on that way stay unreadable, which suits the tracer (it writes
only its own folder) but not an agent's shell. A hard link made elsewhere to a denied
file before the rules are applied is not seen. Where the kernel has no
Landlock (an older kernel, another OS), nothing is applied and `confine` says so.
"""
from __future__ import annotations

import os
from pathlib import Path


def available() -> bool:
    try:
        import landlock

        return landlock.landlock_abi_version() >= 1
    except Exception:  # no Landlock in this kernel, or not Linux: the library raises several kinds
        return False


def confine(denied: list[Path], writable: list[Path]) -> bool:
    """Apply the rules to this process (and its future children); False where not available.
    Reads: all but `denied`. Writes: only in the `writable` folders."""
    if not available():
        return False
    from landlock import FSAccess, Ruleset

    read = FSAccess.READ_FILE | FSAccess.READ_DIR | FSAccess.EXECUTE
    ruleset = Ruleset()  # handles every right this kernel knows: what is not allowed is refused
    for path in readable_roots(denied):
        _allow(ruleset, path, FSAccess.READ_FILE | FSAccess.EXECUTE, read)
    for path in writable:
        Path(path).mkdir(parents=True, exist_ok=True)
        _allow(ruleset, Path(path), FSAccess.all_file(), FSAccess.all())
    ruleset.apply()
    return True


def _allow(ruleset, path: Path, file_rights, folder_rights) -> None:
    try:
        ruleset.allow(path, rules=folder_rights if path.is_dir() else file_rights)
    except OSError:  # gone since listed, or a link to nowhere
        pass


def readable_roots(denied: list[Path]) -> list[Path]:
    """The folders and files whose trees together hold everything but the denied trees."""
    denied_real = {Path(os.path.realpath(path)) for path in denied}
    on_the_way = {ancestor for path in denied_real for ancestor in (path, *path.parents)}

    def opens_a_way_in(entry: Path) -> bool:
        """A rule holds for what the path leads to: a link to a folder on the way, or into a
        denied tree, would open it."""
        real = Path(os.path.realpath(entry))
        return real in on_the_way or any(real.is_relative_to(path) for path in denied_real)

    roots = []
    for folder in sorted(on_the_way - denied_real):
        try:
            entries = sorted(os.listdir(folder))
        except OSError:
            continue
        roots += [folder / name for name in entries
                  if folder / name not in on_the_way and not opens_a_way_in(folder / name)]
    return roots
