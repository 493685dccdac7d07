"""A loop session: the repository, program.md, the tag's run directory, ledger and lock.

`open_session` is where `autoresearch loop` and `autoresearch experiment` begin: it locks
the repository, ends a training child an interrupted loop left running, and fingerprints
the fixed files.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import time
from pathlib import Path

from engine import paths
from engine.errors import UserError
from engine.files import write_atomic
from engine.loop import guards, orphans, program_edits, protocol, standings, tasks
from engine.loop.ledger import Ledger
from engine.loop.live_view import LiveView
from engine.loop.lock import LoopLock
from engine.loop.repo import Repo

TRAIN_FILE = "train.py"
AGENT_RECORD = "agent.json"  # engine/agents/command.py writes it while the agent runs
SNAPSHOT_DIR = ".autoresearch"  # engine-owned worktrees, one folder per tag


@dataclasses.dataclass
class Session:
    repo: Repo
    program: protocol.Program
    program_path: Path
    tag: str
    run_dir: Path
    ledger: Ledger
    fixed: guards.FixedFiles
    data_dir: Path | None
    seed: int
    live: LiveView
    lock: LoopLock
    started: float = dataclasses.field(default_factory=time.monotonic)
    bytecode: object | None = None  # engine/loop/bytecode.py's BytecodeCache, for train tasks
    _snapshots: object | None = None
    _trackers: object | None = None
    edits: object | None = None  # engine/loop/program_edits.py's ProgramEdits: the human's program.md

    @property
    def snapshot_root(self) -> Path:
        """Where the engine's worktrees of this tag live: outside runs/, ignored by git."""
        return self.repo.root / SNAPSHOT_DIR / self.tag

    def snapshots(self):
        """The serial loop's pool of one worktree (engine/loop/worktrees.py)."""
        from engine.loop.worktrees import Worktrees
        if self._snapshots is None:
            self._snapshots = Worktrees(self.repo, self.snapshot_root)
        return self._snapshots

    @property
    def best_val(self) -> float | None:
        """The score to beat (engine/loop/standings.py defines it once)."""
        return self.ledger.best_value()

    @property
    def task(self):
        """How an experiment runs and is scored: train.py's val_bpb or a command task (tasks.py)."""
        return tasks.make_task(self.program, self.data_dir)

    @property
    def noise(self) -> float:
        return self.ledger.noise()

    @property
    def child_record(self) -> Path:
        return self.run_dir / "child.json"

    @property
    def pending_path(self) -> Path:
        return self.run_dir / "pending.json"

    def exp_dir(self, experiment: int) -> Path:
        return self.run_dir / f"exp-{experiment:04d}"

    def hardware(self) -> str:
        for row in reversed(self.ledger.rows):
            if row.get("device"):
                return str(row["device"])
        return "unknown until the baseline has run"

    def refingerprint(self) -> None:
        """The fixed files again, after the human changed the editable paths in program.md."""
        self.fixed = _fixed_files(self.program, self.repo, self.data_dir, self.program_path)

    def write_pending(self, pending: dict) -> None:
        """What is about to run, so a loop killed mid-run can run it again (see resume.py)."""
        write_atomic(self.pending_path, json.dumps(pending, default=str))

    def read_pending(self) -> dict:
        try:
            return json.loads(self.pending_path.read_text())
        except (OSError, ValueError):
            return {}

    def trackers(self):
        """The trackers (engine/tracking): TensorBoard event files, and W&B or MLflow when program.md
        or a flag asks; opened at the first use."""
        from engine.tracking import Trackers

        if self._trackers is None:
            self._trackers = Trackers(self.run_dir, self.program.trackers, say=self.live.say)
        return self._trackers

    def follow(self, experiment: int) -> None:
        """The running experiment's new training steps to the trackers, so its curve grows live."""
        self.trackers().follow(f"exp-{experiment:04d}", self.exp_dir(experiment))

    def track(self, row: dict) -> None:
        """Send a recorded row to the trackers. Never raises: a failing tracker warns once."""
        sources = {}
        for path in self.program.editable if row.get("commit") else []:
            try:
                sources[path] = self.repo.file_at(row["commit"], path)
            except Exception:  # noqa: BLE001 (an editable path the commit does not hold)
                continue
        self.trackers().record(row, self.ledger.rows, self.exp_dir(row["experiment"]), sources)

    def close(self) -> None:
        try:
            if self._trackers is not None:
                self._trackers.close()
            if self._snapshots is not None:
                self._snapshots.close_all()
            if self.bytecode is not None:
                self.bytecode.close()
        finally:
            self.lock.release()


def resolve_program_path(program: str, root: Path) -> Path:
    path = Path(program)
    return path if path.is_absolute() or path.exists() else root / program


