"""engine/tracking: every experiment of a loop in TensorBoard's event files (read back with
TensorBoard's own reader), and the same records in W&B (offline) and MLflow (a local store)."""
import json
import time
from pathlib import Path

import pytest

from engine.tracking import TrackerSettings, Trackers
from engine.tracking.records import constants, phase_seconds, run_name

REPO = Path(__file__).resolve().parents[1]
SCORE = """import sys, yaml
x = yaml.safe_load(open('value.yaml'))['x']
if x < 0.5:
    sys.exit('score blew up at x = %s' % x)
print('loss:', (x - 3) ** 2)
"""
PROGRAM = """# t
## Task
- kind: command
- editable: value.yaml
- score: python score.py
- metric: loss
- direction: minimize
## Noise
- baseline_runs: 2
- confirm_runs: 0
"""
TRACKERS = """## Trackers
- wandb: true
- mlflow: true
"""
# experiment number -> x: the baseline (1.0) twice, then a keep, a crash and a discard
AGENT = ("python -c \"import os; x = {2: 2.0, 3: 0.25, 4: 5.0}[int(os.environ['AUTORESEARCH_EXPERIMENT'])]; "
         "open('value.yaml', 'w').write('x: %s\\n' % x); print('set x to', x)\"")


def event_runs(logdir: Path) -> dict:
    """TensorBoard's own reader over each run directory under logdir."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    runs = {}
    for events in logdir.rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events.parent), size_guidance={"scalars": 0, "tensors": 0})
        accumulator.Reload()
        runs[str(events.parent.relative_to(logdir))] = accumulator
    return runs


def scalars(accumulator, tag: str) -> dict[int, float]:
    return {event.step: event.value for event in accumulator.Scalars(tag)}


def session_hparams(accumulator) -> dict:
    """The HParams plugin's session start info of a run: hyperparameter name -> value."""
    from tensorboard.plugins.hparams import plugin_data_pb2
    content = accumulator.SummaryMetadata("_hparams_/session_start_info").plugin_data.content
    info = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    return {name: value.WhichOneof("kind") and getattr(value, value.WhichOneof("kind"))
            for name, value in info.hparams.items()}


