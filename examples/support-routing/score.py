"""Score rules.yaml: routing accuracy on the labeled tickets of one split.

    python examples/support-routing/score.py [--split dev|test] [--rules FILE]

Prints `accuracy: X` last (the metric, higher is better).
"""
import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import route  # noqa: E402  (the fixed router beside this file)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=("dev", "test"), default="dev")
    parser.add_argument("--rules", type=Path, default=HERE / "rules.yaml")
    args = parser.parse_args()
    try:
        rules = route.load_rules(args.rules)
    except route.RulesError as error:
        print(f"rules: {error}", file=sys.stderr)
        return 2
    rows = route.tickets(args.split)
    route.print_score(route.correct_count(rules, rows), len(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
