"""Standings: the facts every part derives from ledger rows, defined once.

"Kept change" means one thing everywhere (the live line, `status`, the report, results.tsv):
a candidate the keep rule kept. The baseline's runs, a kept change's confirmation runs, the
best's paired runs and a swarm's adoptions also leave the branch where it is, but they change
nothing: their status word is `baseline`, `confirm` or `adopted`, never `keep` (`status_word`
reads older ledgers, whose baseline rows say keep, the same way). `tally` counts the rows, and
`tally_line` says the counts in the words every view prints.

"Best" means one thing everywhere (the loop, status, report, sample): the last kept row.
The loop keeps a row only when it beats the best so far, so the branch head is the last
kept row; its score is `best_after`, which for the baseline and for a change confirmed by
a re-run is a mean over runs, not the lowest single run.
"""
from __future__ import annotations

import math

from engine.loop.noise import Noise, pooled

# Rows that measure their commit again without proposing anything: a kept change's confirmation
# runs and, in paired mode, the best's run beside each candidate run. Kept (the branch stays on
# their commit) but no change of their own.
MEASUREMENT_ROLES = ("confirm", "pair")
FAILED = ("crash", "timeout", "invalid", "rejected", "unscored")


def finite(value) -> float | None:
    """A real number, or None for missing, NaN or infinite figures."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


# The status words of rows that measure without proposing a change (see `status_word`).
MEASUREMENT_WORDS = ("baseline", "confirm", "adopted")


def is_kept(row: dict) -> bool:
    """The branch stayed on the row's commit (a kept change, or a baseline, confirmation or adoption)."""
    return bool(row.get("kept", row.get("status") in ("keep", *MEASUREMENT_WORDS)))


def status_word(row: dict) -> str:
    """The row's status as every view names it: `baseline` for a scored run of the starting commit,
    `confirm` for a kept run that measured the best again (a confirmation or a paired run),
    `adopted` for a swarm's adoption of another worker's best; otherwise the recorded status
    (keep, discard, crash, ...). Older ledgers recorded the first three as keep."""
    status = str(row.get("status", "unknown"))
    if status not in ("keep", *MEASUREMENT_WORDS):
        return status
    if is_baseline(row):
        return "baseline"
    if row.get("role") in MEASUREMENT_ROLES:
        return "confirm"
    if row.get("role") == "adopted":
        return "adopted"
    return status


def is_kept_change(row: dict) -> bool:
    """A kept row that changed something: not a baseline run, a confirmation, a pair or an adoption."""
    return is_kept(row) and not is_baseline(row) and row.get("role") not in (*MEASUREMENT_ROLES, "adopted")


def is_baseline(row: dict) -> bool:
    return row.get("role") == "baseline" if "role" in row else row.get("experiment") == 0


def metric_of(row: dict) -> str:
    """The name of the figure a row was judged by: val_bpb, or a command task's metric."""
    return str(row.get("metric") or "val_bpb")


def row_value(row: dict) -> float | None:
    """The row's own figure (val_bpb, or its command task's metric)."""
    return finite(row.get(metric_of(row)))


def direction_of(rows: list[dict]) -> str:
    """minimize or maximize: what the rows' task asked for (minimize when no row says)."""
    for row in reversed(rows):
        if row.get("direction") in ("minimize", "maximize"):
            return row["direction"]
    return "minimize"


def metric_name(rows: list[dict]) -> str:
    """The metric of a loop's rows: the one its scored rows name (val_bpb for a train task)."""
    for row in reversed(rows):
        if row.get("metric"):
            return str(row["metric"])
    return "val_bpb"


def row_objective(row: dict) -> tuple[str, str] | None:
    """(metric, direction) a row was recorded under, or None for a row of an older ledger that
    does not say (only scored rows of command tasks did)."""
    if row.get("metric") and row.get("direction") in ("minimize", "maximize"):
        return str(row["metric"]), str(row["direction"])
    return None


def tag_objective(rows: list[dict]) -> tuple[str, str] | None:
    """A tag's metric and direction, fixed by its first row (older ledgers: by the rows that say)."""
    if not rows:
        return None
    return row_objective(rows[0]) or (metric_name(rows), direction_of(rows))


def objective_conflicts(rows: list[dict]) -> list[str]:
    """Rows recorded under another metric or direction than the tag's first row, in words."""
    fixed = tag_objective(rows)
    return [f"experiment {row.get('experiment')}: {' '.join(other)}" for row in rows
            if (other := row_objective(row)) is not None and fixed is not None and other != fixed]


