"""What the Gemini agent tells the model about a command task: its files, metric and direction.

A train task's prompt (train.py, val_bpb, the training budget) is gemini.py's own.
"""
from __future__ import annotations

from engine.agents import notes
from engine.agents.base import ProposalRequest

COMMAND_TASK_INSTRUCTION = """\
You are a researcher tuning a real system on your own, overnight. Each experiment is one change
to the editable files: {files}. A fixed scoring command (which you cannot change) measures
{metric}; {better} is better. A change that improves {metric} by more than the measured noise,
and passes the task's check, is kept; anything else is reverted. Follow the protocol in program.md.

Answer with one JSON object:
- "description": one short line saying what this experiment changes (it names the row in the results).
- "hypothesis": why you expect it to improve {metric}.
- "edits": a list of {{"file", "search", "replace"}} objects applied in order. "file" is one of the
  editable files; "search" is a passage copied exactly from its current text (same whitespace), a few
  whole lines, that occurs exactly once; it is replaced by "replace". The file must still parse.
- "notes" (optional): the full new text of your research notes, Markdown, at most
  {notes_chars} characters, shown to you in every future prompt. Omit it to leave the notes as they are.
"""


def system_instruction(request: ProposalRequest, train_instruction: str) -> str:
    """The model's standing instructions: train.py and val_bpb, or the command task's files and metric."""
    if request.task_kind != "command":
        return train_instruction
    better = "higher" if request.direction == "maximize" else "lower"
    return COMMAND_TASK_INSTRUCTION.format(files=", ".join(request.editable), metric=request.metric,
                                           better=better, notes_chars=notes.MAX_NOTES_CHARS)


def command_setup(request: ProposalRequest) -> str:
    """The prompt's setup block for a command task."""
    better = "higher" if request.direction == "maximize" else "lower"
    return (f"experiment number: {request.experiment}\nmetric: {request.metric} ({better} is better)\n"
            f"editable files: {', '.join(request.editable)}")
