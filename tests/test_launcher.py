"""engine/training/launcher.py: a scorer killed after good training loses nothing."""
import json
import sys
from pathlib import Path

from engine import cli
from engine.training import launcher

TINY_TRAIN = Path(__file__).parent / "fixtures" / "tiny_train.py"
KILLED = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"]


def kill_scorers(monkeypatch, times: int) -> list:
    """The first `times` scorer processes die of SIGKILL at once (as the OOM killer would end them)."""
    real, started = launcher.engine_command, []

    def command(*args):
        if args[0] == "evaluate":
            started.append(args)
            if len(started) <= times:
                return KILLED
        return real(*args)
    monkeypatch.setattr(launcher, "engine_command", command)
    return started


def train(data, tmp_path):
    out = tmp_path / "result.json"
    code = cli.main(["train", str(TINY_TRAIN), "--data", str(data), "--json", str(out),
                     "--run-dir", str(tmp_path / "run"), "--budget-tokens", "2048"])
    return code, json.loads(out.read_text())


def test_a_killed_scorer_is_started_once_more(prepared_data, tmp_path, monkeypatch):
    started = kill_scorers(monkeypatch, times=1)
    code, result = train(prepared_data, tmp_path)
    assert code == 0 and result["status"] == "ok" and result["val_bpb"] > 0
    assert len(started) == 2


def test_a_scorer_killed_twice_leaves_an_unscored_run_whose_checkpoint_scores_later(prepared_data, tmp_path,
                                                                                      monkeypatch):
    kill_scorers(monkeypatch, times=2)
    code, result = train(prepared_data, tmp_path)
    assert code != 0 and result["status"] == "unscored" and result.get("val_bpb") is None
    assert "autoresearch evaluate --checkpoint" in result["error"]
    checkpoint = Path(result["checkpoint"])
    assert (checkpoint / "forward").is_dir() and result["num_steps"] > 0
    monkeypatch.undo()
    out = tmp_path / "later.json"
    assert cli.main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(prepared_data),
                     "--json", str(out)]) == 0
    assert json.loads(out.read_text())["bpb"] > 0
