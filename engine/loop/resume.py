"""Resume after a kill: bring ledger and git into step, finishing or redoing what was cut short."""
from __future__ import annotations

from engine.agents.base import Proposal
from engine.errors import UserError
from engine.loop import cycle, guards
from engine.loop.repo import branch_name
from engine.loop.session import Session


def resume(session: Session) -> None:
    """Bring ledger and git into step after a kill: finish or redo what was cut short."""
    repo, ledger = session.repo, session.ledger
    dirty = repo.changed_paths()
    others = [path for path in dirty if not guards.is_editable(path, session.program.editable)]
    if others:
        raise UserError(f"uncommitted changes outside the editable paths ({', '.join(session.program.editable)}): "
                        f"{', '.join(others[:5])}{' ...' if len(others) > 5 else ''}. An interrupted step only "
                        "leaves changes to editable files, so these are yours: commit them (or stash them) and "
                        "start the loop again; nothing was discarded")
    if dirty:
        session.live.say(f"discarding uncommitted changes to editable files left by an interrupted step: "
                         f"{', '.join(dirty[:5])}")
        repo.restore()
    if not ledger.rows:
        return
    best, head, last = ledger.best_commit(), repo.head(), ledger.rows[-1]
    if head == best:
        return
    if head in {row.get("commit") for row in ledger.rows}:
        if last.get("commit") == head and last.get("needs_rerun"):
            session.live.say(f"resuming: re-run of experiment {last['experiment']} was cut short")
            row = cycle.rerun(session, last)
            while row.get("needs_rerun"):
                row = cycle.rerun(session, row)
        else:
            repo.reset_to(best)
        return
    if repo.parent(head) == best:
        verdict = guards.check_proposal(repo.changed_in(head), session.program.editable, repo.root)
        if not verdict.ok:  # made outside the loop (the loop commits only what passed): judged, not run
            raise UserError(f"commit {head[:7]} on {branch_name(session.tag)} was not made by the loop and "
                            f"{verdict.reason}, so it cannot run as an experiment. Move it off the branch "
                            f"(`git branch keep-{head[:7]} {head[:7]} && git reset --hard {best[:7]}`), then start "
                            "again; nothing was changed")
        _rerun_interrupted(session, head)
        return
    raise UserError(f"branch {branch_name(session.tag)} is at {head[:7]}, which the ledger of {session.run_dir} "
                    f"does not know (best is {str(best)[:7]}): reset the branch to {str(best)[:7]} or use a new tag")


def _rerun_interrupted(session: Session, head: str) -> None:
    pending = session.read_pending()
    if pending.get("commit") != head:
        pending = {"description": session.repo.message(head).split("\n", 1)[0], "role": "candidate"}
    experiment = session.ledger.next_experiment()
    session.live.say(f"resuming: experiment {experiment} ({pending['description']}) was cut short; running it again")
    proposal = Proposal(**{k: pending[k] for k in ("description", "hypothesis", "prompt_tokens", "output_tokens",
                                                   "cost_usd") if k in pending})
    extra = {k: pending[k] for k in ("fix_of", "agent") if k in pending}
    cycle.run_committed(session, experiment, head, proposal, pending.get("role", "candidate"), extra)
