"""One step of the research loop: propose -> guard -> commit -> run -> record -> keep_or_reset.

The loop (engine/loop/driver.py) is the baseline followed by this step, repeated. Every
state the step leaves on disk is one a restarted loop can resume from (engine/loop/
resume.py): the ledger row is the commit point of an experiment; before it, the
experiment's git commit names the exact code to run again.
"""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from engine.agents.base import Proposal, ProposalRequest
from engine.loop import guards, outages, runner, turn, worktrees
from engine.loop.decide import decide
from engine.loop.standings import is_kept_change, row_value, series_of
from engine.errors import UserError
from engine.loop.repo import Repo, branch_name
from engine.loop.session import TRAIN_FILE, Session, now_iso

CRASH_LOG_LINES = 60


def propose(session: Session, agent, experiment: int, crash_log_tail: str | None = None,
            repo_root: Path | None = None, in_flight: list[dict] | None = None,
            swarm: list[dict] | None = None) -> Proposal | None:
    """Ask the agent for the next idea, edited into repo_root (a parallel worker's worktree) or the
    repository; in_flight lists the ideas other workers are running, so it proposes another;
    swarm holds the other swarm workers' recent results. program.md is read again first: the
    human's edits are taken in (engine/loop/program_edits.py)."""
    if session.edits is not None:
        session.edits.before_turn()
    last = session.ledger.rows[-1] if session.ledger.rows else None
    last_log = session.run_dir / last["log"] if last and last.get("log") else None
    request = ProposalRequest(
        repo_root=repo_root or session.repo.root, editable=list(session.program.editable),
        program_text=session.program.text, ledger=list(session.ledger.rows), experiment=experiment,
        run_dir=session.run_dir, hardware=session.hardware(), budget=session.program.describe_budget(),
        last_log=last_log if last_log and last_log.exists() else None, crash_log_tail=crash_log_tail,
        bolder=session.ledger.misses_in_a_row() >= session.program.bold_after, in_flight=list(in_flight or []),
        swarm=list(swarm or []), task_kind=session.task.kind, metric=session.task.metric,
        direction=session.task.direction)
    repo = session.repo if repo_root is None else Repo(repo_root, editable=session.program.editable)
    before, main_before = turn.before_turn(repo), (turn.before_turn(session.repo) if repo_root else None)
    try:
        proposal = agent.propose(request)
    finally:
        after = turn.after_turn(repo, before, session.program.editable, session.bytecode,
                                branch=None if repo_root else branch_name(session.tag))
        if main_before is not None:  # a worker's agent may also have moved the main tree
            main = turn.after_turn(session.repo, main_before, session.program.editable,
                                   branch=branch_name(session.tag))
            after.refusals += [f"in the main tree: {r}" for r in main.refusals]
            if session.repo.changed_paths():
                session.repo.restore()
                after.refusals.append("changed the main tree (a worker proposes in its own worktree)")
        if session.ledger.restore():
            after.refusals.append(f"changed the ledger in {session.ledger.run_dir} (rewritten from the loop's record)")
        if session.edits is not None:
            session.edits.after_turn()  # an edit during the turn: kept, instructions only (program_edits.py)
    if after.notes:
        session.live.say(f"removed files the agent's turn left outside the editable paths: "
                         f"{', '.join(after.notes[:5])}{' ...' if len(after.notes) > 5 else ''}")
    if proposal is not None:
        proposal.planted = after.planted  # a module beside a script the engine runs would run as it
        proposal.refusal = "; ".join(after.refusals)
    return proposal


def guard(session: Session, proposal: Proposal | None = None) -> guards.Verdict:
    """Only editable files changed and they parse, no file was added outside them; the fixed
    files are as they were at start."""
    changed = session.repo.changed_paths()
    if proposal is not None and proposal.refusal:
        return guards.Verdict(False, changed, proposal.refusal)
    if proposal is not None and proposal.planted:
        return guards.Verdict(False, changed, planted_reason(proposal.planted, session.program.editable))
    if not changed:
        return guards.Verdict(False, [], "nothing changed")
    verdict = guards.check_proposal(changed, session.program.editable, session.repo.root)
    if verdict.ok:  # a rejected proposal is undone by git; what git cannot undo stops the loop
        session.fixed.check("before a run")
    return verdict


