"""Check tuning.sql: every query of the dev workload returns exactly the reference rows.

    python examples/sqlite-latency/check.py [--tuning FILE]

The reference is the untuned database's answer. Exit 0 when all agree; otherwise 1,
naming the first query that differs.
"""
import argparse
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import workload  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tuning", type=Path, default=HERE / "tuning.sql")
    args = parser.parse_args()
    expected = workload.reference("dev")
    with tempfile.TemporaryDirectory(prefix="sqlite-latency-") as tmp:
        db, queries = workload.open_tuned(args.tuning, Path(tmp))
        for (query, params), rows in zip(workload.workload("dev"), expected):
            got = workload.run_query(db, queries[query], params)
            if got != rows:
                print(f"query {query} {params} returned {len(got)} rows that differ from the reference "
                      f"({len(rows)} rows); first difference: {_first_difference(got, rows)}")
                return 1
        db.close()
    print(f"check: ok ({len(expected)} queries return the reference rows)")
    return 0


def _first_difference(got, expected):
    for index, (a, b) in enumerate(zip(got, expected)):
        if a != b:
            return f"row {index}: {a} instead of {b}"
    return f"{len(got)} rows instead of {len(expected)}"


if __name__ == "__main__":
    sys.exit(main())
