"""engine/loop/live_view.py: the loop's terminal view, with the running experiment's progress."""
import io
import json

from engine.loop import live_view
from engine.loop.live_view import LiveView


def test_the_file_name_is_the_one_the_trainer_writes():
    from engine.training import progress  # the loop itself never imports engine.training
    assert live_view.PROGRESS_FILE == progress.PROGRESS_FILE


def test_progress_is_described_while_training_and_while_scoring():
    figures = {"step": 7, "loss": 4.25, "fraction": 0.123, "remaining_seconds": 52.6, "phase": "training"}
    assert live_view.describe_progress(figures) == "step 7, loss 4.2500, 12% of budget, ~53 s left"
    assert live_view.describe_progress({**figures, "phase": "scoring"}) == "step 7, loss 4.2500, scoring"
    scoring = {**figures, "phase": "scoring", "tokens_scored": 65_536, "tokens_total": 131_072,
               "remaining_seconds": 11.6}
    assert live_view.describe_progress(scoring) == "step 7, loss 4.2500, scoring 50% of 131k tokens, ~12 s left"
    assert live_view.describe_progress({"step": 3, "remaining_seconds": None}) == "step 3"


def test_missing_or_half_written_files_read_as_nothing(tmp_path):
    assert live_view.read_progress(None) is None and live_view.read_progress(tmp_path) is None
    (tmp_path / live_view.PROGRESS_FILE).write_text('{"step": 4, "lo')
    assert live_view.read_progress(tmp_path) is None


def test_tick_shows_the_running_experiments_step_loss_and_time_left(tmp_path):
    out = io.StringIO()
    view = LiveView(stream=out, interactive=True, min_interval=0.0)
    view.start(3, "double the learning rate", "time 60 s", 1.5, [], exp_dir=tmp_path)
    view.tick(2.0)
    assert "#3 double the learning rate" in out.getvalue() and "step" not in out.getvalue()
    (tmp_path / live_view.PROGRESS_FILE).write_text(json.dumps(
        {"step": 12, "loss": 3.5, "fraction": 0.5, "remaining_seconds": 30.0, "phase": "training"}))
    view.tick(31.0)
    assert out.getvalue().rsplit("\r", 1)[1].endswith("step 12, loss 3.5000, 50% of budget, ~30 s left")


def test_piped_view_stays_quiet_while_an_experiment_runs(tmp_path):
    out = io.StringIO()
    view = LiveView(stream=out, interactive=False, min_interval=0.0)
    view.start(1, "x", "time 60 s", None, [], exp_dir=tmp_path)
    view.tick(5.0)
    assert out.getvalue() == "#1 running: x\n"