def open_session(args, live: LiveView | None = None, switch_branch: bool = False) -> Session:
    """Check the arguments, program.md, the data and (switch_branch) that the checkout can move
    to the tag's branch; only then lock the repository (the first thing written: runs/TAG/), end
    an orphaned run and fingerprint the fixed files. The caller switches the branch."""
    repo = Repo(".")
    program_path = resolve_program_path(args.program, repo.root)
    program = protocol.apply_flags(protocol.load(program_path), args)
    repo.editable = list(program.editable)
    repo.human_files = [name] if (name := program_edits.human_file(program_path, repo.root)) else []
    # a command task reads no prepared dataset: its score command finds its own data
    data_dir = None if program.task.is_command else paths.resolve_data_dir(getattr(args, "data", None))
    _check_tag(args.tag)
    if program.task.is_command:
        _check_editable_exist(program, repo)
    elif not (repo.root / TRAIN_FILE).exists():
        raise UserError(f"no {TRAIN_FILE} at the repository root {repo.root}: the loop runs experiments on it")
    if switch_branch:
        _check_can_switch(repo, args.tag)
    run_dir = repo.root / "runs" / args.tag
    lock = LoopLock(repo.root / "runs", args.tag).acquire()
    try:
        repo.ensure_ignored("runs")
        repo.ensure_ignored(SNAPSHOT_DIR)
        live = live or LiveView()
        if repo.clear_stale_index_lock():
            live.say("removed .git/index.lock left by an interrupted git command")
        orphan = orphans.end_orphan(run_dir / "child.json")
        if orphan:
            live.say(f"ended training process {orphan} left running by an interrupted loop")
        agent = orphans.end_orphan(run_dir / AGENT_RECORD)
        if agent:
            live.say(f"ended the agent command's processes (group {agent}) left running by an interrupted loop")
        ledger = Ledger(run_dir, program.task.metric)
        _check_objective(ledger.rows, program, args.tag, program_path)
        session = Session(repo, program, program_path, args.tag, run_dir, ledger,
                          _fixed_files(program, repo, data_dir, program_path), data_dir, args.seed, live, lock)
        session.edits = program_edits.ProgramEdits(session, args)
        if not program.task.is_command:
            _verify_data(data_dir, live, ledger.rows, args.tag)
            session.bytecode = _bytecode_cache()
        return session
    except BaseException:
        lock.release()
        raise


def _check_objective(rows: list[dict], program: protocol.Program, tag: str, program_path: Path) -> None:
    """A tag's metric and direction are those of its first row: a program.md that changed them
    would keep changes under two objectives in one chain."""
    fixed = standings.tag_objective(rows)
    task = tasks.make_task(program)
    if fixed is not None and fixed != (task.metric, task.direction):
        raise UserError(f"tag {tag} optimizes {fixed[0]} ({fixed[1]}) since its first experiment, but "
                        f"{program_path.name} now says {task.metric} ({task.direction}): put the metric and "
                        "direction back, or start a new tag for the new objective")


def _verify_data(data_dir: Path | None, live: LiveView, rows: list[dict], tag: str) -> None:
    """Once per loop start, before any run: every file of the data cache against the manifest's
    sha256 values (engine/data/checksums.py), a split key (engine/data/cache.py), and the same
    data the tag's earlier runs were scored on. A stand-in for `autoresearch train` (tests) reads
    no data: not checked."""
    if data_dir is None or os.environ.get("AUTORESEARCH_TRAIN_COMMAND"):
        return
    from engine.data import cache, checksums
    started = time.monotonic()
    checksums.verify(data_dir)
    manifest = cache.load_manifest(data_dir)
    cache.require_split_key(data_dir, manifest)
    _check_same_data(manifest, rows, tag, data_dir)
    live.say(f"data cache {data_dir.name}: every file matches its sha256 ({time.monotonic() - started:.1f} s)")


def _check_same_data(manifest: dict, rows: list[dict], tag: str, data_dir: Path) -> None:
    """A tag's results compare only on the data its first runs were scored on: a cache prepared
    again (another split key, other flags) holds other validation text."""
    scored_on = {row["manifest_fingerprint"] for row in rows if row.get("manifest_fingerprint")}
    if scored_on and manifest.get("fingerprint") not in scored_on:
        raise UserError(f"tag {tag} was scored on data cache fingerprint {sorted(scored_on)[0][:16]}, but "
                        f"{data_dir} now has {str(manifest.get('fingerprint'))[:16]} (prepared again, or another "
                        "dataset): its validation text differs, so its results would not compare with the "
                        "tag's best. Start a new tag, or point --data at the cache the tag used")


def _bytecode_cache():
    """The session's private bytecode prefix (engine/loop/bytecode.py); warmed with the engine's
    imports unless a stand-in replaces `autoresearch train` (tests, benchmarks)."""
    from engine.loop.bytecode import BytecodeCache
    return BytecodeCache(warm=not os.environ.get("AUTORESEARCH_TRAIN_COMMAND"))


def _fixed_files(program: protocol.Program, repo: Repo, data_dir: Path | None,
                 program_path: Path | None = None) -> guards.FixedFiles:
    """train: prepare.py, engine/, model/ and the data cache. command: every tracked file that is
    not editable (see tasks.fixed_paths for why) but program.md, which the human may edit."""
    if not program.task.is_command:
        return guards.FixedFiles(repo.root, data_dir)
    human = Path(program_path).resolve() if program_path is not None else None
    paths = [path for path in tasks.fixed_paths(repo.root, repo.tracked_files(), program.editable)
             if human is None or path.resolve() != human]
    return guards.FixedFiles(repo.root, None, files=paths)


def _check_editable_exist(program: protocol.Program, repo: Repo) -> None:
    if not tasks.editable_files(repo.root, program.editable, repo.tracked_files()):
        raise UserError(f"no file in {repo.root} matches the task's editable globs "
                        f"({', '.join(program.editable)}): fix `editable` in the ## Task section")


def _check_can_switch(repo: Repo, tag: str) -> None:
    """The checkout moves to autoresearch/TAG only from a clean tree (repo.checkout_branch)."""
    from engine.loop.repo import branch_name

    name = branch_name(tag)
    if repo.current_branch() != name and not repo.is_clean():
        action = "resuming" if name in [head.name for head in repo.git_repo.heads] else "starting"
        raise UserError(f"uncommitted changes in {', '.join(repo.changed_paths()[:5])}: "
                        f"commit or stash them before {action} branch {name}")


def _check_tag(tag: str) -> None:
    if not tag or not all(c.isalnum() or c in "-_." for c in tag) or tag.startswith("."):
        raise UserError(f"tag {tag!r} must be letters, digits, '-', '_' or '.', like `nov26`")


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