def run_command_loop(root: Path, program: str):
    pytest.importorskip("tensorboard")
    from loop_helpers import git, run_cli
    root.mkdir(parents=True)
    for name, text in {"value.yaml": "x: 1.0\n", "score.py": SCORE, "program.md": program,
                       ".gitignore": "runs/\n__pycache__/\n"}.items():
        (root / name).write_text(text)
    git(root, "init", "-q", "-b", "main")
    for args in (("add", "-A"), ("commit", "-q", "-m", "start")):
        git(root, "-c", "user.email=t@e", "-c", "user.name=t", *args)
    done = run_cli(root, "loop", "--tag", "t", "--agent", "command", "--agent-cmd", AGENT, "--max-experiments", "5",
                   env={"PYTHONPATH": str(REPO), "WANDB_SILENT": "true"}, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return root / "runs" / "t", done


@pytest.fixture(scope="module")
def command_loop(tmp_path_factory):
    return run_command_loop(tmp_path_factory.mktemp("tracking") / "repo", PROGRAM)


def test_a_command_loop_writes_every_experiment_to_tensorboard(command_loop):
    run_dir, done = command_loop
    runs = event_runs(run_dir / "tensorboard")
    assert sorted(runs) == ["exp-0000", "exp-0001", "exp-0002", "exp-0003", "exp-0004", "loop"]
    loop = runs["loop"]
    assert scalars(loop, "loop/loss") == {0: 4.0, 1: 4.0, 2: 1.0, 4: 4.0}  # the crash has no score
    assert scalars(loop, "loop/best_so_far")[4] == 1.0 and scalars(loop, "loop/kept_changes")[4] == 1.0
    assert scalars(loop, "loop/keep_rate")[4] == pytest.approx(1 / 3)  # 1 kept of 3 candidates
    assert scalars(runs["exp-0002"], "result/loss") == {0: 1.0}
    hparams = session_hparams(runs["exp-0002"])
    assert hparams["x"] == 2.0 and hparams["status"] == "keep" and hparams["side"] == "command agent"
    assert session_hparams(runs["exp-0000"])["status"] == "baseline"
    assert session_hparams(runs["exp-0003"])["status"] == "crash"
    assert "tracking:" not in done.stdout  # no tracker warned


@pytest.mark.slow  # W&B and MLflow start up for each experiment: ~40 s on 2 idle cores
def test_wandb_offline_and_mlflow_receive_the_same_values(tmp_path):
    pytest.importorskip("mlflow")
    pytest.importorskip("wandb")
    run_dir, done = run_command_loop(tmp_path / "repo", PROGRAM + TRACKERS)
    assert "tracking:" not in done.stdout
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri=f"sqlite:///{run_dir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("t")
    found = {run.info.run_name: run for run in client.search_runs([experiment.experiment_id])}
    assert sorted(found) == [f"exp-{n:04d}" for n in range(5)]
    assert found["exp-0002"].data.metrics["result/loss"] == 1.0 and found["exp-0002"].data.params["x"] == "2.0"
    assert found["exp-0002"].data.tags["status"] == "keep" and found["exp-0000"].data.tags["status"] == "baseline"
    assert found["exp-0004"].data.metrics["loop/best_so_far"] == 1.0
    runs = [wandb_offline_run(path) for path in (run_dir / "wandb").glob("offline-run-*/run-*.wandb")]
    by_name = {run["name"]: run for run in runs}
    assert sorted(by_name) == [f"exp-{n:04d}" for n in range(5)] and {run["group"] for run in runs} == {"t"}
    assert by_name["exp-0002"]["summary"]["result/loss"] == 1.0 and by_name["exp-0002"]["config"]["x"] == 2.0
    assert by_name["exp-0002"]["config"]["status"] == "keep" and by_name["exp-0000"]["config"]["status"] == "baseline"
    assert by_name["exp-0004"]["summary"]["loop/best_so_far"] == 1.0


def wandb_offline_run(path: Path) -> dict:
    """An offline W&B run's name, group, config and summary, read from its transaction log (LevelDB's
    log format: 32 KiB blocks of records, each a 7-byte header, then a piece of a Record protobuf)."""
    import struct
    from wandb.proto import wandb_internal_pb2
    data, block, pos, piece = path.read_bytes(), 32768, 7, b""  # the file starts with a 7-byte header
    found = {"summary": {}, "config": {}}
    while pos + 7 <= len(data):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7]) if left >= 7 else (0, 0, 0)
        if length == 0 and kind == 0:
            pos += left  # the zero padding at the end of a block
            continue
        piece, pos = piece + data[pos + 7: pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = wandb_internal_pb2.Record.FromString(piece)
            piece, which = b"", record.WhichOneof("record_type")
            if which == "run":
                found.update(name=record.run.display_name, group=record.run.run_group)
                values = {item.key: json.loads(item.value_json) for item in record.run.config.update}
                found["config"].update({key: value["value"] if isinstance(value, dict) and "value" in value else value
                                        for key, value in values.items() if key != "_wandb"})
            elif which == "summary":
                found["summary"].update({item.key: json.loads(item.value_json) for item in record.summary.update})
    return found


def test_a_tracker_that_fails_warns_once_and_the_others_go_on(tmp_path):
    pytest.importorskip("tensorboardX")
    said = []
    trackers = Trackers(tmp_path, TrackerSettings(mlflow=True, mlflow_tracking_uri="http://127.0.0.1:9"), say=said.append)
    rows = [{"experiment": 0, "role": "baseline", "status": "baseline", "kept": True, "val_bpb": 2.0, "best_after": 2.0,
             "description": "baseline", "commit": "a" * 40},
            {"experiment": 1, "role": "candidate", "status": "discard", "kept": False, "val_bpb": 2.1,
             "description": "wider", "commit": "b" * 40, "agent": "offline"}]
    for n in range(2):
        trackers.record(rows[n], rows[: n + 1], None, {"train.py": "LR = 0.1\nNAME = 'x'\n"})
    trackers.close()
    assert len([line for line in said if "MLflow" in line or "mlflow" in line]) == 1, said
    assert (tmp_path / "tensorboard" / "exp-0001").is_dir() and (tmp_path / "tensorboard" / "loop").is_dir()


def test_record_pieces():
    assert run_name({"experiment": 3}) == "exp-0003" and run_name({"experiment": 3, "worker": "w1"}) == "w1/exp-0003"
    assert phase_seconds({"phase_seconds": {"trace": 1.5, "compile": None}, "wall_seconds": 9.0}) == \
        {"trace": 1.5, "wall": 9.0}
    assert phase_seconds({"compile_seconds": 2.0, "training_seconds": 30.0, "wall_seconds": 40.0}) == \
        {"compile": 2.0, "training": 30.0, "wall": 40.0}
    source = "LEARNING_RATE = 0.04  # peak\nSIZE = dict(depth=4)\nATTENTION = 'xla'\nUSE_BIAS = False\nx = 3\n"
    assert constants({"train.py": source}) == {"LEARNING_RATE": 0.04, "SIZE.depth": 4, "ATTENTION": "xla",
                                               "USE_BIAS": False}
    assert constants({"train.py": "def broken(:\n"}) == {}


def live_losses(logdir: Path, expected_steps: int, wait_s: float = 30.0) -> dict[int, float]:
    """train/loss of exp-0001 as TensorBoard reads it, once it holds expected_steps steps (tensorboardX
    writes from a thread and flushes every few seconds: the viewer sees new points that late too)."""
    deadline = time.monotonic() + wait_s
    while True:
        runs = event_runs(logdir)
        found = scalars(runs["exp-0001"], "train/loss") if "exp-0001" in runs and \
            "train/loss" in runs["exp-0001"].Tags()["scalars"] else {}
        if len(found) >= expected_steps or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_a_running_experiments_curve_grows_live_and_is_not_written_twice(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    from engine.tracking import to_tensorboard
    monkeypatch.setattr(to_tensorboard, "FOLLOW_INTERVAL", 0.0)
    monkeypatch.setattr(to_tensorboard, "FLUSH_SECONDS", 0.2)
    exp_dir = tmp_path / "exp-0001"
    exp_dir.mkdir()
    history = exp_dir / "history.jsonl"
    point = lambda step: json.dumps({"step": step, "loss": 5.0 - step / 8, "fraction": step / 8}) + "\n"
    trackers = Trackers(tmp_path, TrackerSettings(), say=print)
    history.write_text(point(1) + point(2) + '{"step": 3, "lo')  # a line still being written
    trackers.follow("exp-0001", exp_dir)
    assert live_losses(tmp_path / "tensorboard", 2) == {1: 4.875, 2: 4.75}  # before the run is recorded
    history.write_text(point(1) + point(2) + point(3) + point(4))
    trackers.follow("exp-0001", exp_dir)
    assert sorted(live_losses(tmp_path / "tensorboard", 4)) == [1, 2, 3, 4]
    row = {"experiment": 1, "role": "candidate", "status": "discard", "kept": False, "val_bpb": 2.5, "num_steps": 4}
    trackers.record(row, [row], exp_dir, {})
    trackers.close()
    run = event_runs(tmp_path / "tensorboard")["exp-0001"]
    assert [event.step for event in run.Scalars("train/loss")] == [1, 2, 3, 4]  # each step once
    assert scalars(run, "result/val_bpb") == {4: 2.5} and session_hparams(run)["status"] == "discard"
