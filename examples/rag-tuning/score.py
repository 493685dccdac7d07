"""Score retrieval.toml: recall@1 of the passage that answers, over questions made from the corpus.

    python examples/rag-tuning/score.py [--questions dev|holdout] [--config FILE]

Prints mrr, then `recall@1: X` last (the metric, higher is better).
"""
import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import corpus  # noqa: E402  (the fixed corpus and retriever beside this file)
import rag  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", choices=("dev", "holdout"), default="dev")
    parser.add_argument("--config", type=Path, default=HERE / "retrieval.toml")
    args = parser.parse_args()
    result = rag.evaluate(rag.load_config(args.config), corpus.questions(args.questions))
    print(f"questions: {result['questions']}")
    print(f"chunks: {result['chunks']}")
    print(f"mrr: {result['mrr']:.4f}")
    print(f"recall@{rag.RECALL_K}: {result[f'recall@{rag.RECALL_K}']:.4f}")


if __name__ == "__main__":
    main()
