"""A swarm worker's loop: the single loop, with a sync before each proposal and every row shared.

Each step: sync with the remote (engine/loop/swarm.py: fetch, adopt a better best, publish
ours); run a queued merge or verification if there is one; else ask the agent, showing it
the swarm's recent results and the ideas other workers have claimed, claim the idea, run it,
and share its rows.
"""
from __future__ import annotations

from engine.agents.base import Proposal
from engine.errors import UserError
from engine.loop import cycle
from engine.loop.session import Session
from engine.loop.outages import Outages, agent_failed
from engine.loop.swarm import Swarm

FINAL_SYNC_TRIES = 3


def check_flags(args) -> None:
    remote, worker = getattr(args, "remote", None), getattr(args, "worker", None)
    if bool(remote) != bool(worker):
        raise UserError("--remote URL and --worker NAME go together: a swarm worker needs both, "
                        "e.g. --remote git@host:team/research.git --worker tpu-a")
    if remote and getattr(args, "ray", None):
        raise UserError("--ray with --remote: a swarm worker runs its own experiments; use one or the other "
                        "(a team's cluster: --ray; machines of different owners: --remote)")
    if remote and (getattr(args, "workers", None) or 1) > 1:
        raise UserError(f"--workers {args.workers} with --remote: start one swarm worker per process "
                        "(give each its own --worker NAME and devices) instead")


def forget_cut_merge(session: Session) -> None:
    """A swarm worker killed while running a merged or adopted commit: that commit is not ours to
    resume (its parent is the swarm's best, not ours); back to our best, and the next sync redoes it."""
    best, head = session.ledger.best_commit(), session.repo.head()
    known = {row.get("commit") for row in session.ledger.rows}
    if best and head not in known and session.repo.parent(head) != best:
        session.live.say(f"swarm: a run of {head[:7]} (from the swarm) was cut short; back to our best {best[:7]}")
        session.repo.reset_to(best)


def run_swarm(session: Session, agent, args, stop_reason) -> str:
    """Baseline, then sync + one experiment until stop_reason names a reason; a last sync."""
    swarm = Swarm(session, args.remote, args.worker)
    swarm.start()
    try:
        return _work(session, agent, swarm, stop_reason)
    finally:
        swarm.heartbeat.stop()  # already stopped after a goodbye; on an error, beats end with us


def _work(session: Session, agent, swarm: Swarm, stop_reason) -> str:
    cycle.run_baseline(session)
    swarm.share_new()
    session.live.say(f"swarm worker {swarm.name}: remote {swarm.url}, best on {swarm.best_branch()}")
    empty, failures = 0, Outages(session.program.max_agent_failure_minutes)
    while (reason := stop_reason(session, empty) or failures.give_up_reason()) is None:
        swarm.sync()
        if stop_reason(session, empty) is not None:
            continue  # an adoption may have been the last experiment allowed
        if cycle.confirmations_due(session):
            cycle.confirm_best(session)
            swarm.share_new()
            continue
        merge = swarm.take_merge()
        if merge is not None:
            run_merge(session, agent, swarm, *merge)
            continue
        outcome = one_experiment(session, agent, swarm)
        empty = empty + 1 if outcome == "empty" else 0
        failures.after_turn(outcome, session.live.say)
    for _ in range(FINAL_SYNC_TRIES):
        swarm.sync(adopt=False)
        if swarm.online:
            break
    swarm.stop()
    if not swarm.online:
        session.live.say(f"swarm: the remote is still unreachable; {swarm.outbox} is pushed at the next start")
    return reason


def one_experiment(session: Session, agent, swarm: Swarm) -> str:
    experiment = session.ledger.next_experiment()
    proposal = cycle.propose(session, agent, experiment, in_flight=swarm.claims(), swarm=swarm.recent())
    if proposal is None or not (proposal.refusal or session.repo.changed_paths()):
        session.repo.restore()
        return "unavailable" if agent_failed(agent) else "empty"
    claim = swarm.claim(proposal.description, proposal.hypothesis)
    extra = {"agent": agent.name, "worker": swarm.name, "base_commit": session.ledger.best_commit()}
    cycle.try_candidate(session, proposal, experiment, extra=extra)
    swarm.share_new(claim)
    return "tried"


def run_merge(session: Session, agent, swarm: Swarm, sha: str, description: str) -> None:
    """Run a commit made elsewhere (our change merged onto the swarm's best, or a remote best to
    verify before adopting) as a candidate: kept only if it beats our best beyond noise."""
    experiment = session.ledger.next_experiment()
    source = description.split("'s best", 1)[0].removeprefix("verify ") if description.startswith("verify ") else None
    extra = {"agent": agent.name, "worker": swarm.name, "base_commit": session.ledger.best_commit(),
             **({"adopted_from": source, "verified_adoption": True} if source else {"merged_onto": sha})}
    claim = swarm.claim(description, "")
    session.repo.reset_to(sha)
    cycle.run_committed(session, experiment, sha, Proposal(description=description), "candidate", extra)
    swarm.share_new(claim)