def planted_reason(planted: list[str], editable: list[str]) -> str:
    return (f"created files outside the editable paths: {', '.join(planted[:5])} (removed; editable: "
            f"{', '.join(editable)})")


def commit(session: Session, experiment: int, proposal: Proposal, changed: list[str],
           role: str = "candidate", extra: dict | None = None) -> str:
    message = f"{proposal.description}\n\nautoresearch experiment {experiment} ({session.tag})"
    sha = session.repo.commit(changed, message)
    pending = {"experiment": experiment, "commit": sha, "role": role, **_proposal_fields(proposal), **(extra or {})}
    session.write_pending(pending)
    return sha


def run_experiment(session: Session, experiment: int, seed: int, description: str, sha: str) -> runner.Outcome:
    """Run commit sha from the engine's own worktree of it (never the tree the agent edits);
    a run whose worktree is no longer exactly the commit afterwards is a crash that says why."""
    exp_dir = session.exp_dir(experiment)
    if exp_dir.exists():
        shutil.rmtree(exp_dir)  # a run cut short by a kill: it runs again from the start
    session.live.start(experiment, description, session.task.describe(), session.best_val,
                       session.ledger.rows, exp_dir)
    tree = session.snapshots().open(0, sha)
    before = worktrees.snapshot_state(tree.root)

    def on_tick(elapsed: float) -> None:
        session.live.tick(elapsed)
        session.follow(experiment)  # its training curve grows in TensorBoard while it runs

    outcome = session.task.run(exp_dir, seed, tree.root, child_record=session.child_record, on_tick=on_tick)
    outages.check_run(outcome, session.run_dir)  # a full disk stops the loop; the run is not its crash
    return checked_outcome(session, outcome, tree, sha, before)


def checked_outcome(session: Session, outcome: runner.Outcome, tree: Repo, sha: str, before: dict) -> runner.Outcome:
    """The outcome, or a crash when what ran is no longer commit sha (worktrees.verify_snapshot)
    or the engine's bytecode changed while it ran (then the bytecode prefix is replaced)."""
    problem = worktrees.verify_snapshot(tree, sha, before)
    if problem is not None:
        problem = f"what ran is not commit {sha[:7]}: its worktree changed during the run ({problem})"
    elif session.bytecode is not None and (changed := session.bytecode.check()):
        problem = f"the engine's bytecode cache changed during the run ({'; '.join(changed[:3])})"
    if problem is None:
        return outcome
    return dataclasses.replace(outcome, status="crash", error=problem)


def record(session: Session, experiment: int, sha: str | None, proposal: Proposal, outcome: runner.Outcome | None,
           role: str, seed: int, started: str, extra: dict | None = None, decision: dict | None = None) -> dict:
    """Decide and append the experiment's row: the moment it counts. A parallel worker whose base
    moved passes its own decision (engine/loop/workers.py), else decide() judges."""
    row = {**({} if outcome is None else _result_fields(outcome.result))}
    decision = decision or decide(session, experiment, role, outcome, extra or {}, sha)
    noise = session.ledger.noise_estimate()
    row.update({
        "experiment": experiment, "commit": sha, "description": proposal.description, "role": role,
        "seed": seed, "started": started, "finished": now_iso(), "train_path": TRAIN_FILE,
        "best_before": session.best_val, "noise": noise.sigma, "noise_df": noise.df, **_proposal_fields(proposal),
        **(extra or {}),
        **decision, "metric": session.task.metric, "direction": session.task.direction,
    })
    if outcome is not None:
        row.update({"wall_seconds": round(outcome.wall_seconds, 3), "returncode": outcome.returncode,
                    "error": outcome.error, "log": str(outcome.log_path.relative_to(session.run_dir))})
    session.ledger.append(row)
    session.pending_path.unlink(missing_ok=True)
    session.live.finish(row, row["best_after"], session.ledger.rows)
    session.track(row)
    return row


