"""A mistake in train.py is reported once, as one line naming train.py's line and its source,
with no traceback through the engine unless --verbose (engine/training/tracer.py)."""
import argparse
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.errors import UserError
from engine.training import tracer, trainer

ROOT = Path(__file__).resolve().parent.parent
LAYOUT = {"platform": "cpu", "device_kind": "cpu", "num_devices": 1, "num_processes": 1, "vocab_size": 256,
          "bos_id": 1, "eval_sequence_length": 128, "eval_tokens": 1024, "budget_mode": "tokens",
          "budget_value": 1e4, "seed": 0}
# (what to break, how, the line that must be named)
BREAKS = {
    "syntax": ("MATRIX_LR = 0.06", "MATRIX_LR = = 0.06", "SyntaxError"),
    "shape": ("x_MD + y_BTNH.reshape(M, D) @ self.attn_out[...]", "x_MD + y_BTNH.reshape(M, D) @ self.mlp_in[...]",
              "TypeError"),
}


def broken_copy(tmp_path: Path, kind: str) -> tuple[Path, int, str]:
    old, new, _ = BREAKS[kind]
    text = (ROOT / "train.py").read_text()
    assert text.count(old) == 1
    path = tmp_path / "train.py"
    path.write_text(text.replace(old, new))
    line_number = next(i for i, line in enumerate(path.read_text().splitlines(), 1) if new in line)
    return path, line_number, new


def trace(tmp_path: Path, path: Path) -> str:
    (tmp_path / "data").mkdir(exist_ok=True)
    started = tracer.start(path, tmp_path / "programs", tmp_path / "data")
    with pytest.raises((tracer.TraceFailed, UserError)) as failed:
        tracer.finish(started, {**LAYOUT, "data_dir": str(tmp_path / "data")})
    return str(failed.value)


@pytest.mark.parametrize("kind", sorted(BREAKS))
def test_a_broken_train_py_names_its_line_once_without_engine_traceback(tmp_path, capfd, monkeypatch, kind):
    monkeypatch.delenv("AUTORESEARCH_VERBOSE", raising=False)
    path, line_number, source = broken_copy(tmp_path, kind)
    reason = trace(tmp_path, path)
    assert reason.startswith(f"train.py:{line_number}: "), reason
    assert f"{BREAKS[kind][2]}: " in reason
    assert reason.endswith(f"the line: {source.strip()}") or source.strip() in reason
    assert "\n" not in reason
    stderr = capfd.readouterr().err
    assert "Traceback" not in stderr and "engine/training/tracer.py" not in stderr, stderr


def test_verbose_shows_the_traceback_too(tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("AUTORESEARCH_VERBOSE", "1")
    path, line_number, _ = broken_copy(tmp_path, "shape")
    assert trace(tmp_path, path).startswith(f"train.py:{line_number}: ")
    assert "Traceback" in capfd.readouterr().err


def test_the_trainer_child_leaves_saying_the_error_to_its_launcher(capsys):
    args = argparse.Namespace(trainer_only=True, json_path=None)
    trainer._fail(args, "crash", "train.py:3: TypeError: no")
    assert capsys.readouterr().err == ""  # the launcher prints the result's error, once


def test_a_trainer_that_fails_before_the_layout_ends_its_early_tracer(tmp_path):
    """The engine process starts its tracer before JAX; if it fails before sending the layout
    (here: an unreadable cache), the tracer ends with it, leaving neither a process nor an
    error of its own in the run's programs folder."""
    data = tmp_path / "cache"
    data.mkdir()
    (data / "manifest.json").write_text("{not json")
    run_dir = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "engine.cli", "train", str(ROOT / "train.py"),
                           "--trainer-only", "--run-dir", str(run_dir), "--data", str(data),
                           "--json", str(tmp_path / "result.json")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    time.sleep(1.0)  # a tracer left waiting would write its error.json about now
    assert "Traceback" not in done.stderr
    assert not (run_dir / "programs" / "error.json").exists()
    listed = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(run_dir / "programs") not in listed
