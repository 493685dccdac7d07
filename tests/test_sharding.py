"""1 device vs 8 (virtual CPU) devices: same steps and val_bpb under a flops budget; sharding rules."""
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest
from jax.sharding import PartitionSpec as P

from engine.training import sharding
from engine.errors import UserError

TINY_TRAIN = Path(__file__).parent / "fixtures" / "tiny_train.py"
FLOPS = "1.5e9"  # about 15 steps of the tiny model


def train_on(devices: int, data_dir, tmp_path, train_py=TINY_TRAIN, *flags) -> tuple[int, dict, str]:
    """A train run in its own process, which sees `devices` CPU devices."""
    out = tmp_path / f"result-{devices}-{Path(train_py).stem}.json"
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    done = subprocess.run([sys.executable, "-m", "engine.cli", "train", str(train_py), "--data", str(data_dir),
                           "--json", str(out), "--no-checkpoint", *flags],
                          env=env, capture_output=True, text=True, timeout=300)
    return done.returncode, json.loads(out.read_text()), done.stderr


def fsdp_train(tmp_path) -> Path:
    path = tmp_path / "fsdp_train.py"
    path.write_text(TINY_TRAIN.read_text().replace('SHARDING = "replicated"', 'SHARDING = "fsdp"'))
    return path


def test_one_and_eight_devices_agree_under_a_flops_budget(prepared_data, tmp_path):
    code1, one, err1 = train_on(1, prepared_data, tmp_path, TINY_TRAIN, "--budget-flops", FLOPS)
    code8, eight, err8 = train_on(8, prepared_data, tmp_path, TINY_TRAIN, "--budget-flops", FLOPS)
    code_fsdp, fsdp, err_fsdp = train_on(8, prepared_data, tmp_path, fsdp_train(tmp_path),
                                         "--budget-flops", FLOPS)
    assert code1 == code8 == code_fsdp == 0, err1 + err8 + err_fsdp
    assert (one["num_devices"], eight["num_devices"]) == (1, 8)
    # XLA's count of the unpartitioned step does not depend on how it is partitioned.
    assert one["step_flops"] == eight["step_flops"] == fsdp["step_flops"]
    assert one["num_steps"] == eight["num_steps"] == fsdp["num_steps"] > 1
    assert eight["val_bpb"] == pytest.approx(one["val_bpb"], abs=1e-4)
    assert fsdp["val_bpb"] == pytest.approx(one["val_bpb"], abs=1e-4)


def test_batch_that_cannot_split_over_devices_fails_fast(prepared_data, tmp_path):
    path = tmp_path / "odd_batch.py"
    path.write_text(TINY_TRAIN.read_text().replace("BATCH_SIZE = 8", "BATCH_SIZE = 12"))
    code, result, err = train_on(8, prepared_data, tmp_path, path, "--budget-seconds", "60")
    assert code == 2
    assert "Experiment.batch_size = 12 cannot be split evenly over 8 devices" in err
    assert result["status"] == "crash"


def test_fsdp_splits_the_largest_divisible_dimension():
    assert sharding.fsdp_spec((512, 32), 8) == P("data", None)
    assert sharding.fsdp_spec((30, 1024), 8) == P(None, "data")
    assert sharding.fsdp_spec((30, 1022), 8) == P()  # nothing divides: replicated
    assert sharding.fsdp_spec((16,), 8) == P()  # small: replicated
    assert sharding.fsdp_spec((512, 32), 1) == P()


def test_rules_give_shardings_for_every_leaf():
    mesh = sharding.make_mesh()
    state = {"w": jax.ShapeDtypeStruct((64, 128), "float32"), "b": jax.ShapeDtypeStruct((3,), "float32")}
    seen = []

    def rule(path, shape, axis_size):
        seen.append((path, shape, axis_size))
        return P() if len(shape) == 1 else P(None, "data")

    out = sharding.state_shardings(state, rule, mesh)
    assert out["w"].spec == P(None, "data") and out["b"].spec == P()
    assert sorted(seen) == [("['b']", (3,), 1), ("['w']", (64, 128), 1)]
    assert sharding.state_shardings(state, "replicated", mesh)["w"].spec == P()


def test_bad_rules_are_user_errors():
    mesh = sharding.make_mesh()
    state = {"w": jax.ShapeDtypeStruct((64, 128), "float32")}
    with pytest.raises(UserError, match="not a rule"):
        sharding.state_shardings(state, "zero3", mesh)
    with pytest.raises(UserError, match="return a jax.sharding.PartitionSpec"):
        sharding.state_shardings(state, lambda path, shape, n: "data", mesh)
    with pytest.raises(UserError, match="more entries than dimensions"):
        sharding.state_shardings(state, lambda path, shape, n: P(None, None, "data"), mesh)


def test_batch_divisibility_message():
    mesh = sharding.make_mesh()
    with pytest.raises(UserError, match="batch_size = 0"):
        sharding.check_divisible(0, mesh, "Experiment.batch_size")