def keep_or_reset(session: Session, row: dict) -> None:
    """Keep: the branch stays on the experiment's commit. Otherwise back to the best commit,
    and the experiment's checkpoint is deleted (only kept ones are scored on test)."""
    if row.get("needs_rerun"):
        return  # the same commit runs again first
    if row.get("kept"):
        session.fixed.check("before keeping a result")
        if session.repo.head() != row["commit"] or session.repo.current_branch() != branch_name(session.tag):
            raise UserError(f"the branch moved while experiment {row['experiment']} ran (it is at "
                            f"{session.repo.head()[:7]} on {session.repo.current_branch()}, the kept commit is "
                            f"{row['commit'][:7]}): something outside the loop changed git; check "
                            f"`git log {branch_name(session.tag)}` and start the loop again")
        return
    _drop_checkpoint(session, row)
    best = session.ledger.best_commit()
    session.repo.reset_to(best if best else "HEAD")


def try_candidate(session: Session, proposal: Proposal, experiment: int, role: str = "candidate",
                  extra: dict | None = None) -> dict:
    """guard -> commit -> run -> record -> keep_or_reset for the proposal now in the working tree."""
    verdict = guard(session, proposal)
    if not verdict.ok:
        row = record(session, experiment, None, proposal, None, role, session.seed, now_iso(),
                     {**(extra or {}), "decision": verdict.reason})
        session.repo.restore()
        return row
    number = experiment + 1 if session.program.paired else experiment  # the best's paired run goes first
    sha = commit(session, number, proposal, verdict.changed, role, extra)
    return run_committed(session, experiment, sha, proposal, role, extra)


def run_committed(session: Session, experiment: int, sha: str, proposal: Proposal, role: str,
                  extra: dict | None = None, seed: int | None = None) -> dict:
    """Run a committed candidate (in paired mode after a run of the best), record it, keep or reset;
    while the sequential test finds it promising, run it again (up to max_runs)."""
    seed = session.seed if seed is None else seed
    extra = {**(extra or {}), **run_pair(session, seed)}
    experiment = session.ledger.next_experiment() if session.program.paired else experiment
    started = now_iso()
    outcome = run_experiment(session, experiment, seed, proposal.description, sha)
    row = record(session, experiment, sha, proposal, outcome, role, seed, started, extra)
    keep_or_reset(session, row)
    while row.get("needs_rerun"):
        row = rerun(session, row)
    confirm_best(session)
    return row


def rerun(session: Session, last: dict) -> dict:
    """The same commit with the next seed: one more look of the sequential test (decide.py)."""
    first = series_of(last)
    seed = last["seed"] + 1
    extra = {"rerun_of": first, **{k: last[k] for k in ("agent", "fix_of") if k in last}, **run_pair(session, seed)}
    experiment = session.ledger.next_experiment()
    description = last["description"].split(" (re-run of #")[0]
    proposal = Proposal(description=f"{description} (re-run of #{first}, seed {seed})",
                        hypothesis=last.get("hypothesis", ""), side=last.get("side", ""))
    started = now_iso()
    outcome = run_experiment(session, experiment, seed, proposal.description, last["commit"])
    row = record(session, experiment, last["commit"], proposal, outcome, "rerun", seed, started, extra)
    keep_or_reset(session, row)
    return row


def run_pair(session: Session, seed: int) -> dict:
    """Paired mode: run the best once, in a worktree of its commit, just before a candidate run;
    the candidate is judged on its gain over this run (drift cancels). {} when not paired or the
    run failed (the candidate then faces the unpaired test)."""
    best = session.ledger.best_commit()
    if not session.program.paired or best is None:
        return {}
    experiment = session.ledger.next_experiment()
    proposal = Proposal(description=f"best {best[:7]}, paired run")
    started = now_iso()
    outcome = run_experiment(session, experiment, seed, proposal.description, best)  # from its own worktree
    row = record(session, experiment, best, proposal, outcome, "pair", seed, started)
    value = row_value(row) if row.get("kept") else None
    return {} if value is None else {"pair_value": value, "pair_of": experiment}


def confirmations_due(session: Session) -> int:
    """Confirmation runs the best still needs: a kept change is measured `confirm_runs` times
    (baseline_runs by default) by runs that did not select it, and those set the best's value."""
    rows, wanted = session.ledger.rows, session.program.confirmations()
    changes = [r for r in rows if is_kept_change(r)]
    if not wanted or not changes or changes[-1].get("commit") != session.ledger.best_commit():
        return 0
    done = sum(1 for r in rows if r.get("role") == "confirm" and r.get("commit") == changes[-1]["commit"]
               and r["experiment"] > changes[-1]["experiment"])
    return max(wanted - done, 0)


