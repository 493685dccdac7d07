"""program.md's ## Task section."""
from pathlib import Path

import pytest

from engine.errors import UserError
from engine.loop import protocol

REPO = Path(__file__).resolve().parents[1]

COMMAND = """# a task
## Task
- kind: command
- editable: conf/*.yaml, tuning.sql
- score: python score.py
- metric: recall@5
- direction: maximize
- holdout: python score.py --split test
- check: `python check.py`
- timeout_seconds: 45
- pass_env: GEMINI_API_KEY
"""


def test_command_task_is_read():
    program = protocol.parse(COMMAND)
    task = program.task
    assert task.is_command and task.metric == "recall@5" and task.direction == "maximize"
    assert task.check == "python check.py" and task.holdout == "python score.py --split test"
    assert program.editable == ["conf/*.yaml", "tuning.sql"] and task.pass_env == ["GEMINI_API_KEY"]
    assert program.hard_timeout() == 45.0


def test_without_the_section_the_kind_is_train():
    program = protocol.parse("## Editable files\n- train.py\n")
    assert program.task.kind == "train" and program.task.metric == "val_bpb"
    assert not program.task.is_command


@pytest.mark.parametrize("line, words", [
    ("- kind: shell", "kind 'shell'"),
    ("- direction: up", "direction 'up'"),
    ("- metric: p95 ms", "metric"),
    ("- timeout_seconds: soon", "timeout_seconds"),
    ("- editable: ../secrets", "relative to the repository"),
    ("- colour: blue", "key one of"),
])
def test_bad_settings_name_the_line(line, words):
    key = line[2:].split(":")[0]
    lines = [line if old.startswith(f"- {key}:") else old for old in COMMAND.splitlines()]
    text = "\n".join(lines if line in lines else lines + [line]) + "\n"
    with pytest.raises(UserError, match="line") as error:
        protocol.parse(text)
    assert words in str(error.value)


def test_a_command_task_needs_score_metric_and_editable():
    with pytest.raises(UserError, match="score, editable, metric"):
        protocol.parse("## Task\n- kind: command\n")


def test_train_kind_refuses_command_settings():
    with pytest.raises(UserError, match="kind: command"):
        protocol.parse("## Task\n- kind: train\n- score: python s.py\n")


def test_a_setting_given_twice_is_an_error():
    with pytest.raises(UserError, match="set twice"):
        protocol.parse(COMMAND + "- metric: other\n")


@pytest.mark.parametrize("program", sorted((REPO / "examples").glob("*/program*.md")), ids=lambda p: p.parent.name + "/" + p.name)
def test_every_example_program_is_a_command_task_with_its_files(program):
    parsed = protocol.load(program)
    assert parsed.task.is_command and parsed.task.holdout and parsed.task.check
    assert all((REPO / path).is_file() for path in parsed.editable)
    for command in (parsed.task.score, parsed.task.holdout, parsed.task.check):
        script = command.split()[1]
        assert (REPO / script).is_file(), command
