"""The knobs of the editable files: the numbers the offline agent tunes, and how it writes them.

In a Python file (train.py) a knob is a module-level UPPER_CASE number, or a number of an
UPPER_CASE settings table (`SIZE = dict(depth=4)` or `{"depth": 4}`, named `SIZE.depth`); in
a YAML, JSON, TOML or SQL file of a command task, every number (text_knobs.py), named by its
key path. With several editable files a knob's name starts with its file (`rules.yaml/threshold`).
A knob is a literal at a (line, byte column) span, so an edit replaces exactly that literal.

A proposal's description carries its changes as `NAME: OLD -> NEW, ...`; parse_changes reads
them back from the ledger.
"""
from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

from engine.agents.base import ProposalRequest, editable_paths
from engine.agents.text_knobs import find_text_knobs

NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
# NAME, TABLE.key, or a command task's key path (`retrieval.k1`, `rules.yaml/threshold`)
CHANGE = re.compile(r"(?<![\w./\-])([A-Za-z_][A-Za-z0-9_./\-]*): (-?[0-9][0-9.e+-]*) -> (-?[0-9][0-9.e+-]*)")
# Settings tables for one platform (CPU_SIZE = dict(depth=4, ...)) matter only on that platform.
PLATFORM_PREFIX = re.compile(r"^(CPU|GPU|TPU)_")
SKIP_NAMES = re.compile(r"SEED|VERSION|EVAL|LOG_EVERY|PRINT")


@dataclasses.dataclass(frozen=True)
class Knob:
    name: str
    value: int | float
    start: tuple[int, int]  # (line, byte column) of the literal, as ast reports them
    end: tuple[int, int]
    file: str = "train.py"  # relative to the repository root

    @property
    def is_int(self) -> bool:
        return isinstance(self.value, int)


def find_knobs(source: str) -> list[Knob]:
    """Module-level UPPER_CASE numbers, and the numbers of UPPER_CASE settings tables
    (`SIZE = dict(depth=4)` or `{"depth": 4}`), named `SIZE.depth`."""
    knobs = []
    for node in ast.parse(source).body:
        target, value = _simple_assignment(node)
        if target is None or not NAME.match(target) or SKIP_NAMES.search(target):
            continue
        for name, literal in [(target, value), *_table_entries(target, value)]:
            number = _number(literal)
            if number is not None:
                knobs.append(Knob(name, number, (literal.lineno, literal.col_offset),
                                  (literal.end_lineno, literal.end_col_offset)))
    return knobs


def _table_entries(target: str, value) -> list[tuple[str, ast.AST]]:
    if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "dict":
        return [(f"{target}.{kw.arg}", kw.value) for kw in value.keywords if kw.arg]
    if isinstance(value, ast.Dict):
        return [(f"{target}.{key.value}", item) for key, item in zip(value.keys, value.values)
                if isinstance(key, ast.Constant) and isinstance(key.value, str) and key.value.isidentifier()]
    return []


def for_platform(knobs: list[Knob], platform: str | None) -> list[Knob]:
    """Drop tables of other platforms (GPU_SIZE.depth does nothing in a CPU run)."""
    if not platform:
        return knobs
    keep = []
    for knob in knobs:
        match = PLATFORM_PREFIX.match(knob.name)
        if match is None or match.group(1).lower() == platform.lower():
            keep.append(knob)
    return keep


def _simple_assignment(node) -> tuple[str | None, ast.AST | None]:
    if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
        return node.targets[0].id, node.value
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
        return node.target.id, node.value
    return None, None


def _number(node) -> int | float | None:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _number(node.operand)
        return -inner if inner is not None else None
    return None


def format_value(value: int | float) -> str:
    if isinstance(value, int):
        return str(value)
    text = f"{value:.4g}"
    return text if any(c in text for c in ".en") else text + ".0"


def apply_values(source: str, knobs: dict[str, Knob], values: dict[str, int | float]) -> str:
    """Replace each named literal in source; edits go from the end so offsets stay valid."""
    lines = [line.encode() for line in source.splitlines(keepends=True)]
    for name in sorted(values, key=lambda n: knobs[n].start, reverse=True):
        knob = knobs[name]
        (line1, col1), (line2, col2) = knob.start, knob.end
        head, tail = lines[line1 - 1][:col1], lines[line2 - 1][col2:]
        text = format_value(values[name])
        if not knob.file.endswith(".py") and "e" in text and "." not in text:
            text = text.replace("e", ".0e", 1)  # YAML reads 1e-05 as a string, 1.0e-05 as a number
        lines[line1 - 1: line2] = [head + text.encode() + tail]
    return b"".join(lines).decode()


def file_knobs(path: str, source: str) -> list[Knob]:
    """The knobs of one editable file: UPPER_CASE constants in Python, every number elsewhere."""
    if path.endswith(".py"):
        return [dataclasses.replace(knob, file=path) for knob in find_knobs(source)]
    return [Knob(name, value, start, end, path) for name, value, start, end in find_text_knobs(path, source)
            if not SKIP_NAMES.search(name.upper())]


@dataclasses.dataclass
class Workspace:
    """The editable files of one proposal, their text, and their knobs by name."""
    root: Path
    sources: dict[str, str]  # path -> text
    knobs: dict[str, Knob]

    def write(self, values: dict[str, int | float]) -> str:
        """Write the new values into the files; returns the description `NAME: OLD -> NEW, ...`."""
        for path, source in self.sources.items():
            mine = {n: v for n, v in values.items() if self.knobs[n].file == path}
            if mine:
                (self.root / path).write_text(apply_values(source, self.knobs, mine))
        return ", ".join(f"{n}: {format_value(self.knobs[n].value)} -> {format_value(v)}"
                         for n, v in values.items())


def workspace(request: ProposalRequest, train_file: str = "train.py") -> Workspace:
    """The knobs a proposal may change: train.py's for a train task, every editable file's for a
    command task; tables of another platform than the ledger's last run are left out."""
    root = Path(request.repo_root)
    files = [train_file] if request.task_kind == "train" else editable_paths(root, request.editable)
    sources = {name: (root / name).read_text() for name in files}
    platform = next((row["platform"] for row in reversed(request.ledger) if row.get("platform")), None)
    knobs: dict[str, Knob] = {}
    for name, source in sources.items():
        for knob in file_knobs(name, source):
            knob = knob if len(files) == 1 else dataclasses.replace(knob, name=f"{name}/{knob.name}")
            knobs.setdefault(knob.name, knob)
    knobs = {knob.name: knob for knob in for_platform(list(knobs.values()), platform)}
    return Workspace(root, sources, knobs)


def parse_changes(description: str) -> dict[str, tuple[float, float]]:
    """`NAME: OLD -> NEW, ...` -> {NAME: (OLD, NEW)}; anything else in the text is ignored."""
    changes = {}
    for name, old, new in CHANGE.findall(description or ""):
        try:
            changes[name] = (float(old), float(new))
        except ValueError:
            continue
    return changes
