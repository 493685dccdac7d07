"""Numeric constants in YAML, JSON, TOML and SQL files, named by where they sit.

The offline agent searches these the way it searches train.py's UPPER_CASE constants:
each number a knob, named by its key path (`routing.billing.weight`, `retrieval.k1`,
the index of a list item as `keywords.2`), by its PRAGMA in SQL (`cache_size`), and
in any other text by a `name = number` or `name: number` line. Positions are
(line, byte column) pairs, as Python's `ast` gives them, so one function applies an
edit to any of these files. Comments are skipped; a value that is not a plain number
(a string, a date, a version) is not a knob.
"""
from __future__ import annotations

import re
from pathlib import Path

NUMBER = r"-?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?"
_NUMBER_ALONE = re.compile(rf"^{NUMBER}$")
# key: value  (YAML), with an optional comment after the value
_YAML_PAIR = re.compile(rf"^(\s*)(?:-\s+)?([A-Za-z_][\w\-]*|\"[^\"]+\"|'[^']+')\s*:\s*({NUMBER})?\s*(?:#.*)?$")
_YAML_ITEM = re.compile(rf"^(\s*)-\s+({NUMBER})\s*(?:#.*)?$")
_FLOW_PAIR = re.compile(rf"([A-Za-z_][\w\-]*|\"[^\"]+\"|'[^']+')\s*:\s*({NUMBER})(?=\s*[,}}])")
_TOML_TABLE = re.compile(r"^\s*\[+\s*([A-Za-z0-9_.\-\"' ]+?)\s*\]+\s*(?:#.*)?$")
_TOML_PAIR = re.compile(rf"^\s*([A-Za-z_][\w\-.]*)\s*=\s*({NUMBER})\s*(?:#.*)?$")
_PRAGMA = re.compile(rf"\bPRAGMA\s+(?:\w+\.)?(\w+)\s*=\s*({NUMBER})", re.IGNORECASE)
_GENERIC = re.compile(rf"^\s*([A-Za-z_][\w\-.]*)\s*[:=]\s*({NUMBER})\s*[;,]?\s*(?:(?:#|--|//).*)?$")
_JSON_TOKEN = re.compile(rf'"(?:[^"\\]|\\.)*"|{NUMBER}|[{{}}\[\],:]|true|false|null')

_SAFE = re.compile(r"[^A-Za-z0-9_./\-]+")

Found = tuple[str, int | float, tuple[int, int], tuple[int, int]]  # name, value, start, end


def find_text_knobs(path: str, source: str) -> list[Found]:
    """The numbers of a YAML, JSON, TOML or SQL file (by suffix), or of `name = number` lines."""
    suffix = Path(path).suffix.lower()
    finder = {".yaml": _yaml, ".yml": _yaml, ".json": _json, ".toml": _toml, ".sql": _sql}.get(suffix, _generic)
    found, seen = [], set()
    for name, text, line, start_col, end_col, raw_line in finder(source):
        name = _SAFE.sub("_", name).strip("_") or "value"  # a name the agent's descriptions can carry
        if name in seen:
            continue  # the first of a repeated name is the knob
        seen.add(name)
        start = len(raw_line[:start_col].encode())
        end = len(raw_line[:end_col].encode())
        found.append((name, parse_number(text), (line, start), (line, end)))
    return found


def parse_number(text: str) -> int | float:
    return float(text) if any(c in text for c in ".eE") else int(text)


