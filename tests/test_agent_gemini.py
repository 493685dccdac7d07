"""The Gemini agent: the real google-genai client against a fake Gemini server on 127.0.0.1.

Nothing inside the client is patched; only its standard environment points it at
the fake (GEMINI_API_KEY, GOOGLE_GEMINI_BASE_URL).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from engine.agents import notes
from engine.agents import pricing
from engine.agents.base import ProposalRequest
from engine.agents.edits import EditError, apply_edits, parse_answer
from engine.agents.gemini import GeminiAgent
from engine.agents.gemini_prompt import build_prompt, ledger_summary
from engine.errors import UserError
from fake_gemini import (FakeGemini, Reply, answer, blocked_candidate, client_error, empty_candidates,
                         rate_limited, server_error)

SECRET = "AIzaSy-test-secret-key-0123456789"
MODEL = "gemini-2.5-pro"
TRAIN_PY = '''"""A tiny train.py."""
LEARNING_RATE = 0.01  # peak learning rate
DEPTH = 4  # transformer blocks


def experiment(ctx):
    return None
'''
PROGRAM = "# Protocol\nLower val_bpb. Only train.py may change.\n"
GOOD = {"description": "double the learning rate", "hypothesis": "the model is undertrained at 0.01",
        "edits": [{"search": "LEARNING_RATE = 0.01", "replace": "LEARNING_RATE = 0.02"}],
        "notes": "## Lessons\n- lr 0.01 may be low\n"}
LEDGER = [
    {"experiment": 0, "status": "keep", "kept": True, "val_bpb": 2.5, "description": "baseline"},
    {"experiment": 1, "status": "discard", "kept": False, "val_bpb": 2.6, "description": "halve depth"},
    {"experiment": 2, "status": "keep", "kept": True, "val_bpb": 2.4, "description": "wider mlp"},
    {"experiment": 3, "status": "crash", "kept": False, "val_bpb": None, "description": "huge batch",
     "error": "RESOURCE_EXHAUSTED: out of memory"},
]
VERTEX_AND_OTHER_VARS = ("GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI", "GOOGLE_GENAI_USE_ENTERPRISE",
                         "GOOGLE_CLOUD_PROJECT", "GOOGLE_CLOUD_LOCATION", "GOOGLE_VERTEX_BASE_URL",
                         "GOOGLE_GENAI_API_VERSION")


@pytest.fixture
def fake(monkeypatch):
    with FakeGemini() as server:
        monkeypatch.setenv("GEMINI_API_KEY", SECRET)
        monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", server.url)
        for name in VERTEX_AND_OTHER_VARS:
            monkeypatch.delenv(name, raising=False)
        yield server


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    (root / "train.py").write_text(TRAIN_PY)
    return root


@pytest.fixture
def logs() -> list[str]:
    return []


def make_agent(logs: list[str], delays: list[float] | None = None, **options) -> GeminiAgent:
    def sleep(seconds: float) -> None:
        if delays is not None:
            delays.append(seconds)
        time.sleep(seconds)
    settings = dict(model=MODEL, base_delay_s=0.01, max_delay_s=0.05, request_timeout_s=10, log=logs.append)
    settings.update(options)
    return GeminiAgent(sleep=sleep, **settings)


def request(repo: Path, **fields) -> ProposalRequest:
    values = dict(repo_root=repo, editable=["train.py"], program_text=PROGRAM, ledger=LEDGER, experiment=4,
                  run_dir=repo.parent / "runs" / "t", hardware="cpu x2", budget="time 5 s")
    values.update(fields)
    return ProposalRequest(**values)


def test_good_answer_is_applied_with_notes_and_accounting(fake, repo, logs):
    fake.script(answer(GOOD, prompt_tokens=12_000, output_tokens=800, thoughts_tokens=1_200))
    req = request(repo)
    proposal = make_agent(logs).propose(req)

    assert proposal.description == "double the learning rate"
    assert proposal.hypothesis == "the model is undertrained at 0.01"
    assert "LEARNING_RATE = 0.02  # peak learning rate" in (repo / "train.py").read_text()
    assert (proposal.prompt_tokens, proposal.output_tokens) == (12_000, 2_000)
    assert proposal.cost_usd == pytest.approx(pricing.estimate_cost_usd(MODEL, 12_000, 2_000))
    assert proposal.cost_usd == pytest.approx((12_000 * 1.25 + 2_000 * 10.0) / 1e6)
    assert notes.read_notes(req.run_dir) == GOOD["notes"]

    [sent] = fake.requests
    assert sent.path.endswith(f"models/{MODEL}:generateContent")
    prompt = sent.prompt_text()
    for expected in (PROGRAM.strip(), TRAIN_PY, "cpu x2", "time 5 s", "halve depth", "+0.100000",
                     "out of memory", "best val_bpb so far: 2.400000", "experiment 4"):
        assert expected in prompt
    config = sent.body["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert set(config["responseSchema"]["required"]) == {"description", "hypothesis", "edits"}


def test_notes_come_back_in_the_next_prompt(fake, repo, logs):
    req = request(repo)
    notes.write_notes(req.run_dir, "## Lessons\n- depth 8 overfits\n")
    fake.script(answer({**GOOD, "notes": None, "hypothesis": None}))
    make_agent(logs).propose(req)
    assert "depth 8 overfits" in fake.requests[0].prompt_text()
    assert "depth 8 overfits" in notes.read_notes(req.run_dir)  # an empty "notes" leaves them as they were


def test_malformed_json_goes_back_to_the_model_then_a_good_answer_applies(fake, repo, logs):
    fake.script(answer('{"description": "oops", "edits": [', prompt_tokens=100, output_tokens=10),
                answer(GOOD, prompt_tokens=150, output_tokens=20))
    proposal = make_agent(logs).propose(request(repo))

    assert proposal.description == GOOD["description"]
    assert (proposal.prompt_tokens, proposal.output_tokens) == (250, 30)
    second = fake.requests[1].body["contents"]
    assert [content["role"] for content in second] == ["user", "model", "user"]
    assert '"edits": [' in second[1]["parts"][0]["text"]
    assert "not valid JSON" in second[2]["parts"][0]["text"]


def test_an_edit_that_does_not_match_gets_a_second_chance(fake, repo, logs):
    wrong = {**GOOD, "edits": [{"search": "LEARNING_RATE = 0.1", "replace": "LEARNING_RATE = 0.2"}]}
    fake.script(answer(wrong), answer(GOOD))
    proposal = make_agent(logs).propose(request(repo))

    assert proposal is not None
    assert "LEARNING_RATE = 0.02" in (repo / "train.py").read_text()
    feedback = fake.requests[1].body["contents"][2]["parts"][0]["text"]
    assert "not in train.py" in feedback and "LEARNING_RATE = 0.01" in feedback  # the closest line, as a hint


def test_answers_that_never_apply_are_dropped_and_their_cost_carried_forward(fake, repo, logs):
    broken = {**GOOD, "edits": [{"search": "DEPTH = 4", "replace": "DEPTH = (4"}]}
    fake.script(answer(broken, prompt_tokens=100, output_tokens=10))
    agent = make_agent(logs, max_edit_retries=2)
    assert agent.propose(request(repo)) is None
    assert agent.last_outcome == "dropped"
    assert len(fake.requests) == 3
    assert (repo / "train.py").read_text() == TRAIN_PY
    assert "does not parse" in fake.requests[1].body["contents"][2]["parts"][0]["text"]

    fake.script(answer(GOOD, prompt_tokens=100, output_tokens=10))
    proposal = agent.propose(request(repo))
    assert (proposal.prompt_tokens, proposal.output_tokens) == (400, 40)  # three dropped calls + this one


def test_rate_limit_then_success_honours_the_server_retry_delay(fake, repo, logs):
    fake.script(rate_limited("0.3s"), answer(GOOD))
    delays: list[float] = []
    proposal = make_agent(logs, delays).propose(request(repo))

    assert proposal is not None
    assert len(delays) == 1 and delays[0] >= 0.3  # not the 0.01 s backoff
    first, second = fake.requests
    assert second.time - first.time >= 0.3
    assert any("429" in line for line in logs)


def test_server_errors_back_off_exponentially_until_giving_up(fake, repo, logs):
    fake.script(server_error(500))
    delays: list[float] = []
    agent = make_agent(logs, delays, max_tries=4, base_delay_s=0.01, max_delay_s=10.0)
    assert agent.propose(request(repo)) is None

    assert len(fake.requests) == 4
    assert len(delays) == 3
    assert 0.005 <= delays[0] <= 0.01 and 0.02 <= delays[2] <= 0.04  # doubling, with jitter
    assert (repo / "train.py").read_text() == TRAIN_PY
    assert "no answer after 4 tries" in logs[-1]
    assert agent.last_outcome == "unavailable"


@pytest.mark.parametrize("empty", [empty_candidates, blocked_candidate])
def test_empty_or_blocked_candidates_are_retried(fake, repo, logs, empty):
    fake.script(empty(prompt_tokens=500), answer(GOOD, prompt_tokens=500, output_tokens=50))
    proposal = make_agent(logs).propose(request(repo))
    assert proposal.description == GOOD["description"]
    assert proposal.prompt_tokens == 1000  # the empty answer's prompt was billed too
    assert any("blocked" in line or "empty answer" in line for line in logs)


def test_a_request_timeout_is_retried(fake, repo, logs):
    fake.script(Reply(200, answer(GOOD).body, delay_s=3.0), answer(GOOD))
    started = time.monotonic()
    proposal = make_agent(logs, request_timeout_s=1).propose(request(repo))
    assert proposal is not None
    assert len(fake.requests) == 2
    assert time.monotonic() - started < 3.0


def test_an_unknown_model_stops_with_an_actionable_error(fake, repo, logs):
    fake.script(client_error(404, "models/gemini-nope is not found"))
    with pytest.raises(UserError, match="gemini-nope.*--model"):
        make_agent(logs, model="gemini-nope").propose(request(repo))
    assert len(fake.requests) == 1


def test_vertex_ai_chosen_by_the_environment(fake, repo, logs, monkeypatch):
    """Vertex AI express mode (an API key bound to a project): the client builds Vertex URLs."""
    monkeypatch.delenv("GEMINI_API_KEY")
    monkeypatch.setenv("GOOGLE_GENAI_USE_VERTEXAI", "true")
    monkeypatch.setenv("GOOGLE_API_KEY", SECRET)
    fake.script(answer(GOOD))
    assert make_agent(logs).propose(request(repo)) is not None
    assert fake.requests[0].path.endswith(f"publishers/google/models/{MODEL}:generateContent")


def test_no_credentials_is_an_actionable_error(monkeypatch):
    for name in ("GEMINI_API_KEY", *VERTEX_AND_OTHER_VARS):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(UserError, match="GEMINI_API_KEY.*GOOGLE_GENAI_USE_VERTEXAI"):
        GeminiAgent()


def test_the_key_is_never_written_anywhere(fake, repo, logs, capsys):
    leaky = {**GOOD, "description": f"use key {SECRET}", "notes": f"the key is {SECRET}\n"}
    fake.script(server_error(503), answer("not json"), answer(leaky))
    req = request(repo)
    proposal = make_agent(logs).propose(req)

    assert fake.requests[0].headers.get("x-goog-api-key") == SECRET  # it did reach the server
    written = [path.read_text() for path in repo.parent.rglob("*") if path.is_file()]
    captured = capsys.readouterr()
    everything = "\n".join([*written, *logs, captured.out, captured.err, json.dumps(proposal.__dict__)])
    assert SECRET not in everything
    assert "[redacted]" in notes.read_notes(req.run_dir)


def test_crash_fix_and_bolder_requests_say_so(repo):
    files = {"train.py": TRAIN_PY}
    crash = build_prompt(request(repo, crash_log_tail="Traceback\nValueError: shapes (4,) and (5,)"), files, "")
    assert "ValueError: shapes (4,) and (5,)" in crash and "same idea" in crash
    bolder = build_prompt(request(repo, bolder=True), files, "")
    assert "bolder" in bolder
    assert "bolder" not in build_prompt(request(repo), files, "")


def test_prompt_carries_ideas_in_flight_and_the_swarm(repo):
    files = {"train.py": TRAIN_PY}
    plain = build_prompt(request(repo), files, "")
    assert "<in flight>" not in plain and "<swarm>" not in plain
    req = request(repo)
    req.in_flight = [{"worker": "w1", "description": "halve warmup", "hypothesis": "short budget"}]
    req.swarm = [{"worker": "tpu-a", "status": "keep", "val_bpb": 1.2345678, "description": "kaiming init"}]
    prompt = build_prompt(req, files, "")
    assert "w1 | running | - | halve warmup | short budget" in prompt and "propose a different one" in prompt
    assert "tpu-a | keep | 1.234568 | kaiming init" in prompt


def test_ledger_summary_is_compact_and_bounded():
    rows = [{"experiment": i, "status": "discard", "val_bpb": 3.0, "description": f"idea {i}"} for i in range(100)]
    summary = ledger_summary(rows, limit=10)
    assert "(90 earlier experiments omitted)" in summary
    assert "idea 99" in summary and "idea 5 " not in summary
    assert ledger_summary([]).startswith("(none yet")


def test_edits_must_be_unique_present_and_parse():
    files = {"train.py": "A = 1\nB = 1\n"}
    with pytest.raises(EditError, match="occurs 2 times"):
        apply_edits(files, [{"search": "= 1", "replace": "= 2"}], "train.py")
    with pytest.raises(EditError, match="unchanged"):
        apply_edits(files, [{"search": "A = 1", "replace": "A = 1"}], "train.py")
    with pytest.raises(EditError, match="does not parse"):
        apply_edits(files, [{"search": "A = 1", "replace": "A = (1"}], "train.py")
    # edits apply in order, each to the text as edited so far
    changed = apply_edits(files, [{"search": "A = 1", "replace": "A = 2"}, {"search": "A = 2\nB", "replace": "A = 3\nB"}],
                          "train.py")
    assert changed == {"train.py": "A = 3\nB = 1\n"}


def test_answer_must_name_only_editable_files():
    bad = json.dumps({**GOOD, "edits": [{"file": "prepare.py", "search": "x", "replace": "y"}]})
    with pytest.raises(EditError, match="prepare.py"):
        parse_answer(bad, ["train.py"])
    assert parse_answer("```json\n" + json.dumps(GOOD) + "\n```", ["train.py"])["description"]
    assert parse_answer(json.dumps({**GOOD, "notes": None, "hypothesis": None}), ["train.py"])["edits"]


def test_notes_are_bounded_keeping_the_newest(tmp_path):
    long_text = "\n".join(f"- lesson {i}" for i in range(2000))
    notes.write_notes(tmp_path, long_text, limit=500)
    kept = notes.read_notes(tmp_path)
    assert len(kept) <= 500 and "lesson 1999" in kept and kept.startswith(notes.TRIMMED_MARKER)


def test_price_estimates():
    assert pricing.estimate_cost_usd("gemini-2.5-flash-lite", 1_000_000, 0) == pytest.approx(0.10)
    assert pricing.price_of("models/gemini-2.5-flash-001") == pricing.PRICES["gemini-2.5-flash"]
    long_prompt = pricing.estimate_cost_usd("gemini-2.5-pro", 300_000, 0)
    assert long_prompt == pytest.approx(300_000 * 2.50 / 1e6)
    assert pricing.price_of("some-future-model") == pricing.UNKNOWN_MODEL_PRICE


# ---------------------------------------------------------------- through the real loop

from loop_helpers import ledger_rows, run_cli


def lr_edit(old: str, new: str, description: str, **more) -> dict:
    return {"description": description, "hypothesis": "h", "edits": [{"search": old, "replace": new}], **more}


def test_the_loop_runs_gemini_proposals_and_crash_fixes(fake, loop_env):
    fake.script(
        answer(lr_edit("LEARNING_RATE = 0.04", "LEARNING_RATE = 0.01", "lr 0.01", notes="- lr 0.01 wins\n"),
               prompt_tokens=5000, output_tokens=500),
        answer(lr_edit("CRASH = 0", "CRASH = 1", "a crashing idea")),
        answer({"description": "fix the crash", "hypothesis": "h", "edits": [
            {"search": "CRASH = 1", "replace": "CRASH = 0"}, {"search": "DEPTH = 3", "replace": "DEPTH = 4"}]}),
    )
    done = run_cli(loop_env, "loop", "--tag", "g", "--agent", "gemini", "--model", MODEL, "--max-experiments", "5")
    assert done.returncode == 0, done.stderr

    rows = ledger_rows(loop_env, "g")
    assert [row["status"] for row in rows] == ["baseline", "baseline", "keep", "crash", "discard"]
    proposed = rows[2]
    assert proposed["description"] == "lr 0.01" and proposed["agent"] == "gemini"
    assert (proposed["prompt_tokens"], proposed["output_tokens"]) == (5000, 500)
    assert proposed["cost_usd"] == pytest.approx(pricing.estimate_cost_usd(MODEL, 5000, 500))
    assert rows[4]["fix_of"] == rows[3]["experiment"]

    fix_prompt = fake.requests[2].prompt_text()
    assert "crashed on purpose" in fix_prompt and "CRASH = 1" in fix_prompt
    assert "- lr 0.01 wins" in fake.requests[1].prompt_text()  # notes came back
    assert "LEARNING_RATE = 0.01" in (loop_env / "train.py").read_text()  # the kept change is the tree
    run_files = [path.read_text(errors="replace") for path in (loop_env / "runs").rglob("*") if path.is_file()]
    assert not any(SECRET in text for text in [*run_files, done.stdout, done.stderr])
