"""One step of the research loop, and `autoresearch experiment` (that step for an external agent).

A step is: propose -> guard -> commit -> run -> record -> keep_or_reset. The loop
(engine/loop/driver.py) is the baseline followed by this step, repeated. Every state the
step leaves on disk is one a restarted loop can resume from (see `resume`): the
ledger row is the commit point of an experiment; before it, the experiment's git
commit names the exact code to run again.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import shutil
import time
from pathlib import Path

from engine.loop import guards
from engine.loop import lock as locks
from engine import paths
from engine.loop import protocol
from engine.loop import runner
from engine.agents.base import Proposal, ProposalRequest
from engine.errors import UserError
from engine.loop.ledger import Ledger
from engine.loop.live_view import LiveView, format_val
from engine.loop.repo import Repo, branch_name

TRAIN_FILE = "train.py"
CRASH_LOG_LINES = 60


@dataclasses.dataclass
class Session:
    repo: Repo
    program: protocol.Program
    program_path: Path
    tag: str
    run_dir: Path
    ledger: Ledger
    fixed: guards.FixedFiles
    data_dir: Path
    seed: int
    live: LiveView
    lock: locks.LoopLock
    started: float = dataclasses.field(default_factory=time.monotonic)

    @property
    def best_val(self) -> float | None:
        rows = self.ledger.rows
        return rows[-1].get("best_after") if rows else None

    @property
    def noise(self) -> float:
        vals = [row["val_bpb"] for row in self.ledger.rows
                if row.get("role") == "baseline" and isinstance(row.get("val_bpb"), (int, float))]
        return max(vals) - min(vals) if len(vals) > 1 else 0.0

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

    def close(self) -> None:
        self.lock.release()


def resolve_program_path(program: str, root: Path) -> Path:
    path = Path(program)
    return path if path.is_absolute() or path.exists() else root / program


def open_session(args, live: LiveView | None = None) -> Session:
    """Lock the repository, switch to the tag's branch, end an orphaned run, fingerprint fixed files."""
    repo = Repo(".")
    program_path = resolve_program_path(args.program, repo.root)
    program = protocol.apply_flags(protocol.load(program_path), args)
    repo.editable = list(program.editable)
    data_dir = paths.resolve_data_dir(getattr(args, "data", None))
    _check_tag(args.tag)
    if not (repo.root / TRAIN_FILE).exists():
        raise UserError(f"no {TRAIN_FILE} at the repository root {repo.root}: the loop runs experiments on it")
    run_dir = repo.root / "runs" / args.tag
    lock = locks.LoopLock(repo.root / "runs", args.tag).acquire()
    try:
        repo.ensure_ignored("runs")
        live = live or LiveView()
        if repo.clear_stale_index_lock():
            live.say("removed .git/index.lock left by an interrupted git command")
        orphan = locks.end_orphan(run_dir / "child.json")
        if orphan:
            live.say(f"ended training process {orphan} left running by an interrupted loop")
        return Session(repo, program, program_path, args.tag, run_dir, Ledger(run_dir),
                       guards.FixedFiles(repo.root, data_dir), data_dir, args.seed, live, lock)
    except BaseException:
        lock.release()
        raise


def _check_tag(tag: str) -> None:
    if not tag or not all(c.isalnum() or c in "-_." for c in tag) or tag.startswith("."):
        raise UserError(f"tag {tag!r} must be letters, digits, '-', '_' or '.', like `nov26`")


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


# --- the steps ---------------------------------------------------------------------


def propose(session: Session, agent, experiment: int, crash_log_tail: str | None = None) -> Proposal | None:
    last = session.ledger.rows[-1] if session.ledger.rows else None
    last_log = session.run_dir / last["log"] if last and last.get("log") else None
    request = ProposalRequest(
        repo_root=session.repo.root, editable=list(session.program.editable),
        program_text=session.program.text, ledger=list(session.ledger.rows), experiment=experiment,
        run_dir=session.run_dir, hardware=session.hardware(), budget=session.program.describe_budget(),
        last_log=last_log if last_log and last_log.exists() else None, crash_log_tail=crash_log_tail,
        bolder=session.ledger.misses_in_a_row() >= session.program.bold_after)
    return agent.propose(request)


def guard(session: Session) -> guards.Verdict:
    """Only editable files changed and they parse; the fixed files are as they were at start."""
    changed = session.repo.changed_paths()
    if not changed:
        return guards.Verdict(False, [], "nothing changed")
    verdict = guards.check_proposal(changed, session.program.editable, session.repo.root)
    if verdict.ok:  # a rejected proposal is undone by git; what git cannot undo stops the loop
        session.fixed.check("before a run")
    return verdict


