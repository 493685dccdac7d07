"""The one definition of a row's figure, gains and the best, for both directions."""
from engine.loop import standings


def test_a_rows_figure_is_its_metric():
    assert standings.row_value({"val_bpb": 1.5}) == 1.5
    assert standings.row_value({"metric": "p95_ms", "p95_ms": 12.0, "val_bpb": 9.0}) == 12.0
    assert standings.row_value({"metric": "accuracy"}) is None
    assert standings.metric_name([{"status": "rejected"}, {"metric": "recall@1"}]) == "recall@1"


def test_gain_is_positive_when_better_in_either_direction():
    assert standings.gain(1.0, 0.9) > 0 and standings.gain(1.0, 1.1) < 0
    assert standings.gain(0.8, 0.9, "maximize") > 0 and standings.gain(0.8, 0.7, "maximize") < 0
    assert standings.direction_of([{"direction": "maximize"}, {}]) == "maximize"
    assert standings.direction_of([]) == "minimize"


NIGHT = [  # baseline runs, a re-run series, a keep with a confirmation run, a crash, a rejection
    {"experiment": 0, "role": "baseline", "status": "baseline", "kept": True, "val_bpb": 2.0, "best_after": 2.0},
    {"experiment": 1, "role": "baseline", "status": "keep", "kept": True, "val_bpb": 2.0, "best_after": 2.0},  # older ledger
    {"experiment": 2, "role": "candidate", "status": "discard", "kept": False, "val_bpb": 1.97, "needs_rerun": True},
    {"experiment": 3, "role": "rerun", "rerun_of": 2, "status": "keep", "kept": True, "val_bpb": 1.95, "best_after": 1.96},
    {"experiment": 4, "role": "confirm", "status": "confirm", "kept": True, "val_bpb": 1.96, "best_after": 1.96},
    {"experiment": 5, "role": "candidate", "status": "crash", "kept": False, "val_bpb": None},
    {"experiment": 6, "role": "candidate", "status": "discard", "kept": False, "val_bpb": 2.1},
    {"experiment": 7, "role": "candidate", "status": "rejected", "kept": False, "val_bpb": None},
]


def test_status_the_report_and_the_live_line_count_the_same_things(tmp_path):
    import io
    from engine.loop.live_view import LiveView
    from engine.report import status
    from engine.report.markdown import render_markdown
    counts = standings.tally(NIGHT)
    assert counts == {"experiments": 8, "baseline_runs": 2, "confirmations": 1, "adopted": 0, "candidates": 4,
                      "reruns": 1, "kept": 1, "undecided": 0,
                      "outcomes": {"keep": 1, "crash": 1, "discard": 1, "rejected": 1}}
    line = standings.tally_line(counts)
    assert line == ("8 experiments: 2 baseline runs; 4 candidates (1 kept, 1 crash, 1 discard, 1 rejected), "
                    "1 re-run; 1 confirmation run")
    assert [standings.status_word(r) for r in NIGHT[:2]] == ["baseline", "baseline"]
    run_dir = tmp_path / "runs" / "night"
    run_dir.mkdir(parents=True)
    (run_dir / "results.jsonl").write_text("".join(__import__("json").dumps(r) + "\n" for r in NIGHT))
    assert f"done:     {line}" in status.status_lines(run_dir)
    out = io.StringIO()
    LiveView(stream=out, interactive=False).finish(NIGHT[-1], 1.96, NIGHT)
    assert "1 kept of 4 candidates" in out.getvalue()
    from engine.report.facts import gather_facts
    facts = gather_facts(run_dir, NIGHT, tmp_path)
    facts["files"] = {"progress_png": "p", "report_md": "r"}
    assert facts["tally"] == counts and f"{line}." in render_markdown(facts)
    tsv = [r.split("\t")[3] for r in __import__("engine.loop.ledger", fromlist=["x"]).Ledger(run_dir).tsv.read_text()
           .splitlines()[1:]]
    assert tsv == ["baseline", "baseline", "discard", "keep", "confirm", "crash", "discard", "rejected"]
