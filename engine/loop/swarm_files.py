"""The files of a swarm's ledger branch (autoresearch/TAG-ledger): their names, and their union.

- `workers/NAME.CLONE.jsonl`: one clone's rows, claims, hellos and byes, one JSON object a line,
  written by that clone alone. CLONE is 12 hex digits drawn once per clone of the repository
  (runs/TAG/swarm/clone.json), so two workers given the same NAME never write the same file.
- `workers/NAME.jsonl`: the same, as written before clone ids named the files (read, never
  written).
- `beats/NAME.CLONE.json`: the clone's heartbeat (engine/loop/heartbeat.py).
- `swarm.json`: what every worker's results are comparable on (engine/loop/swarm.py).

Every item names its worker and clone, so nothing depends on parsing a file name (a NAME may
hold dots). An item can sit in two files (an old-named file and its renamed successor); the
union counts it once.
"""
from __future__ import annotations

import json
from typing import Iterable

ROWS_FOLDER = "workers"
BEATS_FOLDER = "beats"
SWARM_FILE = "swarm.json"


def rows_file(name: str, clone: str) -> str:
    return f"{ROWS_FOLDER}/{name}.{clone}.jsonl"


def beat_file(name: str, clone: str) -> str:
    return f"{BEATS_FOLDER}/{name}.{clone}.json"


def parse_items(text: str) -> list[dict]:
    """The JSON objects of a file, one a line; a torn or foreign line is skipped."""
    items = []
    for line in text.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict):
            items.append(item)
    return items


def identity(item: dict) -> tuple:
    """What makes an item the same item wherever it is stored: a row is its clone's experiment, a
    claim its id, a hello or bye its clone's moment."""
    return tuple(str(item.get(key)) for key in ("worker", "clone", "record", "experiment", "claim", "at"))


def unique(items: Iterable[dict]) -> list[dict]:
    """items without repeats (the first of each identity), in order."""
    seen, kept = set(), []
    for item in items:
        key = identity(item)
        if key not in seen:
            seen.add(key)
            kept.append(item)
    return kept


def union_rows(texts: Iterable[str]) -> list[dict]:
    """Every result row in these worker files, each once."""
    return unique(item for text in texts for item in parse_items(text) if item.get("record") == "row")
