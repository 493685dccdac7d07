"""Check retrieval.toml: every setting present and in its sane range.

    python examples/rag-tuning/check.py [--config FILE]

Exit 0 when the settings are valid, 1 naming the first that is not.
"""
import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import rag  # noqa: E402

# 300 words: retrieved chunks must fit a reader's context; longer ones would win by holding whole documents
RANGES = {"chunk_words": (20, 300), "overlap_words": (0, 999), "k1": (0.0, 10.0), "b": (0.0, 1.0),
          "top_k": (rag.RECALL_K, 200), "weight": (0.0, 1.0)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=HERE / "retrieval.toml")
    args = parser.parse_args()
    try:
        config = rag.load_config(args.config)
    except (KeyError, ValueError) as error:
        print(f"check failed: {args.config} lacks or mistypes a setting ({error})")
        return 1
    for name, (low, high) in RANGES.items():
        if not low <= config[name] <= high:
            print(f"check failed: {name} = {config[name]} is outside {low} .. {high}")
            return 1
    if config["overlap_words"] >= config["chunk_words"]:
        print("check failed: overlap_words must be below chunk_words")
        return 1
    print("check: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
