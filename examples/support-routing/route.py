"""The fixed router of the support-routing task: it applies rules.yaml to a ticket.

A ticket's score for a category is the category's `bias`, plus the weight of every
keyword that occurs in it (as a whole word or the start of one, case-insensitive,
each counted once), plus the weight of every regex that matches. The ticket goes to
the highest-scoring category; when no score reaches `threshold`, to `default`.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
TAXONOMY = ("account", "billing", "returns", "sales", "shipping", "technical")


class RulesError(ValueError):
    """rules.yaml is not a valid rule set; the message says what and where."""


def load_rules(path: Path) -> dict:
    import yaml
    try:
        rules = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as error:
        raise RulesError(f"{path} is not valid YAML: {' '.join(str(error).split())}") from None
    return compile_rules(rules)


def _number(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RulesError(f"{where} must be a finite number, not {value!r}")
    return float(value)


def compile_rules(rules) -> dict:
    if not isinstance(rules, dict) or not isinstance(rules.get("categories"), dict):
        raise RulesError("rules need a `categories` mapping")
    default = rules.get("default")
    if default not in TAXONOMY:
        raise RulesError(f"default {default!r} is not one of {', '.join(TAXONOMY)}")
    compiled = {"threshold": _number(rules.get("threshold", 0), "threshold"), "default": default, "categories": {}}
    for name, spec in rules["categories"].items():
        if name not in TAXONOMY:
            raise RulesError(f"category {name!r} is not one of {', '.join(TAXONOMY)}")
        spec = spec or {}
        keywords = [(re.compile(rf"\b{re.escape(str(word).lower())}"), _number(weight, f"{name}.keywords.{word}"))
                    for word, weight in (spec.get("keywords") or {}).items()]
        patterns = []
        for pattern, weight in (spec.get("patterns") or {}).items():
            try:
                patterns.append((re.compile(pattern, re.IGNORECASE), _number(weight, f"{name}.patterns.{pattern}")))
            except re.error as error:
                raise RulesError(f"{name}: pattern {pattern!r} does not compile ({error})") from None
        compiled["categories"][name] = {"bias": _number(spec.get("bias", 0), f"{name}.bias"),
                                        "keywords": keywords, "patterns": patterns}
    return compiled


def route(rules: dict, text: str) -> str:
    lower = text.lower()
    best, best_score = rules["default"], -math.inf
    for name, spec in rules["categories"].items():
        score = spec["bias"] + sum(w for word, w in spec["keywords"] if word.search(lower))
        score += sum(w for pattern, w in spec["patterns"] if pattern.search(text))
        if score > best_score:
            best, best_score = name, score
    return best if best_score >= rules["threshold"] else rules["default"]


def tickets(split: str) -> list[dict]:
    rows = [json.loads(line) for line in (HERE / "tickets.jsonl").read_text().splitlines() if line.strip()]
    return [row for row in rows if row["split"] == split]


def correct_count(rules: dict, rows: list[dict]) -> int:
    return sum(route(rules, row["text"]) == row["label"] for row in rows)


def print_score(correct: int, total: int) -> None:
    """What a score script prints: `accuracy:` last, the line the loop reads as the metric."""
    print(f"tickets: {total}")
    print(f"correct: {correct}")
    print(f"accuracy: {correct / total:.4f}")
