"""`sample` and `status` on a tag whose baseline failed say that it failed, why, and where its log is."""
from types import SimpleNamespace

import pytest

from engine.errors import UserError
from engine.report import status
from engine.scoring import sample
from test_status import ledger_row, write_loop

FAILED = [ledger_row(0, "timeout", None, "baseline", role="baseline", log="exp-0000/train.log",
                     error="killed after the hard timeout of 210 s (while scoring)"),
          ledger_row(1, "timeout", None, "baseline", role="baseline", log="exp-0001/train.log",
                     error="killed after the hard timeout of 210 s (while scoring)")]


def test_status_says_the_baseline_failed_and_why(tmp_path):
    text = "\n".join(status.status_lines(write_loop(tmp_path, "demo", FAILED)))
    line = next(line for line in text.splitlines() if line.startswith("baseline:"))
    assert "failed (2 runs, none scored): timeout: killed after the hard timeout of 210 s" in line
    assert "its log: exp-0001/train.log" in line and "--timeout" in line


def test_sample_says_the_baseline_failed_not_to_wait(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_loop(tmp_path, "demo", FAILED)
    args = SimpleNamespace(tag="demo", max_tokens=10, temperature=0.8, top_k=50, prompt="", seed=0)
    with pytest.raises(UserError) as refused:
        sample.main(args)
    message = str(refused.value)
    assert "its baseline failed" in message and "timeout: killed after the hard timeout" in message
    assert "wait" not in message
