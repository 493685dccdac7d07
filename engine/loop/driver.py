"""`autoresearch loop`: the baseline, then propose + step until a stopping criterion holds.

Never imports JAX: every experiment is a `autoresearch train` subprocess (engine/loop/runner.py).
"""
from __future__ import annotations

import time
from pathlib import Path

from engine.loop import cycle, outages
from engine.errors import UserError
from engine.loop.resume import resume
from engine.loop.session import Session, open_session
from engine.agents.choose import check_agent, make_agent
from engine.loop.live_view import format_val, keep_rate
from engine.loop.repo import branch_name
from engine.loop.standings import gain

MAX_EMPTY_PROPOSALS = 3  # an agent that proposes nothing this many times in a row is done
# An agent that fails (its service down, a non-zero exit) is waited for, not counted as empty:
# an outage of an hour must not end an overnight run (engine/loop/outages.py).


def stop_reason(session: Session, empty_proposals: int) -> str | None:
    """Why the loop stops now, or None to go on: program.md's stopping criteria (with the
    flags' overrides), then an agent that proposed nothing MAX_EMPTY_PROPOSALS times in a row."""
    program, ledger = session.program, session.ledger
    if program.max_experiments is not None and len(ledger.rows) >= program.max_experiments:
        return f"reached max_experiments {program.max_experiments}"
    if program.max_hours is not None and time.monotonic() - session.started >= program.max_hours * 3600:
        return f"reached max_hours {program.max_hours:g}"
    best, target = session.best_val, program.target_val_bpb
    if target is not None and best is not None and gain(target, best, session.task.direction) >= 0:
        return f"reached target_val_bpb {target:g} (best {best:.6f})"
    if program.patience is not None and ledger.misses_in_a_row() >= program.patience:
        return f"no improvement in {program.patience} experiments in a row (patience)"
    if program.max_cost_usd is not None and ledger.total_cost() > program.max_cost_usd:
        return f"agent cost ${ledger.total_cost():.2f} exceeds max_cost_usd {program.max_cost_usd:g}"
    if empty_proposals >= MAX_EMPTY_PROPOSALS:
        return f"the agent proposed nothing {empty_proposals} times in a row"
    return None


def one_experiment(session: Session, agent) -> str:
    """Propose and try one idea (with crash fix-ups): "tried", "empty" or "unavailable"."""
    experiment = session.ledger.next_experiment()
    proposal = cycle.propose(session, agent, experiment)
    if proposal is None or not (proposal.refusal or session.repo.changed_paths()):
        session.repo.restore()
        return "unavailable" if outages.agent_failed(agent) else "empty"
    row = cycle.try_candidate(session, proposal, experiment, extra={"agent": agent.name})
    fix_crashes(session, agent, row)
    return "tried"


def fix_crashes(session: Session, agent, row: dict) -> None:
    """Give an agent that can fix crashes the crashed code and its log, up to max_fix_attempts times."""
    attempts = 0
    while (row["status"] == "crash" and getattr(agent, "fixes_crashes", False) and row.get("commit")
           and attempts < session.program.max_fix_attempts and steps_left(session)):
        attempts += 1
        idea = row.get("fix_of", row["experiment"])
        session.repo.put_back(row["commit"])
        tail = cycle.crash_log_tail(session.run_dir / row["log"]) if row.get("log") else ""
        experiment = session.ledger.next_experiment()
        proposal = cycle.propose(session, agent, experiment, crash_log_tail=tail)
        if proposal is None or not (proposal.refusal or session.repo.changed_paths()):
            session.repo.restore()
            return
        row = cycle.try_candidate(session, proposal, experiment, role="fix",
                                  extra={"agent": agent.name, "fix_of": idea, "fix_attempt": attempts})


def steps_left(session: Session) -> bool:
    """Whether max_experiments leaves room for one more experiment."""
    limit = session.program.max_experiments
    return limit is None or len(session.ledger.rows) < limit


def main(args) -> int:
    """The loop; a full disk anywhere in it ends it with one line (engine/loop/outages.py)."""
    with outages.full_disk_stops(Path.cwd() / "runs"):
        return run_loop(args)


def run_loop(args) -> int:
    from engine.loop.swarm_loop import check_flags

    check_flags(args)
    check_agent(args.agent, args)
    session = open_session(args, switch_branch=True)  # every check before the first write
    way_back = None
    try:
        way_back = switch_checkout(session)
        agent = make_agent(args.agent, args, run_dir=session.run_dir, program=session.program)
        say_start(session, agent)
        reason = run(session, agent, args)
        say_end(session, reason, way_back)
        way_back = None
        return 0
    finally:
        if way_back:  # stopped by an error or an interrupt: still say where the checkout is
            session.live.say(way_back)
        session.close()


