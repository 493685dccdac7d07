"""Score prompt.md: routing accuracy of Gemini classifying the tickets with it (needs a Gemini key).

    python examples/support-routing/score_prompt.py [--split dev|test] [--limit N] [--batch N]

The prompt is the system instruction; the tickets go in batches as JSON, and the
answer must be JSON naming a team for each ticket id (a structured-output schema
restricts teams to the taxonomy). A ticket left out of the answer counts as wrong.
Prints `accuracy: X` last. GEMINI_API_KEY (or GOOGLE_API_KEY) configures the client,
and GOOGLE_GEMINI_BASE_URL moves it, as google-genai itself reads them;
AUTORESEARCH_ROUTING_MODEL picks the model.
"""
import argparse
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import route  # noqa: E402

DEFAULT_MODEL = "gemini-2.5-flash"
SCHEMA = {"type": "OBJECT", "properties": {"labels": {"type": "ARRAY", "items": {
    "type": "OBJECT", "properties": {"id": {"type": "INTEGER"}, "team": {"type": "STRING", "enum": list(route.TAXONOMY)}},
    "required": ["id", "team"]}}}, "required": ["labels"]}


def classify(client, model: str, prompt: str, batch: list[dict]) -> dict[int, str]:
    from google.genai import types
    tickets = json.dumps([{"id": row["id"], "text": row["text"]} for row in batch])
    response = client.models.generate_content(
        model=model, contents=f"Route each of these tickets:\n{tickets}",
        config=types.GenerateContentConfig(system_instruction=prompt, response_mime_type="application/json",
                                           response_schema=SCHEMA, temperature=0.0))
    labels = json.loads(response.text).get("labels", [])
    return {int(item["id"]): item["team"] for item in labels if isinstance(item, dict) and "id" in item}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=("dev", "test"), default="dev")
    parser.add_argument("--prompt", type=Path, default=HERE / "prompt.md")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N tickets")
    parser.add_argument("--batch", type=int, default=50)
    args = parser.parse_args()
    if not (os.environ.get("GEMINI_API_KEY") or os.environ.get("GOOGLE_API_KEY")):
        print("score_prompt: set GEMINI_API_KEY (and `- pass_env: GEMINI_API_KEY` in the program)", file=sys.stderr)
        return 2
    from google import genai
    from google.genai import types
    client = genai.Client(http_options=types.HttpOptions(timeout=120_000))
    rows = route.tickets(args.split)[:args.limit]
    prompt, model = args.prompt.read_text(), os.environ.get("AUTORESEARCH_ROUTING_MODEL", DEFAULT_MODEL)
    correct = 0
    for start in range(0, len(rows), args.batch):
        batch = rows[start:start + args.batch]
        teams = classify(client, model, prompt, batch)
        correct += sum(teams.get(row["id"]) == row["label"] for row in batch)
    route.print_score(correct, len(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
