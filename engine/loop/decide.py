"""The keep-or-discard rule, in one place: a sequential test on the pooled noise (engine/loop/noise.py)."""
from __future__ import annotations

import dataclasses

from engine.loop.noise import Noise, Test, paired_test, pooled, sequential_test
from engine.loop.runner import Outcome
from engine.loop.session import Session
from engine.loop.standings import best_runs, gain as gain_of, pair_noise, row_value, runs_by_commit, series_rows


def decide(session: Session, experiment: int, role: str, outcome: Outcome | None, extra: dict,
           commit: str | None = None) -> dict:
    """Keep or discard one result: the rule every experiment is judged by.

    Not run (a guard refused it) -> rejected; a failed run -> its status (crash, timeout, ...);
    a command task whose check failed -> discard with the check's reason. A baseline run
    (status baseline) stays on the branch and the best becomes the mean of the baseline's runs; a
    confirmation run of a kept change (status confirm) stays and the best becomes the mean of its
    confirmation runs (runs that did not select it); a paired run of the best (status confirm)
    moves nothing. None of them is a kept change (engine/loop/standings.py). A candidate (a first run,
    a crash fix, or a re-run of either) faces the sequential test: kept when the mean of its
    runs beats the best's by more than the bound, run again while promising (up to
    `max_runs`, while experiments remain), else discarded. `commit` is the run's commit.
    """
    best = session.best_val
    if outcome is None:
        return _verdict("rejected", False, best, extra.get("decision", "not run"))
    if outcome.status == "check_failed":
        return _verdict("discard", False, best, f"check failed: {outcome.error}")
    if outcome.status != "ok":
        return _verdict(outcome.status, False, best, outcome.error or outcome.status)
    val = outcome.result[session.task.metric]
    rows = session.ledger.rows
    if role == "baseline":
        vals = [v for r in rows if r.get("role") == "baseline" and (v := row_value(r)) is not None]
        mean = (sum(vals) + val) / (len(vals) + 1)
        return _verdict("baseline", True, mean, "baseline" if not vals else f"baseline mean {mean:.6f}")
    if role == "confirm":
        return _confirm(session, val, commit)
    if role == "pair":
        return _verdict("confirm", True, best, f"the best run beside the next candidate run ({val:.6f})")
    test = judge(session, val, commit, extra)
    room = _room_for_one_more(session, experiment)
    action = "discard" if test.action == "rerun" and not room else test.action
    note = "" if action == test.action else " (no experiment left to run it again)"
    verdict = _verdict("keep" if action == "keep" else "discard", action == "keep",
                       test_mean(session, val, extra) if action == "keep" else best,
                       dataclasses.replace(test, action=action).describe(session.program.max_runs) + note)
    paired = {"pair_gain": gain_of(extra["pair_value"], val, session.task.direction)} \
        if extra.get("pair_value") is not None else {}
    return {**verdict, "needs_rerun": action == "rerun", **test_fields(test), **paired}


def judge(session: Session, val: float, commit: str | None, extra: dict) -> Test:
    """The sequential test's look at this run: its series so far plus this run, against the best."""
    program, rows, direction = session.program, session.ledger.rows, session.task.direction
    first = extra.get("rerun_of")
    earlier = [row_value(r) for r in series_rows(rows, first)] if first is not None else []
    if program.paired and extra.get("pair_value") is not None:
        earlier_gains = [r["pair_gain"] for r in series_rows(rows, first) if r.get("pair_gain") is not None] \
            if first is not None else []
        return paired_test(earlier_gains + [gain_of(extra["pair_value"], val, direction)], pair_noise(rows),
                           program.max_runs, program.confidence)
    return sequential_test(earlier + [val], best_runs(rows), noise_with(rows, commit, val), program.max_runs,
                           program.confidence, direction)


def noise_with(rows: list[dict], commit: str | None, val: float) -> Noise:
    """The pooled noise of the ledger with this run added to its commit's runs."""
    groups = runs_by_commit(rows)
    if commit:
        groups.setdefault(str(commit), []).append(val)
    return pooled(groups.values())


def test_mean(session: Session, val: float, extra: dict) -> float:
    """The mean of a candidate's runs with this one (its best_after until confirmation runs replace it)."""
    first = extra.get("rerun_of")
    values = [row_value(r) for r in series_rows(session.ledger.rows, first)] if first is not None else []
    values.append(val)
    return sum(values) / len(values)


def test_fields(test: Test) -> dict:
    """What the ledger row keeps of the test, for status and the report (gain and its interval)."""
    return {"gain": test.gain, "gain_low": test.low, "gain_high": test.high, "keep_bound": test.bound,
            "look": test.runs, "best_runs": test.best_runs, "noise_sigma": test.noise.sigma,
            "noise_df": test.noise.df}


def _confirm(session: Session, val: float, commit: str | None) -> dict:
    rows = session.ledger.rows
    best = next((r for r in reversed(rows) if r.get("kept")), None)
    if best is None or best.get("commit") != commit:
        return _verdict("discard", False, session.best_val, "confirmation of a commit that is no longer the best")
    runs = [row_value(r) for r in rows if r.get("role") == "confirm" and r.get("commit") == commit
            and r.get("experiment", -1) > _kept_at(rows, commit) and row_value(r) is not None] + [val]
    mean = sum(runs) / len(runs)
    return _verdict("confirm", True, mean, f"confirmation run {len(runs)}: the best is the mean of its "
                                        f"confirmation runs, {mean:.6f}")


def _kept_at(rows: list[dict], commit: str | None) -> int:
    kept = [r["experiment"] for r in rows if r.get("kept") and r.get("commit") == commit
            and r.get("role") not in ("confirm", "pair", "baseline", "adopted")]
    return kept[-1] if kept else -1


def _verdict(status: str, kept: bool, best_after, decision: str) -> dict:
    return {"status": status, "kept": kept, "best_after": best_after, "decision": decision, "needs_rerun": False}


def _room_for_one_more(session: Session, experiment: int) -> bool:
    limit = session.program.max_experiments
    return limit is None or experiment + 1 < limit

