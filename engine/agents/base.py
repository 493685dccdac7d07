"""What every agent receives and returns. Agents edit the working tree in place."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Protocol


@dataclasses.dataclass
class ProposalRequest:
    repo_root: Path
    editable: list[str]  # paths relative to repo_root the agent may change
    program_text: str  # program.md as written by the human
    ledger: list[dict]  # results.jsonl rows of this tag, oldest first
    experiment: int  # number of the experiment about to run (baseline = 0)
    run_dir: Path  # runs/<tag>/ (notes.md lives here)
    hardware: str  # e.g. "cpu x2" or "NVIDIA H100 80GB HBM3 x1"
    budget: str  # e.g. "time 300 s"
    last_log: Path | None = None
    crash_log_tail: str | None = None  # set when asking the agent to fix a crashed idea
    bolder: bool = False  # set after many non-improvements in a row
    # ideas other workers are running now (description, hypothesis, worker): propose another
    in_flight: list[dict] = dataclasses.field(default_factory=list)
    # a swarm's recent rows from other workers (worker, status, val_bpb, description, hypothesis)
    swarm: list[dict] = dataclasses.field(default_factory=list)
    task_kind: str = "train"  # or "command" (program.md's ## Task section)
    metric: str = "val_bpb"  # the figure the loop judges by
    direction: str = "minimize"  # or "maximize"
    # the hybrid agent's tuner: what it found on the numbers of the current best (engine/agents/hybrid.py)
    tuner_summary: str = ""


@dataclasses.dataclass
class Proposal:
    description: str
    hypothesis: str = ""
    prompt_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    # files the agent created outside the editable paths (the loop removed them; the proposal is rejected)
    planted: list[str] = dataclasses.field(default_factory=list)
    side: str = ""  # the hybrid agent's side that proposed it: "llm" or "tune" (recorded in the row)
    # why the loop refuses it unrun (the turn moved git, or touched the engine's bytecode), or ""
    refusal: str = ""


class Agent(Protocol):
    name: str

    def propose(self, request: ProposalRequest) -> Proposal | None:
        """Edit files under request.repo_root; return None when there is nothing to try."""
        ...


def editable_paths(root: Path, editable: list[str]) -> list[str]:
    """The files the editable paths and globs name under root, in a stable order."""
    root, found = Path(root), []
    for glob in editable:
        matches = [glob] if (root / glob).is_file() else sorted(
            str(p.relative_to(root)) for p in root.glob(glob) if p.is_file())
        found += [m for m in matches if m not in found and not m.startswith("runs/")]
    return found
