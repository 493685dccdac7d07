"""Check rules.yaml: it is a valid rule set, and the must-route tickets in golden.jsonl route right.

    python examples/support-routing/check.py [--rules FILE]

golden.jsonl holds unambiguous tickets (a customer who only asks for an invoice is
billing, whatever the weights): a rule set that misroutes one is broken, however well
it scores. Exit 0 when all is well, 1 naming the first problem.
"""
import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import route  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=Path, default=HERE / "rules.yaml")
    args = parser.parse_args()
    try:
        rules = route.load_rules(args.rules)
    except route.RulesError as error:
        print(f"check failed: {error}")
        return 1
    missing = [name for name in route.TAXONOMY if name not in rules["categories"]]
    if missing:
        print(f"check failed: no rules for {', '.join(missing)}")
        return 1
    golden = [json.loads(line) for line in (HERE / "golden.jsonl").read_text().splitlines() if line.strip()]
    for row in golden:
        got = route.route(rules, row["text"])
        if got != row["label"]:
            print(f"check failed: {row['text']!r} routes to {got}, not {row['label']}")
            return 1
    print(f"check: ok ({len(golden)} must-route tickets)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
