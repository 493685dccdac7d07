"""The hybrid agent: an LLM's structural changes, the tuner's numbers between them.

Through the real loop with the real google-genai client against the fake Gemini server
(tests/fake_gemini.py), and with the command agent as the LLM side.
"""
from __future__ import annotations

import pytest

from engine.agents.hybrid import LLM, TUNE, next_side, structure_rows, tuner_summary
from engine.agents.base import ProposalRequest
from fake_gemini import FakeGemini, answer
from loop_helpers import PROGRAM_MD, git, ledger_rows, run_cli

SECRET = "AIzaSy-test-secret-key-0123456789"
HYBRID_PROGRAM = PROGRAM_MD.replace("- max_experiments: 6", "- max_experiments: 10") + (
    "\n## Offline agent\n- tune_steps: 2\n")


def edit(old: str, new: str, description: str) -> dict:
    return {"description": description, "hypothesis": "h", "edits": [{"search": old, "replace": new}]}


@pytest.fixture
def fake(monkeypatch):
    with FakeGemini() as server:
        monkeypatch.setenv("GEMINI_API_KEY", SECRET)
        monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", server.url)
        for name in ("GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI", "GOOGLE_CLOUD_PROJECT", "GOOGLE_VERTEX_BASE_URL"):
            monkeypatch.delenv(name, raising=False)
        yield server


def use_program(root, text: str) -> None:
    (root / "program.md").write_text(text)
    git(root, "commit", "-qam", "hybrid program")


def candidates(rows: list[dict]) -> list[dict]:
    return [row for row in rows if row["role"] in ("candidate", "fix")]


def test_gemini_and_the_tuner_take_turns_through_the_loop(fake, loop_env):
    use_program(loop_env, HYBRID_PROGRAM)
    fake.script(
        answer(edit("LEARNING_RATE = 0.04", "LEARNING_RATE = 0.015", "a gentler learning rate")),
        answer(edit("SLEEP = 0", "SLEEP = 0\nNORM = 'rms'", "RMSNorm instead of LayerNorm")),
    )
    done = run_cli(loop_env, "loop", "--tag", "hy", "--agent", "gemini+tune", "--max-experiments", "10")
    assert done.returncode == 0, done.stderr

    rows = ledger_rows(loop_env, "hy")
    proposed = candidates(rows)
    assert [row["side"] for row in proposed][:6] == [LLM, TUNE, TUNE, LLM, TUNE, TUNE]
    assert {row["agent"] for row in proposed} == {"gemini+tune"}
    assert proposed[0]["description"] == "a gentler learning rate" and proposed[0]["kept"]
    for row in proposed:
        if row["side"] == TUNE:  # the tuner's descriptions read NAME: OLD -> NEW
            assert " -> " in row["description"] and "after" in row["hypothesis"]
    first_tuned = proposed[1]["description"]
    assert "LEARNING_RATE: 0.015 -> " in first_tuned or "DEPTH: 3 -> " in first_tuned  # tunes the new best

    assert len(fake.requests) == sum(row["side"] == LLM for row in proposed)  # asked only on its turns
    assert "<tuner>" not in fake.requests[0].prompt_text()
    second = fake.requests[1].prompt_text()
    assert "<tuner>" in second and "ran 2 trials" in second
    assert proposed[1]["description"] in second and proposed[2]["description"] in second


def test_command_agent_as_the_llm_side_reads_what_the_tuner_found(loop_env):
    use_program(loop_env, HYBRID_PROGRAM)
    script = loop_env.parent / "structural.sh"
    log = loop_env.parent / "seen.txt"
    script.write_text(f"""#!/bin/sh
echo "--- $AUTORESEARCH_EXPERIMENT ${{AUTORESEARCH_TUNER:-none}}" >> {log}
[ -n "$AUTORESEARCH_TUNER" ] && cat "$AUTORESEARCH_TUNER" >> {log}
echo "BLOCK_$AUTORESEARCH_EXPERIMENT = 'x'" >> train.py
echo "a new block"
""")
    script.chmod(0o755)
    done = run_cli(loop_env, "loop", "--tag", "hc", "--agent", "command+tune", "--agent-cmd", str(script),
                   "--max-experiments", "8")
    assert done.returncode == 0, done.stderr
    proposed = candidates(ledger_rows(loop_env, "hc"))
    assert [row["side"] for row in proposed][:4] == [LLM, TUNE, TUNE, LLM]
    seen = log.read_text()
    first, second = seen.split("--- ")[1:3]
    assert first.split()[1] == "none"  # nothing tuned before the first structural change
    assert "tuner.txt" in second.split("\n")[0] and "ran 2 trials" in second


# ---------------------------------------------------------------- the turns, from the ledger

def rows(*sides_and_kept):
    ledger = [{"experiment": 0, "role": "baseline", "kept": True, "status": "keep", "val_bpb": 2.0,
               "description": "baseline"}]
    for n, (side, kept) in enumerate(sides_and_kept, start=1):
        description = f"LR: {n} -> {n + 1}" if side == TUNE else f"idea {n}"
        ledger.append({"experiment": n, "role": "candidate", "side": side, "kept": kept, "val_bpb": 2.0 - n / 10,
                       "status": "keep" if kept else "discard", "description": description})
    return ledger


def test_turns_and_the_current_structure():
    assert next_side(rows(), 2) == LLM
    assert next_side(rows((LLM, False)), 2) == TUNE
    assert next_side(rows((LLM, False), (TUNE, True)), 2) == TUNE
    assert next_side(rows((LLM, False), (TUNE, True), (TUNE, False)), 2) == LLM
    ledger = rows((TUNE, True), (LLM, True), (TUNE, False), (LLM, False), (TUNE, True))
    current = structure_rows(ledger)
    # the kept LLM change starts the study (as its first, unchanged trial); the other LLM idea is left out
    assert [row["experiment"] for row in current] == [2, 3, 5]
    assert current[0]["description"] == "" and current[0]["role"] == "baseline"
    request = ProposalRequest(repo_root=".", editable=[], program_text="", ledger=ledger, experiment=6,
                              run_dir=".", hardware="", budget="")
    summary = tuner_summary(request)
    assert "ran 2 trials" in summary and "1 kept" in summary and "LR 5 -> 6" in summary
    assert tuner_summary(ProposalRequest(repo_root=".", editable=[], program_text="", ledger=rows((LLM, True)),
                                         experiment=2, run_dir=".", hardware="", budget="")) == ""
