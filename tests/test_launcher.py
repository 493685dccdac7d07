"""engine/training/launcher.py: one engine process per experiment, and what is left when it dies.

The engine process trains and scores; one that dies after its checkpoint is scored by a fresh
scorer process (then, if that dies too, the run is `unscored` and its checkpoint scores later);
one that dies earlier is a crash that names the phase it died in.
"""
import json
import sys
from pathlib import Path

from engine import cli
from engine.training import launcher

TINY_TRAIN = Path(__file__).parent / "fixtures" / "tiny_train.py"
KILLED = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"]
# Runs the real engine process; `when` decides how it ends, as a kill would have ended it.
WRAPPER = """
import json, os, signal, subprocess, sys, time
when, figures, run_dir, command = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
child = subprocess.Popen(command)
phase_file = os.path.join(run_dir, "phase.json")
while child.poll() is None:
    try:
        phase = json.load(open(phase_file))["phase"]
    except (OSError, ValueError, KeyError):
        phase = None
    if phase == when:
        child.send_signal(signal.SIGKILL)
    time.sleep(0.02)
if when == "scoring":  # scoring is quick here: end as an engine killed in it would have ended
    result = json.load(open(figures))
    for key in ("val_bpb", "probe_passes", "scoring_seconds"):
        result.pop(key, None)
    json.dump({**result, "status": "trained"}, open(figures, "w"))
    os.kill(os.getpid(), signal.SIGKILL)
if child.returncode < 0:
    os.kill(os.getpid(), -child.returncode)
sys.exit(child.returncode)
"""


def engine_dies(monkeypatch, when: str, scorer_deaths: int = 0) -> list:
    """The engine process dies in phase `when`; the first `scorer_deaths` scorer processes die of
    SIGKILL at once (as the OOM killer would end them). Returns the scorer processes started."""
    real, scorers = launcher.engine_command, []

    def command(*args):
        if args[0] == "evaluate":
            scorers.append(args)
            if len(scorers) <= scorer_deaths:
                return KILLED
        elif "--trainer-only" in args:
            figures, run_dir = args[args.index("--json") + 1], args[args.index("--run-dir") + 1]
            return [sys.executable, "-c", WRAPPER, when, figures, run_dir, *real(*args)]
        return real(*args)
    monkeypatch.setattr(launcher, "engine_command", command)
    return scorers


def train(data, tmp_path, *budget):
    out = tmp_path / "result.json"
    code = cli.main(["train", str(TINY_TRAIN), "--data", str(data), "--json", str(out),
                     "--run-dir", str(tmp_path / "run"), *(budget or ("--budget-tokens", "2048"))])
    return code, json.loads(out.read_text())


def test_an_engine_that_dies_while_scoring_is_scored_by_a_fresh_scorer(prepared_data, tmp_path, monkeypatch):
    scorers = engine_dies(monkeypatch, "scoring")
    code, result = train(prepared_data, tmp_path)
    assert code == 0 and result["status"] == "ok" and result["val_bpb"] > 0
    assert result["scored_by"] == "scorer" and len(scorers) == 1 and result["num_steps"] > 0


def test_a_scorer_that_dies_too_leaves_an_unscored_run_whose_checkpoint_scores_later(prepared_data, tmp_path,
                                                                                   monkeypatch):
    engine_dies(monkeypatch, "scoring", scorer_deaths=1)
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


def test_an_engine_killed_while_training_is_a_crash_that_names_the_phase(prepared_data, tmp_path, monkeypatch):
    scorers = engine_dies(monkeypatch, "training")
    code, result = train(prepared_data, tmp_path, "--budget-seconds", "60")
    assert code != 0 and result["status"] == "crash" and result.get("val_bpb") is None
    assert "the engine process was killed by SIGKILL in its training phase" in result["error"], result["error"]
    assert result["phase"] == "training" and not scorers
