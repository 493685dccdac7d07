"""`autoresearch experiment`: one loop step for an external agent that edited the files itself.

The agent (Claude Code, Codex, a script) edits train.py, then calls this: commit, run,
keep or reset, exactly as the loop would. A crashed idea is left in the working tree,
uncommitted, so the agent can fix it and call again.
"""
from __future__ import annotations

from pathlib import Path

from engine.agents.base import Proposal
from engine.errors import UserError
from engine.loop import cycle, guards, outages
from engine.loop.live_view import format_val
from engine.loop.repo import branch_name
from engine.loop.resume import resume
from engine.loop.session import Session, open_session
from engine.loop.standings import metric_of, row_value


def main(args) -> int:
    """One step; a full disk ends it with one line (engine/loop/outages.py)."""
    with outages.full_disk_stops(Path.cwd() / "runs"):
        return run_step(args)


def run_step(args) -> int:
    session = open_session(args)
    # no turns here to tell the human's edits of program.md from the agent's: it stays a file the
    # experiment may not change, refused (never discarded) as before
    session.repo.human_files, session.edits = [], None
    try:
        _uncommit_agent_commit(session)
        stashed = _set_aside_edits(session)
        if session.repo.current_branch() != branch_name(session.tag):
            session.repo.checkout_branch(session.tag)
        resume(session)
        ran_baseline = not session.ledger.rows
        cycle.run_baseline(session)
        if stashed:
            _bring_back_edits(session)
        if not session.repo.changed_paths():
            if ran_baseline:
                print_outcome(session, session.ledger.rows[-1])
                return 0
            raise UserError("nothing changed in the working tree: edit the editable files, then run "
                            f"`autoresearch experiment \"what you changed\" --tag {session.tag}`")
        experiment = session.ledger.next_experiment()
        row = cycle.try_candidate(session, Proposal(description=args.description), experiment,
                            extra={"agent": "external"})
        if row["status"] in ("crash", "timeout", "invalid") and row.get("commit"):
            session.repo.put_back(row["commit"])
            session.live.say("the crashed version is back in the working tree, uncommitted: fix it and run "
                             "`autoresearch experiment` again, or drop it with `git checkout -- train.py`")
        print_outcome(session, row)
        return 0 if row["status"] in ("keep", "discard") else 1
    finally:
        session.close()


def _uncommit_agent_commit(session: Session) -> None:
    """An agent that committed its edit on autoresearch/TAG itself: the commit becomes staged
    changes again, so the same guard judges it as an uncommitted edit (a commit the loop made
    and did not record, see resume.py, stays)."""
    repo, best = session.repo, session.ledger.best_commit()
    if repo.current_branch() != branch_name(session.tag) or not best:
        return
    head = repo.head()
    if head == best or head in {row.get("commit") for row in session.ledger.rows}:
        return
    if session.read_pending().get("commit") == head or not repo.is_ancestor(best, head):
        return
    session.live.say(f"your commit {head[:7]} on {branch_name(session.tag)} is judged as an uncommitted change")
    repo.git.reset("--soft", "-q", best)


def _set_aside_edits(session: Session) -> bool:
    """Stash an external agent's edits while the branch is set up and the baseline runs; edits
    outside the editable paths stop it with their names (they would be discarded, not run)."""
    changed = session.repo.changed_paths()
    if not changed:
        return False
    outside = [p for p in changed if not guards.is_editable(p, session.program.editable)]
    if outside:
        raise UserError(f"uncommitted changes to files the agent may not edit: {', '.join(outside[:5])} "
                        f"(editable: {', '.join(session.program.editable)}); commit or stash them first")
    session.repo.stash(f"autoresearch experiment ({session.tag})")
    return True


def _bring_back_edits(session: Session) -> None:
    try:
        session.repo.unstash()
    except Exception as error:  # GitPython raises GitCommandError; the stash stays for the user
        raise UserError(f"could not put your edits back on branch {branch_name(session.tag)} ({error}); "
                        "they are in `git stash list`") from None


def print_outcome(session: Session, row: dict) -> None:
    val = row_value(row)
    lines = [f"experiment {row['experiment']}: {row['status']}"
             + (f"  {metric_of(row)} {format_val(val)}" if val is not None else "")
             + f"  (best {format_val(row.get('best_after'))}, noise {session.noise:.6f})",
             f"  {row.get('decision', '')}"]
    if row.get("commit"):
        lines.append(f"  commit {row['commit'][:7]} on {branch_name(session.tag)}; "
                     f"log {session.run_dir / row['log']}" if row.get("log") else "")
    print("\n".join(line for line in lines if line.strip()))
