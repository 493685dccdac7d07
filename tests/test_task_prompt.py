"""The Gemini agent's prompt for a command task speaks of its files, metric and direction."""
from engine.agents.base import ProposalRequest
from engine.agents.gemini import SYSTEM_INSTRUCTION
from engine.agents.gemini_prompt import build_prompt, ledger_summary
from engine.agents.task_prompt import system_instruction


def request(tmp_path, **kw):
    base = dict(repo_root=tmp_path, editable=["examples/r/rules.yaml"], program_text="route tickets",
                ledger=[], experiment=3, run_dir=tmp_path, hardware="cpu", budget="time 300 s",
                task_kind="command", metric="accuracy", direction="maximize")
    return ProposalRequest(**{**base, **kw})


def test_command_task_instruction_and_setup(tmp_path):
    text = system_instruction(request(tmp_path), SYSTEM_INSTRUCTION)
    assert "examples/r/rules.yaml" in text and "accuracy" in text and "higher is better" in text
    assert "val_bpb" not in text and "train.py" not in text
    prompt = build_prompt(request(tmp_path), {"examples/r/rules.yaml": "threshold: 1.0\n"}, "")
    assert "metric: accuracy (higher is better)" in prompt and "training budget" not in prompt
    assert system_instruction(request(tmp_path, task_kind="train"), SYSTEM_INSTRUCTION) == SYSTEM_INSTRUCTION


def test_the_results_table_shows_the_metric(tmp_path):
    rows = [{"experiment": 0, "status": "keep", "kept": True, "accuracy": 0.8, "description": "baseline"},
            {"experiment": 1, "status": "discard", "accuracy": 0.75, "description": "threshold: 1 -> 2"}]
    text = ledger_summary(rows, metric="accuracy", direction="maximize")
    assert text.splitlines()[0].startswith("exp | status | accuracy |")
    assert "0.750000 | -0.050000" in text and "best accuracy so far: 0.800000 (higher is better)" in text
