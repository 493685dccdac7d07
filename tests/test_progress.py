"""engine/training/progress.py: the progress line (terminal or log) and the run directory's progress.json."""
import io
import json

import pytest

from engine.training import progress
from engine.training.clock import BudgetClock
from engine.training.contract import Budget


class FakeTime:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def trained(budget: Budget, steps: int, step_seconds: float, report, tokens_per_step=1000, step_flops=1e9):
    """Complete `steps` steps of `step_seconds` each, reporting each loss as the trainer does."""
    time = FakeTime()
    clock = BudgetClock(budget, tokens_per_step, step_flops, now=time)
    clock.start()
    for n in range(steps):
        clock.step_dispatched()
        time.t += step_seconds
        clock.step_completed()
        report(clock, 5.0 - n * 0.01, time)
    return clock


def test_piped_prints_a_line_every_few_seconds_with_every_figure():
    out, shown = io.StringIO(), None
    clock_time = FakeTime()
    shown = progress.Progress(flops_per_token=6e6, peak_flops=1e12, stream=out, interactive=False, now=clock_time)

    def report(clock, loss, time):
        clock_time.t = time.t
        shown.update(clock, loss)
    clock = trained(Budget("time", 100.0), steps=60, step_seconds=0.5, report=report)
    shown.close(clock, 4.41)
    lines = out.getvalue().splitlines()
    assert [int(line.split("|")[0].split()[1]) for line in lines] == [1, 21, 41, 60]  # then every 10 s; the last
    assert lines[0].startswith("step     1 | loss 5.0000 | 2.0k tok/s | MFU 1.2% | 0 s, 0% of time 100 s, ~100 s left")
    assert lines[-1] == "step    60 | loss 4.4100 | 2.0k tok/s | MFU 1.2% | 30 s, 30% of time 100 s, ~70 s left"
    assert "\r" not in out.getvalue()


def test_on_a_terminal_the_line_is_rewritten_in_place():
    out, now = io.StringIO(), FakeTime()
    shown = progress.Progress(stream=out, interactive=True, now=now)

    def report(clock, loss, time):
        now.t = time.t
        shown.update(clock, loss)
    trained(Budget("tokens", 20_000), steps=20, step_seconds=0.125, report=report)
    shown.close()
    text = out.getvalue()
    assert text.count("\r") == 10 and text.endswith("\n") and text.count("\n") == 1  # every 0.25 s, one line
    assert "MFU" not in text  # unknown peak (CPU): no MFU
    assert "\x1b[K" in text


def test_flops_budget_extrapolates_the_time_left():
    clock = BudgetClock(Budget("flops", 1e10), 1000, 1e9, now=FakeTime())
    clock.start()
    clock._now.t = 8.0
    for _ in range(4):
        clock.step_dispatched()
        clock.step_completed()
    fraction = progress.done_fraction(clock)
    assert fraction == pytest.approx(0.4)
    assert progress.remaining_seconds(clock, fraction) == pytest.approx(12.0)


def test_progress_file_is_written_for_the_loop_and_says_when_scoring(tmp_path):
    now = FakeTime()
    shown = progress.Progress(stream=io.StringIO(), interactive=False, run_dir=tmp_path, now=now)

    def report(clock, loss, time):
        now.t = time.t
        shown.update(clock, loss)
        if clock.completed == 3:
            figures = json.loads((tmp_path / progress.PROGRESS_FILE).read_text())
            assert figures["phase"] == "training" and figures["step"] == 3 and figures["loss"] == pytest.approx(4.98)
    clock = trained(Budget("time", 60.0), steps=9, step_seconds=0.5, report=report)
    shown.close(clock, 4.9)
    figures = json.loads((tmp_path / progress.PROGRESS_FILE).read_text())
    assert figures["phase"] == "scoring" and figures["step"] == 9
    assert figures["remaining_seconds"] == pytest.approx(55.5) and figures["elapsed_seconds"] == pytest.approx(4.5)
    assert figures["tokens_per_second"] == pytest.approx(2000.0)
    # no temporary file left; the curve beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == [progress.HISTORY_FILE, progress.PROGRESS_FILE]


def test_history_holds_every_step_then_thins_out_so_it_stays_small(tmp_path, monkeypatch):
    from engine.tracking.history import HISTORY_FILE, read_history
    assert HISTORY_FILE == progress.HISTORY_FILE  # the loop reads what the trainer writes, never importing it
    monkeypatch.setattr(progress, "HISTORY_POINTS", 10)
    now = FakeTime()
    shown = progress.Progress(flops_per_token=6.0, peak_flops=1e5, stream=io.StringIO(), interactive=False,
                              run_dir=tmp_path, now=now)

    def report(clock, loss, time):
        now.t = time.t
        shown.update(clock, loss)
    clock = trained(Budget("tokens", 100_000.0), steps=100, step_seconds=0.5, report=report)
    shown.close(clock, 4.0)
    points = read_history(tmp_path)
    steps = [p["step"] for p in points]
    assert steps[:10] == list(range(1, 11))  # every step while there are few
    assert steps[10:15] == [12, 14, 16, 18, 20] and steps[-1] == 96  # then every 2nd, 4th, 8th ...
    assert len(points) < 30 and steps == sorted(set(steps))
    assert points[0]["loss"] == pytest.approx(5.0) and points[-1]["loss"] == pytest.approx(5.0 - 95 * 0.01)
    assert points[5]["tokens_per_second"] == pytest.approx(2000.0) and points[5]["fraction"] == pytest.approx(0.06)
    assert points[5]["mfu_percent"] == pytest.approx(100 * 6.0 * 2000.0 / 1e5)


def test_hosts_after_the_first_stay_quiet(tmp_path):
    out = io.StringIO()
    shown = progress.Progress(stream=out, run_dir=tmp_path, show=False)
    trained(Budget("time", 10.0), 3, 1.0, lambda clock, loss, _: shown.update(clock, loss))
    shown.close()
    assert out.getvalue() == "" and not (tmp_path / progress.PROGRESS_FILE).exists()


def test_scoring_shows_tokens_scored_and_time_left_on_the_line_and_in_the_file(tmp_path):
    now, out = FakeTime(), io.StringIO()
    shown = progress.Progress(stream=out, interactive=False, run_dir=tmp_path, now=now)
    clock = trained(Budget("time", 60.0), steps=2, step_seconds=0.5, report=lambda c, loss, t: None)
    shown.close(clock, 4.9)
    now.t = 100.0
    shown.scoring(32_768, 131_072, 4.0)  # a quarter in 4 s: 12 s left at this pace
    figures = json.loads((tmp_path / progress.PROGRESS_FILE).read_text())
    assert figures["phase"] == "scoring" and figures["tokens_scored"] == 32_768
    assert figures["tokens_total"] == 131_072 and figures["remaining_seconds"] == pytest.approx(12.0)
    assert figures["step"] == 2  # the training figures stay for the loop's line
    assert "scoring | 32.8k of 131.1k tokens (25%) | 4 s, ~12 s left" in out.getvalue()
    now.t = 100.5
    shown.scoring(131_072, 131_072, 16.0)  # the last batch is always shown
    assert out.getvalue().rstrip().endswith("scoring | 131.1k of 131.1k tokens (100%) | 16 s, ~0 s left")
