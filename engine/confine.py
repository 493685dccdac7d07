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

`close_network()` takes the network away from the calling process and its future children:
a network namespace of its own (unshare(2); as root, or through a user namespace where the
kernel lets an unprivileged user make one), where no TCP, UDP or other traffic reaches any
other process, not even on 127.0.0.1; and Landlock's network rules (ABI 4+), which refuse
every TCP bind and connect but do not cover UDP. It says which held.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path

# Linux: unshare(2)'s flags; Landlock's system calls (one number on every architecture),
# its network rights (ABI 4) and the prctl that lets an unprivileged process restrict itself.
CLONE_NEWNET, CLONE_NEWUSER = 0x40000000, 0x10000000
SYS_LANDLOCK_CREATE_RULESET, SYS_LANDLOCK_RESTRICT_SELF = 444, 446
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_ACCESS_NET_BIND_TCP, LANDLOCK_ACCESS_NET_CONNECT_TCP = 1, 2
PR_SET_NO_NEW_PRIVS = 38


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


def close_network() -> list[str]:
    """Apply what this kernel allows (call it before any thread starts); the names of what held:
    "network namespace" (TCP, UDP and all else) and/or "Landlock TCP rules"; empty if neither."""
    held = []
    if _new_network_namespace():
        held.append("network namespace")
    if _landlock_refuse_tcp():
        held.append("Landlock TCP rules")
    return held


def _libc():
    import ctypes

    return ctypes, ctypes.CDLL(None, use_errno=True)


def _new_network_namespace() -> bool:
    """unshare(CLONE_NEWNET), with a user namespace of one identity-mapped user where the
    process lacks the right to make a network namespace by itself."""
    try:
        ctypes, libc = _libc()
    except OSError:
        return False
    if libc.unshare(CLONE_NEWNET) == 0:
        return True
    uid, gid = os.getuid(), os.getgid()
    if libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0:
        return False
    try:  # keep this user's own identity inside, so file permissions read as before
        Path("/proc/self/setgroups").write_text("deny")
        Path("/proc/self/uid_map").write_text(f"{uid} {uid} 1")
        Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1")
    except OSError:
        pass  # still in a network namespace of its own; files owned by others read as nobody's
    return True


def _landlock_refuse_tcp() -> bool:
    """A Landlock layer that handles TCP bind and connect and allows neither (ABI 4+)."""
    try:
        ctypes, libc = _libc()
        syscall = libc.syscall
        syscall.restype = ctypes.c_long
        abi = syscall(ctypes.c_long(SYS_LANDLOCK_CREATE_RULESET), None, ctypes.c_size_t(0),
                      ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION))
        if abi < 4:
            return False
        attr = ctypes.create_string_buffer(struct.pack("=QQ", 0, LANDLOCK_ACCESS_NET_BIND_TCP
                                                        | LANDLOCK_ACCESS_NET_CONNECT_TCP))
        ruleset = syscall(ctypes.c_long(SYS_LANDLOCK_CREATE_RULESET), attr, ctypes.c_size_t(16), ctypes.c_uint32(0))
        if ruleset < 0:
            return False
        try:
            libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
            return syscall(ctypes.c_long(SYS_LANDLOCK_RESTRICT_SELF), ctypes.c_int(ruleset), ctypes.c_uint32(0)) == 0
        finally:
            os.close(ruleset)
    except (OSError, AttributeError):  # not Linux, or no libc to call
        return False