def commit(session: Session, experiment: int, proposal: Proposal, changed: list[str],
           role: str = "candidate", extra: dict | None = None) -> str:
    message = f"{proposal.description}\n\nautoresearch experiment {experiment} ({session.tag})"
    sha = session.repo.commit(changed, message)
    pending = {"experiment": experiment, "commit": sha, "role": role, **_proposal_fields(proposal), **(extra or {})}
    _write_json(session.pending_path, pending)
    return sha


def run(session: Session, experiment: int, seed: int, description: str) -> runner.Outcome:
    exp_dir = session.exp_dir(experiment)
    if exp_dir.exists():
        shutil.rmtree(exp_dir)  # a run cut short by a kill: it runs again from the start
    session.live.start(experiment, description, session.program.describe_budget(), session.best_val,
                       session.ledger.rows, exp_dir)
    command = runner.build_command(TRAIN_FILE, exp_dir, seed, session.program.budget_flag(), str(session.data_dir))
    return runner.run(command, exp_dir, session.program.hard_timeout(), session.repo.root,
                      child_record=session.child_record, on_tick=session.live.tick)


def record(session: Session, experiment: int, sha: str | None, proposal: Proposal, outcome: runner.Outcome | None,
           role: str, seed: int, started: str, extra: dict | None = None) -> dict:
    """Decide and append the experiment's row: the moment it counts."""
    row = {**({} if outcome is None else _result_fields(outcome.result))}
    decision = decide(session, experiment, role, outcome, extra or {})
    row.update({
        "experiment": experiment, "commit": sha, "description": proposal.description, "role": role,
        "seed": seed, "started": started, "finished": now_iso(), "train_path": TRAIN_FILE,
        "best_before": session.best_val, "noise": session.noise, **_proposal_fields(proposal), **(extra or {}),
        **decision,
    })
    if outcome is not None:
        row.update({"wall_seconds": round(outcome.wall_seconds, 3), "returncode": outcome.returncode,
                    "error": outcome.error, "log": str(outcome.log_path.relative_to(session.run_dir))})
    session.ledger.append(row)
    session.pending_path.unlink(missing_ok=True)
    session.live.finish(row, row["best_after"], session.ledger.rows)
    return row


def keep_or_reset(session: Session, row: dict) -> None:
    """Keep: the branch stays on the experiment's commit. Otherwise back to the best commit."""
    if row.get("needs_rerun"):
        return  # the same commit runs again first
    if row.get("kept"):
        session.fixed.check("before keeping a result")
        return
    _drop_checkpoint(session, row)
    best = session.ledger.best_commit()
    session.repo.reset_to(best if best else "HEAD")


# --- deciding ----------------------------------------------------------------------


def decide(session: Session, experiment: int, role: str, outcome: runner.Outcome | None, extra: dict) -> dict:
    best, noise = session.best_val, session.noise
    if outcome is None:
        return _verdict("rejected", False, best, extra.get("decision", "not run"))
    if outcome.status != "ok":
        return _verdict(outcome.status, False, best, outcome.error or outcome.status)
    val = outcome.result["val_bpb"]
    if role == "baseline":
        vals = [r["val_bpb"] for r in session.ledger.rows if r.get("role") == "baseline" and r.get("val_bpb")]
        mean = (sum(vals) + val) / (len(vals) + 1)
        return _verdict("keep", True, mean, "baseline" if not vals else f"baseline mean {mean:.6f}")
    if role == "rerun":
        first = extra["first_val_bpb"]
        mean = (first + val) / 2
        kept = mean < best
        return {**_verdict("keep" if kept else "discard", kept, mean if kept else best,
                           f"re-run mean {mean:.6f} {'beats' if kept else 'does not beat'} best {best:.6f}"),
                "mean_val_bpb": mean}
    gain = best - val
    if gain > noise:
        return _verdict("keep", True, val, f"gain {gain:.6f} > noise {noise:.6f}")
    if gain > 0 and _room_for_one_more(session, experiment):
        return {**_verdict("discard", False, best, f"gain {gain:.6f} within noise {noise:.6f}: re-run with another seed"),
                "needs_rerun": True}
    if gain > 0:
        return _verdict("discard", False, best, f"gain {gain:.6f} within noise {noise:.6f}, no experiment left to confirm it")
    return _verdict("discard", False, best, f"no gain ({val:.6f} vs best {best:.6f})")


def _verdict(status: str, kept: bool, best_after, decision: str) -> dict:
    return {"status": status, "kept": kept, "best_after": best_after, "decision": decision, "needs_rerun": False}


def _room_for_one_more(session: Session, experiment: int) -> bool:
    limit = session.program.max_experiments
    return limit is None or experiment + 1 < limit


