"""Device visibility per parallel worker: each sees its own GPUs, TPU chips or CPU cores."""
import pytest

from engine.errors import UserError
from engine.loop.device_split import Devices, detect, split


def test_gpus_are_split_by_cuda_visible_devices():
    workers = split(Devices("gpu", 8), 4)
    assert [w.env["CUDA_VISIBLE_DEVICES"] for w in workers] == ["0,1", "2,3", "4,5", "6,7"]
    assert all(w.prefix == () for w in workers)


def test_tpu_chips_get_libtpu_bounds_and_a_port_each():
    workers = split(Devices("tpu", 8), 8)
    assert [w.env["TPU_VISIBLE_CHIPS"] for w in workers] == [str(i) for i in range(8)]
    assert {w.env["TPU_CHIPS_PER_PROCESS_BOUNDS"] for w in workers} == {"1,1,1"}
    assert {w.env["TPU_PROCESS_BOUNDS"] for w in workers} == {"1,1,1"}
    assert len({w.env["TPU_PROCESS_PORT"] for w in workers}) == 8
    assert len({w.env["TPU_MESH_CONTROLLER_PORT"] for w in workers}) == 8
    pairs = split(Devices("tpu", 8), 2, per_worker=4)
    assert pairs[1].env["TPU_VISIBLE_CHIPS"] == "4,5,6,7" and pairs[1].env["TPU_CHIPS_PER_PROCESS_BOUNDS"] == "2,2,1"


def test_cpu_cores_are_pinned_with_taskset(monkeypatch):
    monkeypatch.setattr("engine.loop.device_split._cpu_cores", lambda: [2, 3, 5, 7])
    workers = split(Devices("cpu", 4), 2)
    assert [w.ids for w in workers] == [(2, 3), (5, 7)]
    assert workers[1].prefix[-2:] == ("-c", "5,7") and workers[1].env["OMP_NUM_THREADS"] == "2"


def test_too_many_workers_or_odd_tpu_blocks_are_user_errors():
    with pytest.raises(UserError, match="needs 6 gpu devices but this host has 4"):
        split(Devices("gpu", 4), 3, per_worker=2)
    with pytest.raises(UserError, match="blocks of"):
        split(Devices("tpu", 8), 2, per_worker=3)


def test_detect_honours_jax_platforms_cpu(monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    found = detect()
    assert found.platform == "cpu" and found.count >= 1
