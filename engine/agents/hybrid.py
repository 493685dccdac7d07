"""`--agent gemini+tune` / `command+tune`: an LLM changes the structure, the tuner its numbers.

"+tune" reads as "this LLM, plus the tuner". The two take turns: one LLM proposal (a new
idea: an architecture, a schedule, a rule), then `tune_steps` proposals of the offline agent
(Optuna) on the numbers of the current best, then the LLM again. The turn is read from the
ledger (each row records its `side`), so a resumed loop goes on where it stopped. The tuner's
study covers only the current structure: the rows since the LLM's last kept change, that
change itself as the study's first trial. The LLM is shown what the tuner found (the numbers
it moved in the best, and its trials) in its prompt (`<tuner>`) or, for the command agent, in
the file AUTORESEARCH_TUNER names. A crash of the LLM's idea goes back to the LLM to fix; the
tuner's crashes are trials like any other. When the tuner has nothing left to try, the LLM
proposes.
"""
from __future__ import annotations

import dataclasses

from engine.agents.base import Proposal, ProposalRequest
from engine.agents.knobs import format_value, parse_changes
from engine.agents.trials import metric_of

LLM, TUNE = "llm", "tune"
TUNE_STEPS = 4  # tuner proposals between two LLM proposals (program.md: `- tune_steps: N`)
TRIALS_SHOWN = 12


class HybridAgent:
    def __init__(self, llm, tuner, tune_steps: int = TUNE_STEPS):
        self.llm = llm
        self.tuner = tuner
        self.tune_steps = tune_steps
        self.name = f"{llm.name}+tune"
        self._last_side = LLM

    @property
    def fixes_crashes(self) -> bool:
        """Only an LLM idea that crashed goes back for a fix; a crashed tuner trial is a bad trial."""
        return self._last_side == LLM and getattr(self.llm, "fixes_crashes", False)

    @property
    def last_outcome(self) -> str:
        return getattr(self.llm, "last_outcome", "") if self._last_side == LLM else ""

    def propose(self, request: ProposalRequest) -> Proposal | None:
        proposal = None
        if not request.crash_log_tail and next_side(request.ledger, self.tune_steps) == TUNE:
            proposal = self.tuner.propose(tuner_request(request))
            self._last_side = TUNE
        if proposal is None:
            self._last_side = LLM
            proposal = self.llm.propose(dataclasses.replace(request, tuner_summary=tuner_summary(request)))
        if proposal is not None:
            proposal.side = self._last_side
        return proposal


def side_of(row: dict) -> str:
    """The side that proposed a row; rows from before the hybrid count as the LLM's unless the
    offline agent made them."""
    return row.get("side") or (TUNE if row.get("agent") == "offline" else LLM)


def _proposed(ledger: list[dict]) -> list[dict]:
    return [row for row in ledger if row.get("role") in ("candidate", "fix")]


def next_side(ledger: list[dict], tune_steps: int) -> str:
    """The LLM first, then tune_steps tuner proposals, then the LLM again."""
    tuned = 0
    for row in reversed(_proposed(ledger)):
        if side_of(row) == LLM:
            return TUNE if tuned < tune_steps else LLM
        tuned += 1
    return LLM


def structure_rows(ledger: list[dict]) -> list[dict]:
    """The rows of the current structure: from the LLM's last kept change (or the baseline) on,
    the LLM's other rows left out (they tried another structure)."""
    start = 0
    for index, row in enumerate(ledger):
        if row.get("kept") and row.get("role") in ("candidate", "fix", "rerun") and side_of(row) == LLM:
            start = index
    rows = []
    for index, row in enumerate(ledger[start:]):
        if index == 0 and start > 0:
            rows.append({**row, "description": "", "role": "baseline"})  # the structure's first trial
        elif row.get("role") == "baseline" or side_of(row) == TUNE:
            rows.append(row)
    return rows


def tuner_request(request: ProposalRequest) -> ProposalRequest:
    return dataclasses.replace(request, ledger=structure_rows(request.ledger),
                               in_flight=[i for i in request.in_flight if parse_changes(i.get("description", ""))])


def tuner_summary(request: ProposalRequest) -> str:
    """What the tuner found on the current structure: the numbers it moved in the best, its trials."""
    rows = [row for row in structure_rows(request.ledger) if row.get("role") != "baseline"]
    if not rows:
        return ""
    moved: dict[str, list] = {}
    for row in rows:
        if row.get("kept"):
            for name, (old, new) in parse_changes(row.get("description", "")).items():
                moved.setdefault(name, [old, new])[1] = new
    kept = sum(1 for row in rows if row.get("kept"))
    lines = [f"The tuner (Optuna) ran {len(rows)} trials on the numbers of the current best since your last "
             f"kept change; {kept} kept."]
    if moved:
        lines.append("Numbers it changed in the best: " + ", ".join(
            f"{name} {_number(old)} -> {_number(new)}" for name, (old, new) in moved.items()))
    lines.append("Its trials, oldest first (experiment | status | " + request.metric + " | change):")
    for row in rows[-TRIALS_SHOWN:]:
        value = metric_of(row)
        lines.append(" | ".join([str(row.get("experiment", "?")), str(row.get("status", "?")),
                                 f"{value:.6f}" if value is not None else "-", str(row.get("description", ""))]))
    return "\n".join(lines)


def _number(value: float) -> str:
    return format_value(int(value) if float(value).is_integer() and abs(value) >= 1 else float(value))