# --- composite steps: a candidate, its re-run, the baseline -----------------------------


def try_candidate(session: Session, proposal: Proposal, experiment: int, role: str = "candidate",
                  extra: dict | None = None) -> dict:
    """guard -> commit -> run -> record -> keep_or_reset for the proposal now in the working tree."""
    verdict = guard(session)
    if not verdict.ok:
        row = record(session, experiment, None, proposal, None, role, session.seed, now_iso(),
                     {**(extra or {}), "decision": verdict.reason})
        session.repo.restore()
        return row
    sha = commit(session, experiment, proposal, verdict.changed, role, extra)
    return run_committed(session, experiment, sha, proposal, role, extra)


def run_committed(session: Session, experiment: int, sha: str, proposal: Proposal, role: str,
                  extra: dict | None = None, seed: int | None = None) -> dict:
    seed = session.seed if seed is None else seed
    started = now_iso()
    outcome = run(session, experiment, seed, proposal.description)
    row = record(session, experiment, sha, proposal, outcome, role, seed, started, extra)
    keep_or_reset(session, row)
    if row.get("needs_rerun"):
        return rerun(session, row)
    return row


def rerun(session: Session, first: dict) -> dict:
    """The same commit with another seed; kept only if the two runs' mean beats the best."""
    experiment = session.ledger.next_experiment()
    proposal = Proposal(description=f"{first['description']} (re-run of #{first['experiment']}, seed {first['seed'] + 1})",
                        hypothesis=first.get("hypothesis", ""))
    extra = {"rerun_of": first["experiment"], "first_val_bpb": first["val_bpb"]}
    started, seed = now_iso(), first["seed"] + 1
    outcome = run(session, experiment, seed, proposal.description)
    row = record(session, experiment, first["commit"], proposal, outcome, "rerun", seed, started, extra)
    keep_or_reset(session, row)
    return row


def run_baseline(session: Session) -> None:
    """Run the starting commit program.baseline_runs times, each with its own seed."""
    rows = session.ledger.rows
    crashed = [r for r in rows if r.get("role") == "baseline" and not r.get("kept")]
    if crashed:
        raise UserError(f"the baseline crashed (experiment {crashed[0]['experiment']}: {crashed[0].get('error')}; "
                        f"log {session.run_dir / str(crashed[0].get('log'))}): fix train.py, commit, and use a new tag")
    done = sum(1 for r in rows if r.get("role") == "baseline")
    for index in range(done, session.program.baseline_runs):
        experiment = session.ledger.next_experiment()
        description = "baseline" if index == 0 else f"baseline (run {index + 1} of {session.program.baseline_runs})"
        proposal = Proposal(description=description)
        started, seed = now_iso(), session.seed + index
        outcome = run(session, experiment, seed, description)
        row = record(session, experiment, session.repo.head(), proposal, outcome, "baseline", seed, started)
        if not row["kept"]:
            raise UserError(f"the baseline {row['status']}: {row.get('error')}; see "
                            f"{session.run_dir / row['log']} (fix train.py and commit, then use a new tag)")


# --- resume --------------------------------------------------------------------------


def resume(session: Session) -> None:
    """Bring ledger and git into step after a kill: finish or redo what was cut short."""
    repo, ledger = session.repo, session.ledger
    dirty = repo.changed_paths()
    if dirty:
        session.live.say(f"discarding uncommitted changes left by an interrupted step: {', '.join(dirty[:5])}")
        repo.restore()
    if not ledger.rows:
        return
    best, head, last = ledger.best_commit(), repo.head(), ledger.rows[-1]
    if head == best:
        return
    if head in {row.get("commit") for row in ledger.rows}:
        if last.get("commit") == head and last.get("needs_rerun"):
            session.live.say(f"resuming: re-run of experiment {last['experiment']} was cut short")
            rerun(session, last)
        else:
            repo.reset_to(best)
        return
    if repo.parent(head) == best:
        _rerun_interrupted(session, head)
        return
    raise UserError(f"branch {branch_name(session.tag)} is at {head[:7]}, which the ledger of {session.run_dir} "
                    f"does not know (best is {str(best)[:7]}): reset the branch to {str(best)[:7]} or use a new tag")


def _rerun_interrupted(session: Session, head: str) -> None:
    pending = _read_json(session.pending_path)
    if pending.get("commit") != head:
        pending = {"description": session.repo.message(head).split("\n", 1)[0], "role": "candidate"}
    experiment = session.ledger.next_experiment()
    session.live.say(f"resuming: experiment {experiment} ({pending['description']}) was cut short; running it again")
    proposal = Proposal(**{k: pending[k] for k in ("description", "hypothesis", "prompt_tokens", "output_tokens",
                                                   "cost_usd") if k in pending})
    extra = {k: pending[k] for k in ("fix_of", "agent") if k in pending}
    run_committed(session, experiment, head, proposal, pending.get("role", "candidate"), extra)


