"""program.md parsing: settings, bounds, errors naming the line, flags winning."""
import argparse
from pathlib import Path

import pytest

from engine import constants
from engine.loop import protocol, runner
from engine.errors import UserError

REPO = Path(__file__).resolve().parents[1]


def test_default_program_parses_with_its_own_rules():
    program = protocol.load(REPO / "program.md")
    assert program.editable == ["train.py"]
    assert program.budget_seconds == 300 and program.budget_flops is None
    assert program.baseline_runs == 2 and program.max_fix_attempts == 2 and program.bold_after == 5
    assert program.max_experiments is None and program.max_cost_usd == 20
    assert program.bounds["WEIGHT_DECAY"] == (0.0, 0.5)
    assert program.bounds["CPU_SIZE.model_dim"] == (128.0, 1024.0)  # a dict constant's entry
    assert program.hard_timeout() == 300 + 180 + runner.scoring_allowance(constants.EVAL_TOKENS, constants.SEQUENCE_LENGTH)


def test_settings_sections_and_prose():
    text = """# title
- max_experiments: 99   (prose outside a known section is ignored)
## Editable files
- `train.py`
- configs/*.py
Some prose.
## Stopping criteria
- max_experiments: 7
- target_val_bpb: 1.5
- patience: none
## Budget
- budget_tokens: 1e6
## Offline agent
- sampler: CMAES
- tune_steps: 3
## Offline agent bounds
- LEARNING_RATE: 1e-4 .. 1e-1
"""
    program = protocol.parse(text)
    assert program.sampler == "cmaes" and program.tune_steps == 3
    assert protocol.parse("# no settings").sampler == "tpe"
    assert program.editable == ["train.py", "configs/*.py"]
    assert program.max_experiments == 7 and program.target_val_bpb == 1.5 and program.patience is None
    assert program.budget_flag() == ["--budget-tokens", "1e+06"]
    assert program.bounds == {"LEARNING_RATE": (1e-4, 1e-1)}


@pytest.mark.parametrize("line, message", [
    ("## Stopping criteria\n- max_experiments: lots", "line 2"),
    ("## Stopping criteria\n- max_experiments: 0", "must be at least 1"),
    ("## Stopping criteria\n\n- max_hourz: 3", "line 3"),
    ("## Budget\n- budget_seconds: 10\n- budget_flops: 1e15", "only one"),
    ("## Offline agent bounds\n- LR: 5 .. 1", "low bound"),
    ("## Offline agent bounds\n- LR: 1 to 5", "LOW .. HIGH"),
    ("## Editable files\n- /etc/passwd", "relative"),
    ("## Offline agent\n- sampler: grid", "write one of tpe, cmaes, steps"),
    ("## Offline agent\n- tune_steps: 0", "must be at least 1"),
])
def test_malformed_lines_stop_with_the_line(line, message):
    with pytest.raises(UserError, match=message):
        protocol.parse(line, source="program.md")


def test_flags_override_program():
    program = protocol.parse("## Budget\n- budget_seconds: 300\n## Stopping criteria\n- max_experiments: 50\n")
    args = argparse.Namespace(max_experiments=4, max_hours=None, timeout=None, budget_seconds=None,
                              budget_flops=1e12, budget_tokens=None)
    protocol.apply_flags(program, args)
    assert program.max_experiments == 4
    assert program.budget_seconds is None and program.budget_flag() == ["--budget-flops", "1e+12"]
    args.timeout = 42.0
    assert protocol.apply_flags(program, args).hard_timeout() == 42.0


def test_missing_program_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="--program"):
        protocol.load(tmp_path / "program.md")
