"""examples/rag-tuning: the corpus and questions, score and check."""
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "rag-tuning"
sys.path.insert(0, str(EXAMPLE))


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tmp_path / "cache"))


def script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(EXAMPLE / name), *args], capture_output=True, text=True, timeout=120)


def test_questions_come_from_the_corpus_and_holdout_is_apart():
    import corpus
    docs = corpus.documents()
    assert len(docs) > 1000 and all(d["text"] for d in docs)
    dev, holdout = corpus.questions("dev"), corpus.questions("holdout")
    assert dev == corpus.questions("dev")  # deterministic
    assert not {(q["doc"], q["start"]) for q in dev} & {(q["doc"], q["start"]) for q in holdout}
    sentence = docs[dev[0]["doc"]]["text"][dev[0]["start"]:dev[0]["end"]]
    assert len(sentence.split()) >= 8


def test_chunks_cover_each_document_with_overlap():
    import rag
    docs = [{"id": 0, "name": "m", "text": " ".join(f"w{i}" for i in range(25))}]
    chunks = rag.chunk(docs, 10, 3)
    assert [(c["start"], c["end"]) for c in chunks][0] == (0, len("w0 w1 w2 w3 w4 w5 w6 w7 w8 w9"))
    assert len(chunks) == 4 and chunks[-1]["end"] == len(docs[0]["text"])


def test_score_and_check(tmp_path):
    done = script("score.py")
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("recall@1: ") and 0 < float(last.split()[1]) < 1
    assert script("check.py").returncode == 0
    bad = tmp_path / "r.toml"
    bad.write_text((EXAMPLE / "retrieval.toml").read_text().replace("chunk_words = 40", "chunk_words = 900"))
    check = script("check.py", "--config", str(bad))
    assert check.returncode == 1 and "chunk_words = 900" in check.stdout


def test_the_judge_variant_averages_gemini_scores(monkeypatch):
    import os
    from fake_gemini import FakeGemini, answer
    with FakeGemini() as fake:
        fake.script(answer({"scores": [{"id": 0, "faithfulness": 1.0}, {"id": 1, "faithfulness": 0.5}]}),
                    answer({"scores": [{"id": 2, "faithfulness": 2.0}, {"id": 3, "faithfulness": "x"}]}))
        env = {**os.environ, "GEMINI_API_KEY": "fake-key-123456", "GOOGLE_GEMINI_BASE_URL": fake.url}
        done = subprocess.run([sys.executable, str(EXAMPLE / "score_judge.py"), "--limit", "4", "--batch", "2"],
                              capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    # 1.0 + 0.5 + 2.0 clipped to 1.0 + an unreadable score as 0, over 4 questions
    assert done.stdout.strip().splitlines()[-1] == "faithfulness: 0.6250"
    prompt = fake.requests[0].prompt_text()
    assert "You judge a retrieval system" in prompt and '"passages"' in prompt and '"reference"' in prompt
