"""Score tuning.sql: p95 latency in ms of the workload's queries, warm cache, several repeats.

    python examples/sqlite-latency/score.py [--workload dev|holdout] [--repeats N] [--tuning FILE]

Prints `p95_ms: X` last (the metric), after p50_ms, max_ms and executions.
"""
import argparse
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import workload  # noqa: E402  (the fixed harness beside this file)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=("dev", "holdout"), default="dev")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--tuning", type=Path, default=HERE / "tuning.sql")
    args = parser.parse_args()
    items = workload.workload(args.workload)
    with tempfile.TemporaryDirectory(prefix="sqlite-latency-") as tmp:
        db, queries = workload.open_tuned(args.tuning, Path(tmp))
        times = workload.timings(db, queries, items, args.repeats)
        db.close()
    print(f"executions: {len(times)}")
    print(f"p50_ms: {workload.percentile(times, 50):.3f}")
    print(f"max_ms: {max(times):.3f}")
    print(f"p95_ms: {workload.percentile(times, 95):.3f}")


if __name__ == "__main__":
    main()
