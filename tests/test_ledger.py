"""The ledger: atomic appends, a torn tail cut off, the TSV rebuilt from the JSONL."""
import json

import pytest

from engine.loop.ledger import Ledger, read_rows


def row(n, status="discard", val=1.5, **extra):
    return {"experiment": n, "commit": "abcdef1234567890", "status": status, "val_bpb": val,
            "memory_gb": 2.25, "description": f"idea\t{n}\nmore", "kept": status == "keep", **extra}


def test_append_writes_both_files(tmp_path):
    ledger = Ledger(tmp_path)
    ledger.append(row(0, "keep", 1.25))
    ledger.append(row(1, "crash", float("nan"), cost_usd=0.5))
    lines = (tmp_path / "results.tsv").read_text().splitlines()
    assert lines[0] == "commit\tval_bpb\tmemory_gb\tstatus\tdescription"
    # experiment 0 without a role is an older ledger's baseline run, recorded as keep: it reads baseline
    assert lines[1] == "abcdef1\t1.250000\t2.2\tbaseline\tidea 0 more"
    assert lines[2].split("\t")[1:4] == ["0.000000", "2.2", "crash"]
    rows = read_rows(tmp_path / "results.jsonl")
    assert rows[1]["val_bpb"] is None and rows[1]["cost_usd"] == 0.5
    assert Ledger(tmp_path).rows == rows
    assert ledger.best_commit() == "abcdef1234567890" and ledger.total_cost() == 0.5


def test_refuses_a_gap_or_a_repeat_and_unknown_status(tmp_path):
    ledger = Ledger(tmp_path)
    ledger.append(row(0, "keep"))
    with pytest.raises(ValueError):
        ledger.append(row(0))
    with pytest.raises(ValueError):
        ledger.append(row(2))
    with pytest.raises(ValueError):
        ledger.append(row(1, "maybe"))


def test_torn_tail_is_cut_and_tsv_rebuilt(tmp_path):
    ledger = Ledger(tmp_path)
    ledger.append(row(0, "keep"))
    ledger.append(row(1))
    with open(tmp_path / "results.jsonl", "a") as f:
        f.write('{"experiment": 2, "sta')  # killed mid-write
    (tmp_path / "results.tsv").write_text("garbage\n")
    reopened = Ledger(tmp_path)
    assert [r["experiment"] for r in reopened.rows] == [0, 1]
    assert (tmp_path / "results.jsonl").read_text().count("\n") == 2
    assert len((tmp_path / "results.tsv").read_text().splitlines()) == 3
    reopened.append(row(2))
    assert [json.loads(l)["experiment"] for l in (tmp_path / "results.jsonl").read_text().splitlines()] == [0, 1, 2]


def test_misses_in_a_row_counts_since_last_keep(tmp_path):
    ledger = Ledger(tmp_path)
    for n, status in enumerate(["keep", "discard", "keep", "discard", "rejected", "crash"]):
        ledger.append(row(n, status))
    assert ledger.misses_in_a_row() == 3
    ledger.append(row(6, "discard", needs_rerun=True))
    assert ledger.misses_in_a_row() == 3


def test_a_command_tasks_tsv_names_its_metric(tmp_path):
    from engine.loop.ledger import Ledger
    ledger = Ledger(tmp_path, metric="accuracy")
    ledger.append({"experiment": 0, "commit": "abcdef123", "status": "keep", "description": "baseline",
                   "metric": "accuracy", "accuracy": 0.8125})
    lines = (tmp_path / "results.tsv").read_text().splitlines()
    assert lines[0] == "commit\taccuracy\tmemory_gb\tstatus\tdescription"
    assert lines[1] == "abcdef1\t0.812500\t0.0\tbaseline\tbaseline"
