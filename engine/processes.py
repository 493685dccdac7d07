"""Other processes, by pid: whether one lives, when it started, ending a whole group; and
`run_contained`, the one way the loop runs a command (score, check, agent, training run) so that
everything it starts ends with it and its output is bounded (engine/bounded_log.py).

Containment: each command runs in a cgroup of its own where this host lets us make one (cgroup
v1's `pids` hierarchy or cgroup v2, root or a delegated subtree): no descendant can leave it,
setsid and double-fork included, and ending the command ends every process in it. Elsewhere the
loop is a child subreaper (PR_SET_CHILD_SUBREAPER): a descendant whose parent exits is re-parented
to the loop, not to init, and every descendant carries the command's token in its environment;
at the end the loop kills the command's process group, every process whose environment holds the
token, and every re-parented orphan of the command's session. Either way this holds in every mode,
since every mode (serial, --workers threads, a Ray task on a node, the swarm, `experiment`) runs
its commands through `run_contained`.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import os
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Callable

KILL_GRACE_SECONDS = 5.0


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but someone else's
        return True
    return True


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of pid (to tell it from a later process with the same pid)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def die_with_parent(parent: int) -> None:
    """In a child before exec: its own process group, and SIGKILL if the loop (pid `parent`) dies,
    also when it died between the fork and this call."""
    os.setsid()
    libc = _libc()
    if libc is None:
        return  # not Linux: the restarted loop ends orphans instead (engine/loop/orphans.py)
    libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
    if os.getppid() != parent:  # re-parented already: the signal will never come
        os.kill(os.getpid(), signal.SIGKILL)


def record_child(path: Path | None, pid: int, container: "Container | None" = None, **extra) -> None:
    """Name a child's process group in `path` (pid, pgid, kernel start time) while it runs, so a
    loop restarted after a kill -9 can end it (engine/loop/orphans.py)."""
    if path is None:
        return
    from engine.files import write_atomic
    import json
    record = {"pid": pid, "pgid": pid, "start_time": process_start_time(pid),
              **(container.describe() if container is not None else {}), **extra}
    write_atomic(Path(path), json.dumps(record, default=str))


def kill_group(pgid: int, grace: float = KILL_GRACE_SECONDS) -> None:
    """SIGTERM the whole group, then SIGKILL what is left after `grace` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


_bytecode_prefix: Path | None = None  # set by the loop (engine/loop/bytecode.py)


def set_bytecode_prefix(path: Path | None) -> None:
    """The folder engine processes started from here keep their compiled bytecode in."""
    global _bytecode_prefix
    _bytecode_prefix = None if path is None else Path(path)


def bytecode_prefix() -> Path | None:
    """This process's prefix: the loop's, or the one this process was itself started with."""
    import sys
    if _bytecode_prefix is not None:
        return _bytecode_prefix
    return Path(sys.pycache_prefix) if sys.pycache_prefix else None


def engine_command(*args: str) -> list[str]:
    """`autoresearch ARGS` as a child process of this Python. -P keeps the working directory
    (a repository that an agent and train.py write in) off the child's import path, so a file
    named like a module there (numpy.py, jax.py) cannot stand in for it in the scorer. Under a
    loop, `-X pycache_prefix` makes the child read bytecode only from the loop's private prefix
    (engine/loop/bytecode.py), never from a `__pycache__/` an agent can write, and `-B` keeps it
    from writing there; its own engine children inherit the prefix."""
    import sys
    prefix = bytecode_prefix()
    # -B: read the prefix, never write it (the loop warmed and froze it; root ignores the freeze)
    flags = ["-B", "-X", f"pycache_prefix={prefix}"] if prefix is not None else []
    return [sys.executable, "-P", *flags, "-m", "engine.cli", *args]


# --- containment ---------------------------------------------------------------------------

TOKEN_VAR = "AUTORESEARCH_CONTAINER"  # every descendant of a contained command inherits it
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36
CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_PARENT = "autoresearch"
END_SECONDS = 10.0  # SIGKILL is repeated this long at most while a cgroup empties
_counter = itertools.count()
_leaders: set[int] = set()  # pids of the contained commands now running (never taken for orphans)
_lock = threading.Lock()
_cgroup_base: Path | None | bool = False  # False: not looked for yet; None: none we may use


@functools.cache
def _libc():
    """libc through ctypes (None where there is none), loaded once in the parent: never a
    dlopen between fork and exec."""
    try:
        import ctypes
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except (OSError, AttributeError):
        return None


