"""Check prompt.md: it names every team and stays short enough to send with each batch.

    python examples/support-routing/check_prompt.py [--prompt FILE]
"""
import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import route  # noqa: E402

MAX_CHARS = 6000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", type=Path, default=HERE / "prompt.md")
    text = parser.parse_args().prompt.read_text()
    missing = [team for team in route.TAXONOMY if team not in text]
    if missing:
        print(f"check failed: the prompt does not name {', '.join(missing)}")
        return 1
    if len(text) > MAX_CHARS:
        print(f"check failed: the prompt is {len(text)} characters, over {MAX_CHARS}")
        return 1
    print("check: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
