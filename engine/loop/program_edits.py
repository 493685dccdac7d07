"""program.md belongs to the human: edits made while the loop runs are taken in, never reset.

The README invites the human to refine program.md overnight. The loop never resets, stashes or
commits it (Repo.human_files), never counts it as a change of the agent's, and reads it again
before each agent turn:

- An edit made outside an agent's turn (while an experiment runs, between turns) is the
  human's: it is taken in whole at the next turn, and the log says "program.md changed:
  instructions re-read".
- An edit that appears during an agent's turn may be the human's (turns of a coding agent take
  most of the night) or the agent's, and the loop cannot tell which. It is kept on disk and its
  instructions are re-read (they only steer the agent), but the settings it changed (editable
  paths, stopping criteria, noise, budget) are held: an agent must not be able to widen what it
  may edit or loosen the keep rule. A later edit outside a turn does not launder them: a held
  setting is taken in only once it is written again with another value outside a turn, or when
  the loop restarts.
- What is fixed for a tag (metric, direction, budget, a command task's score) is never taken
  from an edit: that change is refused with the message a restart would give and the edit stays
  on disk; the rest of the edit is taken in as above.
- An edit that does not parse is reported with its line, and the loop goes on as it was.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from engine.errors import UserError
from engine.loop import protocol, tasks

RE_READ = "program.md changed: instructions re-read"


class ProgramEdits:
    """Watches the session's program file; `before_turn` and `after_turn` bracket each agent turn."""

    def __init__(self, session, flags=None):
        self.session, self.flags = session, flags
        self.seen = self._key()
        self.refused: tuple | None = None  # the edit last refused, so its message is said once
        self.held: dict[str, object] = {}  # setting -> the value written during an agent's turn, not taken in

    def before_turn(self) -> None:
        """Take in an edit made since the last look (outside any turn: the human's)."""
        key = self._key()
        if key != self.seen:
            self.seen = key
            self._take_in(key, during_turn=False)

    def after_turn(self) -> None:
        """An edit made during the turn: its instructions are taken in, its settings are held."""
        key = self._key()
        if key != self.seen:
            self.seen = key
            self._take_in(key, during_turn=True)

    def _take_in(self, key: tuple, during_turn: bool) -> None:
        session, text = self.session, key[1]
        if text is None or text == session.program.text:
            return
        try:
            edited = protocol.apply_flags(protocol.parse(text, source=session.program_path.name), self.flags)
        except UserError as error:
            session.live.say(f"program.md changed but {error}: going on with the program as it was")
            return
        problem = fixed_for_tag(session, edited)
        if problem is not None:
            if self.refused != key:
                session.live.say(f"program.md changed, refused: {problem}; the loop goes on with the tag's "
                                 "metric, direction, budget and score, and your edit stays on disk")
            self.refused = key
            edited = keep_fixed(session.program, edited)
        edited, held = self._hold(edited, during_turn)
        self._adopt(edited)
        if not held:
            session.live.say(RE_READ)
            return
        session.live.say(f"{RE_READ}; {', '.join(held)} changed during an agent's turn and were not taken in (an "
                         "agent may not change settings): write them again between turns, or restart the loop, "
                         "to apply them")

    def _hold(self, edited: protocol.Program, during_turn: bool) -> tuple[protocol.Program, list[str]]:
        """The edited program with the settings an agent's turn may have written put back, and their names.

        During a turn every changed setting is held. Outside one a setting keeps being held while its
        value is still the one written during the turn; a value the human writes afresh is taken."""
        current = self.session.program
        if during_turn:
            for name in _setting_names():
                if getattr(edited, name) != getattr(current, name):
                    self.held[name] = getattr(edited, name)
        for name, value in list(self.held.items()):
            if getattr(edited, name) != value:
                del self.held[name]
        kept = {name: getattr(current, name) for name in self.held}
        return dataclasses.replace(edited, **kept), sorted(self.held)

    def _adopt(self, program: protocol.Program) -> None:
        session = self.session
        widened = program.editable != session.program.editable
        session.program = program
        session.repo.editable = list(program.editable)
        if widened:
            session.refingerprint()

    def _key(self) -> tuple:
        path = self.session.program_path
        try:
            return (path.stat().st_mtime_ns, path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            return (None, None)


def fixed_for_tag(session, edited: protocol.Program) -> str | None:
    """Why an edited program cannot be taken in mid-tag (its metric, direction or budget moved), or None."""
    old, new = tasks.make_task(session.program), tasks.make_task(edited)
    if (old.metric, old.direction) != (new.metric, new.direction):
        return (f"tag {session.tag} optimizes {old.metric} ({old.direction}) since its first experiment, but "
                f"{session.program_path.name} now says {new.metric} ({new.direction}): put the metric and "
                "direction back, or start a new tag for the new objective")
    moved_budget = session.program.budget_flag() != edited.budget_flag()
    moved_score = (session.program.task.kind, session.program.task.score) != (edited.task.kind, edited.task.score)
    if moved_budget or moved_score:
        return (f"tag {session.tag} runs under budget {session.program.describe_budget()}"
                f"{_task_words(session.program)}, but {session.program_path.name} now says "
                f"{edited.describe_budget()}{_task_words(edited)}: results under two budgets or scores are not "
                "comparable; put it back, or start a new tag")
    return None


def keep_fixed(old: protocol.Program, edited: protocol.Program) -> protocol.Program:
    """The edited program with the tag's metric, direction, budget and score put back."""
    task = dataclasses.replace(edited.task, kind=old.task.kind, metric=old.task.metric,
                               direction=old.task.direction, score=old.task.score)
    return dataclasses.replace(edited, task=task, budget_seconds=old.budget_seconds, budget_flops=old.budget_flops,
                               budget_tokens=old.budget_tokens)


def _task_words(program: protocol.Program) -> str:
    return f" scored by `{program.task.score}`" if program.task.is_command else ""


def _setting_names() -> list[str]:
    return [field.name for field in dataclasses.fields(protocol.Program) if field.name != "text"]


def human_file(program_path: Path, root: Path) -> str | None:
    """program.md's path relative to the repository, when it lies inside it."""
    try:
        return str(Path(program_path).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return None