def become_subreaper() -> bool:
    """Make this process the one orphans of its descendants are re-parented to (Linux 3.4+)."""
    libc = _libc()
    return libc is not None and libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def cgroup_base() -> Path | None:
    """The folder this process may make command cgroups in, or None. AUTORESEARCH_CONTAINMENT=
    subreaper skips cgroups (tests of the fallback)."""
    global _cgroup_base
    if _cgroup_base is False:
        _cgroup_base = None if os.environ.get("AUTORESEARCH_CONTAINMENT") == "subreaper" else _find_cgroup_base()
    return _cgroup_base


def _find_cgroup_base() -> Path | None:
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    places = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "pids" in controllers.split(","):
            places.append(CGROUP_ROOT / "pids" / path.lstrip("/"))
        elif controllers == "":
            places += [CGROUP_ROOT / path.lstrip("/"), CGROUP_ROOT / "unified" / path.lstrip("/")]
    for place in places:
        base = place / CGROUP_PARENT
        try:
            base.mkdir(exist_ok=True)
            probe = base / f"probe-{os.getpid()}"
            probe.mkdir(exist_ok=True)
            usable = (probe / "cgroup.procs").exists()
            probe.rmdir()
        except OSError:
            continue
        if usable:
            return base
    return None


@dataclasses.dataclass
class Container:
    """Where one command and all its descendants live: a cgroup, or (without one) a token in the
    environment plus the loop as subreaper. Made before the command starts; `end` kills all."""
    token: str
    cgroup: Path | None = None
    leader: int | None = None
    parent: int = dataclasses.field(default_factory=os.getpid)

    @classmethod
    def make(cls) -> "Container":
        _libc()  # loaded here, so the child's preexec only calls it
        token = f"{os.getpid()}-{next(_counter)}-{uuid.uuid4().hex[:8]}"
        base = cgroup_base()
        cgroup = None
        if base is not None:
            try:
                (base / token).mkdir()
                cgroup = base / token
            except OSError:
                cgroup = None
        if cgroup is None:
            become_subreaper()
        return cls(token, cgroup)

    def env(self, env: dict) -> dict:
        return {**env, TOKEN_VAR: self.token}

    def preexec(self) -> None:
        """In the child before exec: join the cgroup, own process group and session, SIGKILL when
        the loop dies."""
        if self.cgroup is not None:
            try:
                with open(self.cgroup / "cgroup.procs", "w") as procs:
                    procs.write(str(os.getpid()))
            except OSError:
                pass  # the token and the subreaper-free group kill still hold
        die_with_parent(self.parent)

    def describe(self) -> dict:
        """For the child record: a restarted loop ends what a killed one left (end_recorded)."""
        return {"container": self.token, "cgroup": str(self.cgroup) if self.cgroup else None}

    def started(self, pid: int) -> None:
        self.leader = pid
        with _lock:
            _leaders.add(pid)

    def end(self, grace: float = KILL_GRACE_SECONDS) -> None:
        """End every process of the command: SIGTERM, SIGKILL after `grace` seconds; a normal
        exit of the command ends what it left running too."""
        if self.leader is not None:
            kill_group(self.leader, grace)
        end_cgroup(self.cgroup)
        for pid in self._strays():
            _kill_and_reap(pid)
        with _lock:
            _leaders.discard(self.leader)

    def _strays(self) -> list[int]:
        """Processes outside the group that still carry this command's token, and orphans
        re-parented to this process from the command's session."""
        mine, strays = os.getpid(), []
        for pid in _all_pids():
            if pid == mine or pid in _leaders:
                continue
            if _has_token(pid, self.token):
                strays.append(pid)
            elif self.leader is not None and (stat := _stat(pid)) and stat[0] == mine and stat[2] == self.leader:
                strays.append(pid)  # re-parented to us, in the command's session, its token cleared
        return strays


def end_cgroup(cgroup: Path | None) -> None:
    """Kill every process in the cgroup (no more forks first), wait until it is empty, remove it."""
    if cgroup is None or not cgroup.is_dir():
        return
    try:
        (cgroup / "cgroup.kill").write_text("1")  # cgroup v2, Linux 5.14+
    except OSError:
        try:
            (cgroup / "pids.max").write_text("0")
        except OSError:
            pass
    deadline = time.monotonic() + END_SECONDS
    while time.monotonic() < deadline:
        pids = _cgroup_pids(cgroup)
        if not pids:
            break
        for pid in pids:
            _kill_and_reap(pid)
        time.sleep(0.02)
    try:
        cgroup.rmdir()
    except OSError:
        pass