def gain(best: float, value: float, direction: str = "minimize") -> float:
    """How much value improves on best: positive is better, whichever way the metric points."""
    return value - best if direction == "maximize" else best - value


def score(row: dict) -> float | None:
    """The figure the loop compared: for a kept row the best after it, else its own value."""
    after = finite(row.get("best_after"))
    if is_kept(row) and after is not None:
        return after
    return row_value(row)


def best_row(rows: list[dict]) -> dict | None:
    """The best so far: the last kept row that has a score."""
    kept = [row for row in rows if is_kept(row) and score(row) is not None]
    return kept[-1] if kept else None


def best_value(rows: list[dict]) -> float | None:
    best = best_row(rows)
    return score(best) if best is not None else None


def best_commit(rows: list[dict]) -> str | None:
    best = best_row(rows)
    return best.get("commit") if best is not None else None


def baseline_rows(rows: list[dict]) -> list[dict]:
    """Every run of the starting commit (the loop runs it more than once to measure noise)."""
    return [row for row in rows if is_baseline(row)]


def baseline_value(rows: list[dict]) -> float | None:
    """The mean of the baseline's runs."""
    values = [v for v in (row_value(r) for r in baseline_rows(rows)) if v is not None]
    return sum(values) / len(values) if values else None


def runs_by_commit(rows: list[dict]) -> dict[str, list[float]]:
    """Every measured value of each commit (adopted rows copy another worker's value: left out)."""
    groups: dict[str, list[float]] = {}
    for row in rows:
        value = row_value(row)
        if value is None or row.get("role") == "adopted" or row.get("status") in FAILED or not row.get("commit"):
            continue
        groups.setdefault(str(row["commit"]), []).append(value)
    return groups


def noise_estimate(rows: list[dict]) -> Noise:
    """Run-to-run noise pooled over every commit run more than once, with its degrees of freedom."""
    return pooled(runs_by_commit(rows).values())


def noise(rows: list[dict]) -> float:
    """Run-to-run noise as one run's standard deviation (0 until some commit has run twice)."""
    return noise_estimate(rows).sigma


def series_of(row: dict) -> int | None:
    """The experiment that started a candidate's runs (its first run), for any of them."""
    return row.get("rerun_of", row.get("experiment"))


def series_rows(rows: list[dict], first: int) -> list[dict]:
    """A candidate's scored runs: its first run and every re-run of it, oldest first."""
    return [r for r in rows if row_value(r) is not None and r.get("status") not in FAILED
            and (r.get("experiment") == first or r.get("rerun_of") == first)]


def best_runs(rows: list[dict]) -> list[float]:
    """The values behind the best's score, from runs that did not select it: the baseline's runs,
    or a kept change's confirmation runs; while none has run yet (a parallel loop), the runs
    that selected it (biased up, so the bar is higher, never lower)."""
    best = best_row(rows)
    if best is None:
        return []
    commit = best.get("commit")
    changes = [r for r in rows if is_kept_change(r) and r.get("commit") == commit]
    if not changes:  # the starting commit (or an adopted one): none of its runs selected it
        return runs_by_commit(rows).get(str(commit), []) or [score(best)]
    keep_at = changes[-1]["experiment"]
    later = [v for r in rows if r.get("role") in MEASUREMENT_ROLES and r.get("commit") == commit
             and r.get("experiment", -1) > keep_at and (v := row_value(r)) is not None]
    if later:
        return later
    return [v for r in series_rows(rows, series_of(changes[-1])) if (v := row_value(r)) is not None] or [score(best)]


def pair_noise(rows: list[dict]) -> Noise:
    """The noise of one paired difference: pooled over paired candidates with two or more pairs;
    until one exists, twice the commits' pooled variance (drift inflates it: conservative)."""
    groups: dict[int, list[float]] = {}
    for row in rows:
        if finite(row.get("pair_gain")) is not None:
            groups.setdefault(series_of(row), []).append(float(row["pair_gain"]))
    own = pooled(groups.values())
    if own.known:
        return own
    commits = noise_estimate(rows)
    return Noise(2 * commits.variance, commits.df)


def count_statuses(rows: list[dict], statuses: tuple[str, ...]) -> dict[str, int]:
    """Rows per status word (`status_word`), every word of `statuses` present, zero or not."""
    counts = {status: 0 for status in statuses}
    for row in rows:
        status = status_word(row)
        counts[status] = counts.get(status, 0) + 1
    return counts