def confirm_best(session: Session) -> None:
    """Run the due confirmation runs of the best (while experiments remain); a killed loop redoes
    the missing ones, since the ledger says how many ran."""
    while confirmations_due(session) and _room(session):
        experiment, best = session.ledger.next_experiment(), session.ledger.best_commit()
        done = session.program.confirmations() - confirmations_due(session)
        description = f"confirm {best[:7]} (run {done + 1} of {session.program.confirmations()})"
        seed = session.seed + experiment  # a fresh seed: the runs that selected it are not repeated
        started = now_iso()
        outcome = run_experiment(session, experiment, seed, description, best)
        row = record(session, experiment, best, Proposal(description=description), outcome, "confirm", seed, started)
        keep_or_reset(session, row)


def _room(session: Session) -> bool:
    limit = session.program.max_experiments
    return limit is None or len(session.ledger.rows) < limit


def run_baseline(session: Session) -> None:
    """Run the starting commit program.baseline_runs times, each with its own seed."""
    rows = session.ledger.rows
    crashed = [r for r in rows if r.get("role") == "baseline" and not r.get("kept")]
    if crashed:
        raise UserError(f"the baseline {crashed[0].get('status')} (experiment {crashed[0]['experiment']}: "
                        f"{crashed[0].get('error')}; log {session.run_dir / str(crashed[0].get('log'))}): "
                        f"{baseline_advice(session, str(crashed[0].get('status')))}")
    done = sum(1 for r in rows if r.get("role") == "baseline")
    for index in range(done, session.program.baseline_runs):
        experiment = session.ledger.next_experiment()
        description = "baseline" if index == 0 else f"baseline (run {index + 1} of {session.program.baseline_runs})"
        proposal = Proposal(description=description)
        started, seed, head = now_iso(), session.seed + index, session.repo.head()
        outcome = run_experiment(session, experiment, seed, description, head)
        row = record(session, experiment, head, proposal, outcome, "baseline", seed, started)
        if not row["kept"]:
            raise UserError(f"the baseline {row['status']}: {row.get('error')}; see "
                            f"{session.run_dir / row['log']} ({baseline_advice(session, row['status'])})")


def baseline_advice(session: Session, status: str) -> str:
    """What to do about a failed baseline. A timeout or an unscored run is about time, not
    about the code: the baseline's train.py is then not blamed."""
    if status == "timeout":
        return ("its train.py may be fine: allow more time with --timeout or timeout_seconds in program.md, "
                "or give a smaller budget, then use a new tag")
    if status == "unscored":
        return "training finished but scoring failed: see the log, then use a new tag"
    return f"fix {_what_to_fix(session)} and commit, then use a new tag"


def _what_to_fix(session: Session) -> str:
    return "the task's files or its check and score commands" if session.task.kind == "command" else "train.py"


def _proposal_fields(proposal: Proposal) -> dict:
    fields = {"description": proposal.description, "hypothesis": proposal.hypothesis,
              "prompt_tokens": proposal.prompt_tokens, "output_tokens": proposal.output_tokens,
              "cost_usd": proposal.cost_usd}
    return {**fields, "side": proposal.side} if proposal.side else fields


def _result_fields(result: dict) -> dict:
    fields = dict(result)
    fields["train_status"] = fields.pop("status", None)
    fields.pop("error", None)
    fields.pop("seed", None)
    peak = fields.get("peak_vram_mb")
    fields["memory_gb"] = peak / 1024 if isinstance(peak, (int, float)) else None
    return fields


def _drop_checkpoint(session: Session, row: dict) -> None:
    """Delete a discarded experiment's checkpoint; an unscored one stays for `autoresearch evaluate`."""
    if row.get("status") == "unscored":
        return
    """Only kept experiments keep their saved state (the report scores them on test)."""
    checkpoint = session.exp_dir(row["experiment"]) / "checkpoint"
    if checkpoint.is_dir():
        shutil.rmtree(checkpoint, ignore_errors=True)


def crash_log_tail(log: Path, lines: int = CRASH_LOG_LINES) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