def end_recorded(record: dict) -> None:
    """End what a child record names: its group, its cgroup and its token's processes."""
    kill_group(int(record["pgid"]))
    if record.get("cgroup"):
        end_cgroup(Path(record["cgroup"]))
    if record.get("container"):
        for pid in _all_pids():
            if _has_token(pid, record["container"]):
                _kill_and_reap(pid)


def _cgroup_pids(cgroup: Path) -> list[int]:
    try:
        return [int(p) for p in (cgroup / "cgroup.procs").read_text().split()]
    except OSError:
        return []


def _all_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _stat(pid: int) -> list[int]:
    """[ppid, pgid, sid] of pid ([] when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return [int(fields[1]), int(fields[2]), int(fields[3])]
    except (OSError, IndexError, ValueError):
        return []


def _has_token(pid: int, token: str) -> bool:
    try:
        return f"{TOKEN_VAR}={token}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


def _kill_and_reap(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return
    if _stat(pid)[:1] == [os.getpid()] and pid not in _leaders:  # an orphan re-parented to us
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


# --- running a command -------------------------------------------------------------------------

POLL_SECONDS = 0.25
READ_BYTES = 1 << 20


@dataclasses.dataclass
class Finished:
    returncode: int | None
    timed_out: bool
    output: str  # what the bounded log kept: the head, then the tail
    last_line: str  # the last non-empty line printed ("" when none)
    dropped: int  # bytes elided from the log


def run_contained(command, log_path: Path, timeout: float | None, cwd, env: dict, *, shell: bool = False,
                  header: str = "", grace: float = KILL_GRACE_SECONDS, child_record: Path | None = None,
                  on_tick: Callable[[float], None] | None = None, echo=None, stderr=subprocess.STDOUT,
                  **record_extra) -> Finished:
    """Run command (a list, or a shell string with shell=True) in its own Container, its stdout
    (and stderr, unless `stderr` is None: then it stays ours) appended to log_path within the cap
    (engine/bounded_log.py), for at most `timeout` seconds (None: no limit). However it ends (exit, timeout, an exception in this thread), every
    process it started ends with it. `echo(bytes)` sees the head of the output as it comes;
    child_record names the command while it runs (engine/loop/orphans.py)."""
    from engine.bounded_log import BoundedLog

    container = Container.make()
    log = BoundedLog(log_path, header.encode())
    start = time.monotonic()
    process = subprocess.Popen(command, shell=shell, cwd=cwd, env=container.env(env), stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=stderr, preexec_fn=container.preexec)
    container.started(process.pid)
    record_child(child_record, process.pid, container, **record_extra)
    pump = threading.Thread(target=_pump, args=(process.stdout, log, echo), daemon=True)
    pump.start()
    timed_out = False
    try:
        timed_out = _wait(process, start, timeout, on_tick)
    finally:
        container.end(grace)
        process.wait()
        pump.join(timeout=10)
        if child_record is not None:
            child_record.unlink(missing_ok=True)
    log.close()
    if log.error is not None:
        raise log.error  # the log could not be written (a full disk): the loop's fault, not the command's
    output = log.text()
    return Finished(process.returncode, timed_out, output, _last_nonempty(output), log.dropped)


def _wait(process: subprocess.Popen, start: float, timeout: float | None, on_tick) -> bool:
    """Wait for process until `timeout` seconds after start: True if the time ran out."""
    while True:
        left = POLL_SECONDS if timeout is None else min(POLL_SECONDS, max(timeout - (time.monotonic() - start), 0.01))
        try:
            process.wait(timeout=left)
            return False
        except subprocess.TimeoutExpired:
            pass
        elapsed = time.monotonic() - start
        if on_tick is not None:
            on_tick(elapsed)
        if timeout is not None and elapsed >= timeout:
            return True


def _pump(stream, log, echo) -> None:
    """Copy the command's output into the bounded log (and its head to echo) until the pipe closes."""
    echoed = 0
    while True:
        chunk = stream.read1(READ_BYTES) if hasattr(stream, "read1") else stream.read(READ_BYTES)
        if not chunk:
            break
        log.feed(chunk)
        if echo is not None and echoed < log.head_cap:
            echo(chunk[:log.head_cap - echoed])
            echoed += len(chunk)
            if echoed >= log.head_cap:
                echo(b"\n[autoresearch: further output goes only to " + str(log.path).encode() + b"]\n")
    stream.close()


def _last_nonempty(text: str) -> str:
    for line in reversed(text.splitlines()):
        if line.strip() and not line.startswith("$ "):
            return line.strip()
    return ""
