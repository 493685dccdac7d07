"""Knobs by ast in train.py, written back literal by literal, read back from descriptions."""

from engine.agents import knobs

SOURCE = '''"""doc"""
import math
LEARNING_RATE = 0.04  # peak
DEPTH = 4
BETA = 0.95
WARMUP = 0.0
SEED = 3
SIZE = dict(rows=16, name="x")
lowercase = 5
NAMES = ("a",)
'''


def test_finds_upper_case_numbers_and_table_entries():
    found = {k.name: k.value for k in knobs.find_knobs(SOURCE)}
    assert found == {"LEARNING_RATE": 0.04, "DEPTH": 4, "BETA": 0.95, "WARMUP": 0.0, "SIZE.rows": 16}


def test_apply_values_changes_only_the_literals():
    found = {k.name: k for k in knobs.find_knobs(SOURCE)}
    out = knobs.apply_values(SOURCE, found, {"LEARNING_RATE": 0.08, "SIZE.rows": 8})
    assert "LEARNING_RATE = 0.08  # peak" in out and 'SIZE = dict(rows=8, name="x")' in out
    assert out.replace("0.08", "0.04").replace("rows=8", "rows=16") == SOURCE


def test_descriptions_are_read_back():
    changes = knobs.parse_changes("combine LEARNING_RATE: 0.04 -> 0.08, rules.yaml/a.b-c: 2 -> 1.5e-05 (merged)")
    assert changes == {"LEARNING_RATE": (0.04, 0.08), "rules.yaml/a.b-c": (2.0, 1.5e-05)}
    assert knobs.parse_changes("a wider MLP") == {}
