"""Workers in the report: lanes, pace per worker and in total, adoptions, who found each kept change."""
import json

import pytest

from engine.report import lanes
from engine.report.status import status_lines


def _row(worker, experiment, minute, status="discard", kept=False, **extra):
    return {"worker": worker, "experiment": experiment, "status": status, "kept": kept, "val_bpb": 1.0,
            "started": f"2026-01-01T00:{minute:02d}:00+00:00", "finished": f"2026-01-01T00:{minute + 1:02d}:00+00:00",
            "commit": f"{worker}{experiment}", **extra}


ROWS = [
    _row("a", 0, 0, "keep", True, role="baseline"), _row("a", 1, 2, "keep", True, description="lr"),
    _row("a", 2, 4), _row("b", 0, 0, "keep", True, role="baseline"),
    _row("b", 1, 3, "keep", True, role="adopted", adopted_from="a", commit="a1"),
    _row("b", 2, 5, "keep", True, description="depth"), _row("b", 3, 9, "stale"),
]


def test_lane_facts_count_pace_and_adoptions():
    facts = lanes.lane_facts(ROWS)
    a, b = facts["workers"]
    assert (a["worker"], a["experiments"], a["kept"], a["adoptions"]) == ("a", 3, 1, [])  # kept changes: not the baseline
    assert b["experiments"] == 3 and b["adoptions"][0]["from"] == "a" and b["adoptions"][0]["hours"] == pytest.approx(4 / 60, abs=1e-4)
    assert a["experiments_per_hour"] == 3 / (5 / 60)  # 3 runs from minute 0 to minute 5
    assert facts["experiments"] == 6 and facts["experiments_per_hour"] == 6 / (10 / 60)
    assert lanes.lane_facts([{"experiment": 0}]) is None  # a single loop has no lanes


def test_found_by_follows_an_adoption_back_to_its_source():
    assert lanes.found_by(ROWS, "a1") == "a"
    assert lanes.found_by(ROWS, "b2") == "b"
    verified = [_row("c", 4, 1, "keep", True, adopted_from="a", verified_adoption=True, commit="a1")]
    assert lanes.found_by(verified, "a1") == "a"


def test_markdown_and_chart(tmp_path):
    facts = lanes.lane_facts(ROWS)
    table = "\n".join(lanes.markdown_lines(facts))
    assert "| b | 3 | 1 | 1 (a) | 18.0 |" in table and "| all | 6 | | | 36.0 |" in table
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots()
    lanes.plot_lanes(ax, facts)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a (36/h)", "b (18/h)"]
    assert ax.get_xlabel() == "minutes since the first run"
    fig.savefig(tmp_path / "lanes.png")
    assert (tmp_path / "lanes.png").stat().st_size > 1000


def test_status_shows_a_line_per_worker_from_a_swarm_outbox(tmp_path):
    run_dir = tmp_path / "runs" / "t"
    (run_dir / "swarm").mkdir(parents=True)
    (run_dir / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS if r["worker"] == "b"))
    outbox = [{**r, "record": "row"} for r in ROWS if r["worker"] == "b"] + [{"record": "claim", "worker": "b"}]
    (run_dir / "swarm" / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in outbox))
    lines = status_lines(run_dir)
    assert "worker:   b: 3 experiments, 1 kept, 1 adopted, 18.0/h" in lines
    assert lines[-1].startswith("workers:  1, 3 experiments")


def test_status_names_the_workers_running_now(tmp_path):
    run_dir = tmp_path / "runs" / "t"
    for job in ("job-0007-w0", "job-0008-w1"):
        (run_dir / "inflight" / job).mkdir(parents=True)
    (run_dir / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    assert "in flight: 2 (w0, w1)" in status_lines(run_dir)