# --- helpers ---------------------------------------------------------------------------


def _proposal_fields(proposal: Proposal) -> dict:
    return {"description": proposal.description, "hypothesis": proposal.hypothesis,
            "prompt_tokens": proposal.prompt_tokens, "output_tokens": proposal.output_tokens,
            "cost_usd": proposal.cost_usd}


def _result_fields(result: dict) -> dict:
    fields = dict(result)
    fields["train_status"] = fields.pop("status", None)
    fields.pop("error", None)
    fields.pop("seed", None)
    peak = fields.get("peak_vram_mb")
    fields["memory_gb"] = peak / 1024 if isinstance(peak, (int, float)) else None
    return fields


def _drop_checkpoint(session: Session, row: dict) -> None:
    """Only kept experiments keep their saved state (the report scores them on test)."""
    checkpoint = session.exp_dir(row["experiment"]) / "checkpoint"
    if checkpoint.is_dir():
        shutil.rmtree(checkpoint, ignore_errors=True)


def _write_json(path: Path, value: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, default=str))
    os.replace(tmp, path)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def crash_log_tail(log: Path, lines: int = CRASH_LOG_LINES) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --- `autoresearch experiment` ------------------------------------------------------------


def main(args) -> int:
    session = open_session(args)
    try:
        stashed = _set_aside_edits(session)
        if session.repo.current_branch() != branch_name(session.tag):
            session.repo.checkout_branch(session.tag)
        resume(session)
        ran_baseline = not session.ledger.rows
        run_baseline(session)
        if stashed:
            _bring_back_edits(session)
        if not session.repo.changed_paths():
            if ran_baseline:
                print_outcome(session, session.ledger.rows[-1])
                return 0
            raise UserError("nothing changed in the working tree: edit train.py, then run "
                            f"`autoresearch experiment \"what you changed\" --tag {session.tag}`")
        experiment = session.ledger.next_experiment()
        row = try_candidate(session, Proposal(description=args.description), experiment,
                            extra={"agent": "external"})
        if row["status"] in ("crash", "timeout") and row.get("commit"):
            _put_back(session, row["commit"])
        print_outcome(session, row)
        return 0 if row["status"] in ("keep", "discard") else 1
    finally:
        session.close()


def _put_back(session: Session, crashed: str) -> None:
    """Leave a crashed idea in the working tree (uncommitted) so the agent can fix it and run again."""
    repo = session.repo
    for path in repo.git.diff("--name-only", f"{crashed}~1", crashed).splitlines():
        try:
            (repo.root / path).write_text(repo.file_at(crashed, path))
        except Exception:  # deleted in that commit: nothing to put back
            continue
    session.live.say("the crashed version is back in the working tree, uncommitted: fix it and run "
                     "`autoresearch experiment` again, or drop it with `git checkout -- train.py`")


def _set_aside_edits(session: Session) -> bool:
    """Stash an external agent's edits while the branch is set up and the baseline runs."""
    changed = session.repo.changed_paths()
    if not changed:
        return False
    on_branch = session.repo.current_branch() == branch_name(session.tag)
    outside = [p for p in changed if not guards.is_editable(p, session.program.editable)]
    if outside and not on_branch:
        raise UserError(f"uncommitted changes to files the agent may not edit: {', '.join(outside[:5])}; "
                        "commit or stash them first")
    return session.repo.stash(f"autoresearch experiment ({session.tag})")


def _bring_back_edits(session: Session) -> None:
    try:
        session.repo.git.stash("pop", "-q")
    except Exception as error:  # GitPython raises GitCommandError; the stash stays for the user
        raise UserError(f"could not put your edits back on branch {branch_name(session.tag)} ({error}); "
                        "they are in `git stash list`") from None


def print_outcome(session: Session, row: dict) -> None:
    val = row.get("val_bpb")
    lines = [f"experiment {row['experiment']}: {row['status']}"
             + (f"  val_bpb {format_val(val)}" if val is not None else "")
             + f"  (best {format_val(row.get('best_after'))}, noise {session.noise:.6f})",
             f"  {row.get('decision', '')}"]
    if row.get("commit"):
        lines.append(f"  commit {row['commit'][:7]} on {branch_name(session.tag)}; "
                     f"log {session.run_dir / row['log']}" if row.get("log") else "")
    print("\n".join(line for line in lines if line.strip()))