def run(session: Session, agent, args) -> str:
    """The loop in the mode the flags ask for, until a stopping criterion; its reason."""
    from engine.loop.swarm_loop import forget_cut_merge, run_swarm

    if getattr(args, "remote", None):
        forget_cut_merge(session)
    resume(session)
    if getattr(args, "remote", None):
        return run_swarm(session, agent, args, stop_reason)
    if getattr(args, "ray", None):
        return run_on_ray(session, agent, args)
    if (getattr(args, "workers", None) or 1) > 1:
        return run_parallel(session, agent, args)
    cycle.run_baseline(session)
    say_noise_settings(session)
    empty, failures = 0, outages.Outages(session.program.max_agent_failure_minutes)
    while (reason := stop_reason(session, empty) or failures.give_up_reason()) is None:
        if cycle.confirmations_due(session):  # a loop killed between a keep and its confirmations
            cycle.confirm_best(session)
            continue
        outcome = one_experiment(session, agent)
        empty = empty + 1 if outcome == "empty" else 0
        failures.after_turn(outcome, session.live.say)
    return reason


def switch_checkout(session: Session) -> str | None:
    """Move this checkout to autoresearch/TAG, saying so; the sentence that leads back, or None
    when it was already there."""
    repo, name = session.repo, branch_name(session.tag)
    before = repo.current_branch() or repo.head()[:12]
    if before == name:
        return None
    created = repo.checkout_branch(session.tag)
    session.live.say(f"switched this checkout from {before} to {'new ' if created else ''}branch {name}: "
                     "the loop edits and commits there")
    return f"this checkout is on {name}; `git checkout {before}` takes you back"


def run_parallel(session: Session, agent, args) -> str:
    """--workers N: one coordinator, N experiments in flight (engine/loop/workers.py)."""
    from engine.loop import device_split
    from engine.loop.workers import Coordinator

    if session.program.paired:
        raise UserError("paired: true under ## Noise runs the best beside each candidate run, which --workers "
                        "does not do yet: set `- paired: false`, or run one worker")
    devices = device_split.detect()
    split = device_split.split(devices, args.workers, getattr(args, "devices_per_worker", None))
    session.live.say(f"{args.workers} workers: " + "; ".join(
        f"w{d.index} on {d.describe(devices.platform)}" for d in split))
    return Coordinator(session, agent, split, devices.platform).run(stop_reason)


def run_on_ray(session: Session, agent, args) -> str:
    """--ray ADDRESS: one coordinator here, each experiment a task on the Ray cluster
    (engine/loop/ray_workers.py); --workers caps those in flight."""
    from engine.loop import ray_cluster
    from engine.loop.ray_workers import RayCoordinator

    ray = ray_cluster.require_ray()
    ray_cluster.connect(args.ray, ray_cluster.engine_packages())
    try:
        nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
        plan = ray_cluster.plan(nodes, getattr(args, "devices_per_worker", None), getattr(args, "workers", None))
        session.live.say(f"Ray cluster {args.ray}: {len(nodes)} nodes, {plan.describe()}")
        coordinator = RayCoordinator(session, agent, plan, getattr(args, "ray_checkpoints", None))
        return coordinator.run(stop_reason)
    finally:
        ray.shutdown()


def say_start(session: Session, agent) -> None:
    rows = session.ledger.rows
    resumed = f", resuming after experiment {rows[-1]['experiment']}" if rows else ""
    session.live.say(f"loop {session.tag} on branch {branch_name(session.tag)}: agent {agent.name}, "
                     f"{_task_words(session)}, hard timeout "
                     f"{session.task.hard_timeout():.0f} s{resumed}")


def say_noise_settings(session: Session) -> None:
    """The keep rule in force, and a warning when one baseline run leaves the noise unknown."""
    program = session.program
    session.live.say(f"keep rule: confidence {program.confidence:g}, up to {program.max_runs} runs per candidate, "
                     f"{'paired with the best' if program.paired else f'{program.confirmations()} confirmation runs per keep'}; "
                     f"noise {session.ledger.noise_estimate().describe()}")
    if program.baseline_runs < 2:
        session.live.say("warning: baseline_runs 1 leaves the run-to-run noise unknown: a candidate that gains is "
                         "run again to measure it, and the bound is wide until more commits have run twice "
                         "(set `- baseline_runs: 5` under ## Noise in program.md)")


def _task_words(session: Session) -> str:
    task = session.task
    return f"budget {task.describe()}" if task.kind == "train" else f"command task, {task.describe()}"


def say_end(session: Session, reason: str, way_back: str | None = None) -> None:
    rows = session.ledger.rows
    baselines = [r for r in rows if r.get("role") == "baseline"]
    baseline_mean = baselines[-1].get("best_after") if baselines else None  # mean of its runs
    session.live.say(f"stopped: {reason}. {len(rows)} experiments, {keep_rate(rows)}; baseline "
                     f"{format_val(baseline_mean)} -> best {format_val(session.best_val)}. "
                     f"Ledger: {session.run_dir / 'results.tsv'}" + (f". {way_back[0].upper()}{way_back[1:]}" if way_back else ""))
