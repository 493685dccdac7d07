"""Two real processes on 127.0.0.1 (gloo CPU collectives) form one mesh and train one experiment."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

TINY_TRAIN = Path(__file__).parent / "fixtures" / "tiny_train.py"
FLOPS = "1.5e9"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(data_dir, out: Path, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "engine.cli", "train", str(TINY_TRAIN), "--data", str(data_dir),
            "--budget-flops", FLOPS, "--json", str(out), "--run-dir", str(run_dir)]


def base_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
    return env


def run_two_processes(data_dir, tmp_path) -> list[subprocess.CompletedProcess]:
    port = free_port()
    procs = []
    for index in range(2):
        env = dict(base_env(), JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
                   JAX_PROCESS_ID=str(index))
        procs.append(subprocess.Popen(command(data_dir, tmp_path / f"host{index}.json", tmp_path / "run2"),
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        outputs = [p.communicate(timeout=240) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return [subprocess.CompletedProcess(p.args, p.returncode, out, err) for p, (out, err) in zip(procs, outputs)]


def test_two_processes_train_like_one(prepared_data, tmp_path):
    single = subprocess.run(command(prepared_data, tmp_path / "single.json", tmp_path / "run1"),
                            env=base_env(), capture_output=True, text=True, timeout=240)
    assert single.returncode == 0, single.stderr
    hosts = run_two_processes(prepared_data, tmp_path)
    assert [h.returncode for h in hosts] == [0, 0], hosts[0].stderr[-2000:] + hosts[1].stderr[-2000:]
    one = json.loads((tmp_path / "single.json").read_text())
    two = json.loads((tmp_path / "host0.json").read_text())
    assert not (tmp_path / "host1.json").exists()  # only host 0 writes the result
    assert (two["num_processes"], two["num_devices"]) == (2, 2)
    assert two["step_flops"] == one["step_flops"]
    assert two["num_steps"] == one["num_steps"]
    assert two["val_bpb"] == pytest.approx(one["val_bpb"], abs=1e-4)
    # Every host reports the same score, and the shared checkpoint restores it.
    assert hosts[1].stdout.rstrip().splitlines()[-1].startswith("device:")
    scored = subprocess.run([sys.executable, "-m", "engine.cli", "evaluate", str(TINY_TRAIN), "--checkpoint",
                             two["checkpoint"], "--data", str(prepared_data)],
                            env=base_env(), capture_output=True, text=True, timeout=240)
    assert scored.returncode == 0, scored.stderr
    assert float(scored.stdout.split("val_bpb:")[1]) == pytest.approx(two["val_bpb"], abs=1e-5)
