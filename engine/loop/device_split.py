"""Which devices each of `--workers N` may see: an environment (and a command prefix) per worker.

Found without JAX (the coordinator never imports it): GPUs from `nvidia-smi -L`, TPU chips
from /dev/accel* or /dev/vfio, else the CPU cores.

- GPU: CUDA_VISIBLE_DEVICES names the worker's GPUs.
- TPU: libtpu's settings for non-communicating processes on one VM: TPU_VISIBLE_CHIPS (and the
  older name TPU_VISIBLE_DEVICES), TPU_CHIPS_PER_PROCESS_BOUNDS for the worker's block of
  chips, TPU_PROCESS_BOUNDS=1,1,1, and a port of its own (TPU_PROCESS_PORT,
  TPU_MESH_CONTROLLER_ADDRESS/PORT), since two processes on one port would collide.
- CPU: `taskset` pins the worker to its cores, and the thread pools are sized to match.
"""
from __future__ import annotations

import dataclasses
import glob
import os
import shutil
import subprocess

from engine.errors import UserError

TPU_FIRST_PORT = 8476
# Chips per process -> TPU_CHIPS_PER_PROCESS_BOUNDS (x,y,z) on the 2-D v4/v5e/v6e hosts.
TPU_BOUNDS = {1: "1,1,1", 2: "1,2,1", 4: "2,2,1", 8: "2,4,1"}


@dataclasses.dataclass(frozen=True)
class Devices:
    platform: str  # "gpu", "tpu" or "cpu"
    count: int  # GPUs, TPU chips or CPU cores on this host


@dataclasses.dataclass(frozen=True)
class WorkerDevices:
    index: int
    ids: tuple[int, ...]  # the devices (or cores) this worker sees
    env: dict
    prefix: tuple[str, ...] = ()  # put before the train command (taskset on CPU)

    def describe(self, platform: str) -> str:
        return f"{platform} {','.join(map(str, self.ids))}"


def detect() -> Devices:
    """The accelerators of this host, found without importing JAX; JAX_PLATFORMS=cpu means CPU."""
    forced = os.environ.get("JAX_PLATFORMS", "").split(",")[0].strip().lower()
    if forced != "cpu":
        gpus = _count_gpus()
        if gpus and forced in ("", "cuda", "gpu"):
            return Devices("gpu", gpus)
        chips = len(glob.glob("/dev/accel*")) or len(glob.glob("/dev/vfio/[0-9]*"))
        if chips and forced in ("", "tpu"):
            return Devices("tpu", chips)
    return Devices("cpu", len(_cpu_cores()))


def _count_gpus() -> int:
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def split(devices: Devices, workers: int, per_worker: int | None = None) -> list[WorkerDevices]:
    """Give each worker its own devices: per_worker each (default: an equal share of all)."""
    if workers < 1:
        raise UserError(f"--workers {workers}: give at least 1")
    per_worker = per_worker or max(1, devices.count // workers)
    if per_worker < 1 or workers * per_worker > devices.count:
        raise UserError(f"--workers {workers} x --devices-per-worker {per_worker} needs {workers * per_worker} "
                        f"{devices.platform} devices but this host has {devices.count}: use fewer workers "
                        f"or fewer devices per worker")
    if devices.platform == "tpu" and per_worker not in TPU_BOUNDS:
        raise UserError(f"--devices-per-worker {per_worker} on TPU: libtpu splits a host into blocks of "
                        f"{', '.join(map(str, TPU_BOUNDS))} chips; choose one of those")
    names = _cpu_cores() if devices.platform == "cpu" else list(range(devices.count))
    out = []
    for index in range(workers):
        ids = tuple(names[index * per_worker: (index + 1) * per_worker])
        env, prefix = _visibility(devices.platform, index, ids)
        out.append(WorkerDevices(index, ids, env, prefix))
    return out


def _cpu_cores() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def _visibility(platform: str, index: int, ids: tuple[int, ...]) -> tuple[dict, tuple[str, ...]]:
    listed = ",".join(map(str, ids))
    if platform == "gpu":
        return {"CUDA_VISIBLE_DEVICES": listed}, ()
    if platform == "tpu":
        port = TPU_FIRST_PORT + index
        return {"TPU_VISIBLE_CHIPS": listed, "TPU_VISIBLE_DEVICES": listed,
                "TPU_CHIPS_PER_PROCESS_BOUNDS": TPU_BOUNDS[len(ids)], "TPU_PROCESS_BOUNDS": "1,1,1",
                "TPU_PROCESS_PORT": str(port), "TPU_MESH_CONTROLLER_ADDRESS": f"localhost:{port}",
                "TPU_MESH_CONTROLLER_PORT": str(port)}, ()
    threads = str(len(ids))
    env = {"OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    prefix = ("taskset", "-c", listed) if shutil.which("taskset") else ()
    return env, prefix
