"""Search/replace edits from a model's answer: parse the answer, apply each edit exactly
once, and check the result still parses; an answer that does not apply says why."""
from __future__ import annotations

import ast
import difflib
import json
import re
from pathlib import Path

from engine.agents.base import editable_paths
from engine.errors import UserError
from engine.loop.guards import parse_problem


class EditError(Exception):
    """An answer that cannot be applied; its message goes back to the model."""


def retry_message(error: EditError) -> str:
    return (f"Your answer could not be applied: {error}\n\nNothing was changed; the files are as shown in "
            "the first message. Send the whole JSON object again, with every \"search\" copied exactly "
            "from the current file.")


def parse_answer(text: str, editable: list[str]) -> dict:
    """The answer's JSON object, checked for the fields the loop needs."""
    text = re.sub(r"^\s*```(?:json)?\s*|\s*```\s*$", "", text)
    try:
        answer = json.loads(text)
    except json.JSONDecodeError as error:
        raise EditError(f"the answer is not valid JSON ({error.msg} at line {error.lineno} column {error.colno})")
    if not isinstance(answer, dict):
        raise EditError("the answer must be a JSON object")
    if not isinstance(answer.get("description"), str) or not answer["description"].strip():
        raise EditError("\"description\" must be a non-empty string")
    edits = answer.get("edits")
    if not isinstance(edits, list) or not edits:
        raise EditError("\"edits\" must be a non-empty list of {\"search\", \"replace\"} objects")
    for number, edit in enumerate(edits, 1):
        if not isinstance(edit, dict) or not isinstance(edit.get("search"), str) \
                or not isinstance(edit.get("replace"), str):
            raise EditError(f"edit {number} must have string fields \"search\" and \"replace\"")
        if edit.get("file") not in (None, "", *editable):
            raise EditError(f"edit {number} names file {edit['file']!r}; only {', '.join(editable)} may change")
    if answer.get("notes") is not None and not isinstance(answer["notes"], str):
        raise EditError("\"notes\" must be a string")
    return answer


def apply_edits(files: dict[str, str], edits: list[dict], default_file: str) -> dict[str, str]:
    """The new text of every changed file. Each search must occur exactly once in the text as
    edited so far; the result must differ and, for Python, parse."""
    new = dict(files)
    for number, edit in enumerate(edits, 1):
        name = edit.get("file") or default_file
        search, text = edit["search"], new[name]
        if not search:
            raise EditError(f"edit {number}: \"search\" is empty")
        count = text.count(search)
        if count == 0:
            raise EditError(f"edit {number}: its \"search\" text is not in {name}{_closest_hint(search, text)}")
        if count > 1:
            raise EditError(f"edit {number}: its \"search\" text occurs {count} times in {name}; "
                            "include more surrounding lines so it is unique")
        new[name] = text.replace(search, edit["replace"], 1)
    changed = {name: text for name, text in new.items() if text != files[name]}
    if not changed:
        raise EditError("the edits leave every file unchanged")
    for name, text in changed.items():
        _check_parses(name, text)
    return changed


def _closest_hint(search: str, text: str) -> str:
    first = next((line for line in search.splitlines() if line.strip()), "")
    close = difflib.get_close_matches(first, text.splitlines(), n=1, cutoff=0.6)
    return f" (its first line is closest to this line of the file: {close[0]!r})" if close else ""


def _check_parses(name: str, text: str) -> None:
    if not name.endswith(".py"):
        problem = parse_problem(name, text)  # JSON, TOML, YAML
        if problem:
            raise EditError(f"after the edits {name} {problem}")
        return
    try:
        ast.parse(text, filename=name)
    except SyntaxError as error:
        raise EditError(f"after the edits {name} does not parse: {error.msg} at line {error.lineno}: "
                        f"{(error.text or '').strip()!r}")


def read_editable(repo: Path, editable: list[str]) -> dict[str, str]:
    files = {name: (repo / name).read_text(encoding="utf-8") for name in editable_paths(repo, editable)}
    if not files:
        raise UserError(f"none of the editable files {editable} exists in {repo}")
    return files


def primary_file(files: dict[str, str]) -> str:
    return "train.py" if "train.py" in files else next(iter(files))


def write_files(repo: Path, changed: dict[str, str]) -> None:
    for name, text in changed.items():
        (repo / name).write_text(text, encoding="utf-8")
