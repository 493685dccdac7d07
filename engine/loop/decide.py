"""The keep-or-discard rule, in one place."""
from __future__ import annotations

from engine.loop.runner import Outcome
from engine.loop.session import Session


def decide(session: Session, experiment: int, role: str, outcome: Outcome | None, extra: dict) -> dict:
    """Keep or discard one result: the rule every experiment is judged by.

    Not run (a guard refused it) -> rejected; a failed run -> its status (crash, timeout, ...);
    a baseline run is always kept, and the best becomes the mean of the baseline's runs. A
    candidate is kept when it beats the best by more than the noise (the spread of the
    baseline's runs); a smaller gain is re-run with another seed while experiments remain, and
    the re-run keeps the commit only if the two runs' mean beats the best.
    """
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
