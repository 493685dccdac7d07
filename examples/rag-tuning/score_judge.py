"""Score retrieval.toml by an LLM judge: how faithfully the retrieved passages support the answer.

    python examples/rag-tuning/score_judge.py [--questions dev|holdout] [--limit N] [--batch N]

For each question the retriever's first three chunks are shown to Gemini with the
sentence the question was made from (the reference answer). The judge rates, from 0
to 1, how far the passages state what the reference states, so that an answer written
from them alone would be faithful to it: 1 all of it, 0 none. The metric is the mean
rating; a question the judge leaves out scores 0. Prints `faithfulness: X` last.
GEMINI_API_KEY (or GOOGLE_API_KEY) configures the client and GOOGLE_GEMINI_BASE_URL
moves it, as google-genai reads them; AUTORESEARCH_JUDGE_MODEL picks the model.
"""
import argparse
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import corpus  # noqa: E402
import rag  # noqa: E402

DEFAULT_MODEL = "gemini-2.5-flash"
PASSAGES = 3
INSTRUCTION = """You judge a retrieval system. For each item you get a question, the reference
sentence that answers it, and the passages the system retrieved. Rate from 0 to 1 how much of
what the reference sentence states is stated by the passages, so that an answer written from the
passages alone would be faithful to the reference: 1 all of it, 0.5 part of it, 0 none of it.
Judge only the passages' content, not their style. Answer with JSON: one score per item id."""
SCHEMA = {"type": "OBJECT", "properties": {"scores": {"type": "ARRAY", "items": {
    "type": "OBJECT", "properties": {"id": {"type": "INTEGER"}, "faithfulness": {"type": "NUMBER"}},
    "required": ["id", "faithfulness"]}}}, "required": ["scores"]}


def items(config: dict, name: str, limit: int) -> list[dict]:
    docs = corpus.documents()
    index = rag.Index(rag.chunk(docs, config["chunk_words"], config["overlap_words"]), config["k1"], config["b"])
    made = []
    for number, question in enumerate(corpus.questions(name)[:limit]):
        found = rag.retrieve(index, question["question"], config, k=PASSAGES)
        made.append({"id": number, "question": question["question"],
                     "reference": docs[question["doc"]]["text"][question["start"]:question["end"]],
                     "passages": [docs[c["doc"]]["text"][c["start"]:c["end"]] for c in found]})
    return made


def judge(client, model: str, batch: list[dict]) -> dict[int, float]:
    from google.genai import types
    response = client.models.generate_content(
        model=model, contents=json.dumps(batch),
        config=types.GenerateContentConfig(system_instruction=INSTRUCTION, response_mime_type="application/json",
                                           response_schema=SCHEMA, temperature=0.0))
    scores = {}
    for item in json.loads(response.text).get("scores", []):
        try:
            scores[int(item["id"])] = min(1.0, max(0.0, float(item["faithfulness"])))
        except (KeyError, TypeError, ValueError):
            continue
    return scores


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", choices=("dev", "holdout"), default="dev")
    parser.add_argument("--config", type=Path, default=HERE / "retrieval.toml")
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--batch", type=int, default=10)
    args = parser.parse_args()
    if not (os.environ.get("GEMINI_API_KEY") or os.environ.get("GOOGLE_API_KEY")):
        print("score_judge: set GEMINI_API_KEY (and `- pass_env: GEMINI_API_KEY` in the program)", file=sys.stderr)
        return 2
    from google import genai
    from google.genai import types
    client = genai.Client(http_options=types.HttpOptions(timeout=120_000))
    model = os.environ.get("AUTORESEARCH_JUDGE_MODEL", DEFAULT_MODEL)
    todo = items(rag.load_config(args.config), args.questions, args.limit)
    total = 0.0
    for start in range(0, len(todo), args.batch):
        batch = todo[start:start + args.batch]
        scores = judge(client, model, batch)
        total += sum(scores.get(item["id"], 0.0) for item in batch)
    print(f"questions: {len(todo)}")
    print(f"faithfulness: {total / len(todo):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