def is_candidate(row: dict) -> bool:
    """A run (or a guard's refusal) of a proposed change: not a baseline, confirmation, pair or adoption."""
    return not is_baseline(row) and row.get("role") not in (*MEASUREMENT_ROLES, "adopted")


def candidate_outcomes(rows: list[dict]) -> list[dict]:
    """The row that decided each candidate: its last run (a re-run series counts once; a first run
    still waiting for its re-run is not decided yet)."""
    return [row for row in rows if is_candidate(row) and not row.get("needs_rerun")]


def tally(rows: list[dict]) -> dict:
    """What the rows hold, counted once for every view.

    experiments: every row; baseline_runs, confirmations (confirmation and paired runs of the best),
    adopted: rows that change nothing; candidates: proposed changes decided (a candidate and its
    re-runs count once); reruns: runs of a candidate after its first; kept: kept changes;
    outcomes: decided candidates per status word (keep, discard, crash, timeout, rejected, ...);
    undecided: candidates whose last run asked for a re-run that has not run yet.
    """
    decided = candidate_outcomes(rows)
    outcomes: dict[str, int] = {}
    for row in decided:
        outcomes[status_word(row)] = outcomes.get(status_word(row), 0) + 1
    return {"experiments": len(rows),
            "baseline_runs": sum(1 for r in rows if is_baseline(r)),
            "confirmations": sum(1 for r in rows if r.get("role") in MEASUREMENT_ROLES),
            "adopted": sum(1 for r in rows if r.get("role") == "adopted"),
            "candidates": len(decided),
            "reruns": sum(1 for r in rows if is_candidate(r) and r.get("rerun_of") is not None),
            "kept": sum(1 for r in rows if is_kept_change(r)),
            "outcomes": outcomes,
            "undecided": sum(1 for last in _last_of_each_series(rows) if last.get("needs_rerun"))}


def _last_of_each_series(rows: list[dict]) -> list[dict]:
    last: dict = {}
    for row in rows:
        if is_candidate(row):
            last[series_of(row)] = row
    return list(last.values())


def keep_rate_words(counts: dict) -> str:
    """E.g. "2 kept of 7 candidates" (the baseline and confirmation runs are never counted as kept)."""
    n = counts["candidates"]
    return f"{counts['kept']} kept of {n} candidate{'s' if n != 1 else ''}"


def tally_line(counts: dict) -> str:
    """E.g. "12 experiments: 2 baseline runs; 7 candidates (2 kept, 3 discard, 1 crash, 1 rejected),
    2 re-runs; 1 confirmation"."""
    parts = [f"{counts['baseline_runs']} baseline run{'s' if counts['baseline_runs'] != 1 else ''}"]
    outcomes = ", ".join(f"{n} {'kept' if word == 'keep' else word}" for word, n in counts["outcomes"].items())
    candidates = keep_rate_words(counts).split(" of ", 1)[1]
    parts.append(candidates + (f" ({outcomes})" if outcomes else "")
                 + (f", {counts['reruns']} re-run{'s' if counts['reruns'] != 1 else ''}" if counts["reruns"] else "")
                 + (f", {counts['undecided']} awaiting a re-run" if counts["undecided"] else ""))
    if counts["confirmations"]:
        parts.append(f"{counts['confirmations']} confirmation run{'s' if counts['confirmations'] != 1 else ''}")
    if counts["adopted"]:
        parts.append(f"{counts['adopted']} adopted")
    return f"{counts['experiments']} experiment{'s' if counts['experiments'] != 1 else ''}: " + "; ".join(parts)


def misses_in_a_row(rows: list[dict]) -> int:
    """Candidates since the last keep that did not improve (rejected ones included);
    a first run waiting for its re-run does not count."""
    count = 0
    for row in reversed(rows):
        if is_kept(row):
            break
        if not row.get("needs_rerun"):
            count += 1
    return count


def total_cost(rows: list[dict]) -> float:
    return sum(float(row.get("cost_usd") or 0.0) for row in rows)


SIDES = {"llm": "LLM", "tune": "tuner", "offline": "tuner", "gemini": "LLM", "command": "command agent",
         "external": "human"}


def side_of(row: dict) -> str:
    """Who proposed a row, in words: LLM, tuner, command agent or human; "-" for a run that proposes
    nothing (baseline, confirmation, adoption). The hybrid agent records its side; other rows their agent."""
    if not is_candidate(row):
        return "-"
    return SIDES.get(str(row.get("side") or ""), SIDES.get(str(row.get("agent") or ""), str(row.get("agent") or "-")))