def _yaml(source: str):
    stack: list[tuple[int, str]] = []  # (indent, key) of the mappings above this line
    items: dict[tuple, int] = {}  # list item counters per parent path
    for number, line in enumerate(source.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped in ("---", "..."):
            continue
        indent = len(line) - len(line.lstrip())
        item = _YAML_ITEM.match(line)
        if item:
            stack = [(i, k) for i, k in stack if i < indent]
            parent = tuple(k for _, k in stack)
            index = items.get(parent, 0)
            items[parent] = index + 1
            yield _join(*parent, str(index)), item.group(2), number, item.start(2), item.end(2), line
            continue
        pair = _YAML_PAIR.match(line)
        if pair:
            key_indent = len(pair.group(1)) + (2 if stripped.startswith("- ") else 0)
            stack = [(i, k) for i, k in stack if i < key_indent]
            key = pair.group(2).strip("\"'")
            if pair.group(3) is not None:
                yield _join(*(k for _, k in stack), key), pair.group(3), number, pair.start(3), pair.end(3), line
            else:
                stack.append((key_indent, key))
            continue
        flow = re.match(r"^(\s*)([A-Za-z_][\w\-]*)\s*:\s*\{(.*)\}\s*(?:#.*)?$", line)
        if flow:
            stack = [(i, k) for i, k in stack if i < indent]
            parent = [k for _, k in stack] + [flow.group(2)]
            for match in _FLOW_PAIR.finditer(line, flow.start(3)):
                yield (_join(*parent, match.group(1).strip("\"'")), match.group(2), number,
                       match.start(2), match.end(2), line)


def _json(source: str):
    """A token walk that tracks the key path; JSON has no comments."""
    stack: list[list] = []  # [kind, key or index]
    pending_key = None
    line_starts = [0] + [i + 1 for i, c in enumerate(source) if c == "\n"]
    for match in _JSON_TOKEN.finditer(source):
        token = match.group(0)
        if token in "{[":
            stack.append([token, 0, pending_key])  # kind, index in an array, key it sits under
            pending_key = None
        elif token in "}]":
            if stack:
                stack.pop()
        elif token == ":":
            continue
        elif token == ",":
            if stack and stack[-1][0] == "[":
                stack[-1][1] += 1
        elif token.startswith('"'):
            rest = source[match.end():match.end() + 40].lstrip()
            if stack and stack[-1][0] == "{" and rest.startswith(":"):
                pending_key = token[1:-1]
        elif _NUMBER_ALONE.match(token):
            name = _join(*_json_path(stack), pending_key if stack and stack[-1][0] == "{" else None)
            pending_key = None
            line = _line_of(line_starts, match.start())
            raw = source[line_starts[line - 1]:].split("\n", 1)[0]
            col = match.start() - line_starts[line - 1]
            yield name, token, line, col, col + len(token), raw
        else:
            pending_key = None


def _json_path(stack: list[list]) -> list[str]:
    path = []
    for kind, index, key in stack:
        if key is not None:
            path.append(key)
        if kind == "[":
            path.append(str(index))
    return path


def _line_of(line_starts: list[int], offset: int) -> int:
    low, high = 0, len(line_starts) - 1
    while low < high:
        mid = (low + high + 1) // 2
        if line_starts[mid] <= offset:
            low = mid
        else:
            high = mid - 1
    return low + 1


def _toml(source: str):
    table = ""
    for number, line in enumerate(source.splitlines(), 1):
        header = _TOML_TABLE.match(line)
        if header:
            table = header.group(1).replace('"', "").replace("'", "")
            continue
        pair = _TOML_PAIR.match(line)
        if pair:
            yield _join(table, pair.group(1)), pair.group(2), number, pair.start(2), pair.end(2), line


def _sql(source: str):
    """PRAGMA settings (`PRAGMA cache_size = 4096`), outside `--` comments."""
    for number, line in enumerate(source.splitlines(), 1):
        code = line.split("--", 1)[0]
        for match in _PRAGMA.finditer(code):
            yield match.group(1).lower(), match.group(2), number, match.start(2), match.end(2), line


def _generic(source: str):
    for number, line in enumerate(source.splitlines(), 1):
        pair = _GENERIC.match(line)
        if pair:
            yield pair.group(1), pair.group(2), number, pair.start(2), pair.end(2), line


def _join(*parts) -> str:
    return ".".join(str(p) for p in parts if p not in (None, ""))
