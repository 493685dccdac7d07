"""One experiment on the Ray node that runs it: unpack the commit, check the data, run, report.

Called inside a Ray task (engine/loop/ray_workers.py) but imports no Ray itself, so it reads
and tests as plain code. The node runs exactly what `--workers` runs on the coordinator's host:
the task kind's own `run` (engine/loop/tasks.py), so a train task is a `python -P -m engine.cli
train ... --json` subprocess in the unpacked snapshot of the candidate commit, with the node's
local prepared cache; a command task runs its check and score there.

Data: the node's cache must hold the manifest fingerprint the coordinator's cache holds. When
the node has no cache of that name, it prepares one from the manifest's dataset spec (one
prepare per node at a time, under a file lock); a cache whose fingerprint differs is refused
with both fingerprints (DataMismatch), which the coordinator turns into an error at the loop.
A node without the split key the coordinator's cache was made with is refused the same way,
with the command to run there (engine/data/split_key.py).

Checkpoint: left on the node (under runs_root()), or copied to a folder the
user names (`--ray-checkpoints`): a local path by a plain copy, `gs://...` through etils.epath,
the file API TFDS uses.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import time
import uuid
from pathlib import Path

from engine import paths
from engine.data import split_key
from engine.errors import UserError
from engine.loop import tasks
from engine.loop.device_split import TPU_FIRST_PORT, WorkerDevices
from engine.processes import engine_command

LOG_LIMIT_BYTES = 4 << 20  # the tail of a run's log that travels back to the coordinator
PREPARE_TIMEOUT_SECONDS = 4 * 3600


class DataMismatch(UserError):
    """The node's prepared cache is not the one the loop's results are comparable within."""


@dataclasses.dataclass(frozen=True)
class Request:
    """What the coordinator sends with each experiment (the snapshot travels as its own object)."""
    tag: str
    job: str  # a name for the run folder, unique in the loop
    program: object  # engine.loop.protocol.Program
    seed: int
    data: dict | None  # the coordinator's manifest (name, fingerprint, spec, constants); None: a command task
    resource: str  # "TPU", "GPU" or "CPU"
    count: int  # how many of them the task holds
    checkpoints: str | None = None  # where to copy the checkpoint (None: leave it on the node)
    passed_env: dict = dataclasses.field(default_factory=dict)  # the task's pass_env values, from the coordinator


def on_node(request: Request, snapshot: bytes) -> dict:
    """The Ray task's body: run() with the accelerators Ray gave this task, and the node's id."""
    import ray

    context = ray.get_runtime_context()
    node_id = context.get_node_id()
    reply = run(request, snapshot, context.get_accelerator_ids(), f"{socket.gethostname()}/{node_id[:8]}")
    return {**reply, "node_id": node_id}


def remove_run(checkpoint: str) -> None:
    """Delete a discarded run's folder on this node (the parent of its checkpoint, under ray-runs)."""
    folder = Path(checkpoint).parent
    if runs_root() in folder.parents:
        shutil.rmtree(folder, ignore_errors=True)


def run(request: Request, snapshot: bytes, accelerator_ids: dict | None = None, node: str | None = None) -> dict:
    """Run one experiment here. Returns the outcome as plain data: status, result, returncode,
    wall_seconds, error, log (its last LOG_LIMIT_BYTES), log_name, node (HOST/NODE-ID)."""
    node = node or socket.gethostname()
    source, run_dir = run_places(request.tag, request.job)
    folder = run_dir.parent
    try:
        unpack(snapshot, source)
        data_dir = local_data(request.data, node) if request.data else None
        task = tasks.make_task(request.program, data_dir)
        with passed(request.passed_env):
            outcome = task.run(run_dir, request.seed, source, devices=devices(request, accelerator_ids or {}))
    finally:
        shutil.rmtree(source, ignore_errors=True)
    result = dict(outcome.result)
    where = place_checkpoint(run_dir, request, result)
    if where is not None:
        result["checkpoint"] = where
        result["checkpoint_node"] = None if "://" in where or request.checkpoints else node
    if request.checkpoints or where is None:
        shutil.rmtree(folder, ignore_errors=True)
    return {"status": outcome.status, "result": result, "returncode": outcome.returncode,
            "wall_seconds": outcome.wall_seconds, "error": outcome.error, "log": read_tail(outcome.log_path),
            "log_name": outcome.log_path.name, "node": node}


def runs_root() -> Path:
    """Where runs live on a node: AUTORESEARCH_RAY_RUNS, else beside the data cache (never inside
    it: training may not read the cache, and the snapshot's train.py runs from here)."""
    named = os.environ.get("AUTORESEARCH_RAY_RUNS")
    cache = paths.cache_root()
    return Path(named).absolute() if named else cache.parent / f"{cache.name}-ray-runs"


def run_places(tag: str, job: str) -> tuple[Path, Path]:
    """(source, run directory) of one new run of `job` on this node: the commit unpacked in
    runs_root()/src/TAG/JOB-HEX, the run in runs_root()/runs/TAG/JOB-HEX/run. The runs/ level is
    what the tracer denies as other runs (engine/training/sandbox.runs_root), so one job's
    train.py cannot read another's checkpoint or programs here; its own source is outside it."""
    name = f"{job}-{uuid.uuid4().hex[:8]}"
    return runs_root() / "src" / tag / name, runs_root() / "runs" / tag / name / "run"


@contextlib.contextmanager
def passed(values: dict):
    """The variables a command task's `pass_env` names, as the coordinator has them, for this run
    only (a Ray worker process runs many tasks)."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def unpack(snapshot: bytes, target: Path) -> None:
    """The commit's files (a `git archive` tar) into target; no member may leave it."""
    target.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(snapshot)) as archive:
        archive.extractall(target, filter="data")


def devices(request: Request, accelerator_ids: dict) -> WorkerDevices:
    """The run's device settings on this node. Ray already names the GPUs (CUDA_VISIBLE_DEVICES)
    and TPU chips (TPU_VISIBLE_CHIPS) it gave the task; what it leaves out is added here: a
    libtpu port of its own per block of chips (two processes on one port collide) and thread
    pools sized to the CPUs held."""
    ids = tuple(int(i) for i in accelerator_ids.get(request.resource, []) if str(i).isdigit())
    if request.resource == "TPU" and ids:
        port = TPU_FIRST_PORT + min(ids)
        env = {"TPU_PROCESS_PORT": str(port), "TPU_MESH_CONTROLLER_ADDRESS": f"localhost:{port}",
               "TPU_MESH_CONTROLLER_PORT": str(port)}
        return WorkerDevices(0, ids, env)
    if request.resource == "GPU":
        return WorkerDevices(0, ids, {})
    threads = str(request.count)
    return WorkerDevices(0, ids, {"OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads,
                                  "MKL_NUM_THREADS": threads, "JAX_PLATFORMS": "cpu"})


def local_data(manifest: dict, node: str) -> Path:
    """This node's prepared cache with the manifest's fingerprint, prepared here when missing.
    Raises DataMismatch when the node's cache of that name holds other data."""
    wanted = manifest["fingerprint"]
    found = paths.find_data_dir(wanted)
    if found is not None:
        return found
    root = paths.cache_root()
    root.mkdir(parents=True, exist_ok=True)
    check_split_key(manifest, root, node)
    with open(root / f".prepare-{manifest['name']}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one prepare per dataset per node; the others wait for it
        found = paths.find_data_dir(wanted)
        if found is None and not (root / manifest["name"] / "manifest.json").exists():
            prepare(manifest)
            found = paths.find_data_dir(wanted)
    if found is not None:
        return found
    raise DataMismatch(differs(manifest, root / manifest["name"], node))


def check_split_key(manifest: dict, root: Path, node: str) -> None:
    """A node prepares only with the key the coordinator's cache was split with (the operator
    copies it: engine/data/split_key.py), never with one of its own."""
    wanted = manifest.get("split_key_id")
    if wanted and split_key.root_key_id(root) != wanted:
        raise DataMismatch(split_key.missing_key_message(root, wanted, f"node {node} (cache {root})",
                                                         split_key.prepare_command(manifest)))


def differs(manifest: dict, local: Path, node: str) -> str:
    try:
        theirs = json.loads((local / "manifest.json").read_text()).get("fingerprint")
    except (OSError, ValueError):
        theirs = "none (no manifest.json)"
    return (f"node {node} refused: its prepared cache {local} has fingerprint {theirs}, but the loop's data "
            f"has {manifest['fingerprint']} (dataset {manifest['spec'].get('dataset')}); results are comparable "
            f"only within one fingerprint. Remove {local} on that node (it is prepared again from the same "
            f"spec), or give the node the coordinator's cache")


def prepare_command(manifest: dict) -> list[str]:
    """`autoresearch prepare` with the options that made the coordinator's cache."""
    spec, constants = manifest["spec"], manifest["constants"]
    command = engine_command("prepare", "--dataset", spec["dataset"], "--vocab-size", str(spec["vocab_size"]),
                             "--seq-len", str(constants["sequence_length"]),
                             "--eval-tokens", str(constants["eval_tokens"]))
    for flag, key in (("--max-chars", "max_chars"), ("--text-key", "text_key"), ("--data-dir", "data_dir")):
        if spec.get(key) is not None:
            command += [flag, str(spec[key])]
    return command


def prepare(manifest: dict) -> None:
    done = subprocess.run(prepare_command(manifest), capture_output=True, text=True, timeout=PREPARE_TIMEOUT_SECONDS)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise UserError(f"node {socket.gethostname()} could not prepare {manifest['spec'].get('dataset')}: "
                        + " / ".join(tail))


def place_checkpoint(run_dir: Path, request: Request, result: dict) -> str | None:
    """Where the run's checkpoint is now: its folder on this node, or its copy under
    request.checkpoints (a local path or a gs:// URL); None when the run saved none."""
    checkpoint = run_dir / "checkpoint"
    if not checkpoint.is_dir():
        return None
    if not request.checkpoints:
        return str(checkpoint)
    target = f"{request.checkpoints.rstrip('/')}/{request.tag}/{request.job}-{int(time.time())}/checkpoint"
    if "://" in request.checkpoints:
        upload(checkpoint, target)
    else:
        shutil.copytree(checkpoint, target)
    return target


def upload(folder: Path, target: str) -> None:
    """Copy folder to a URL (gs://...) file by file, through etils.epath as TFDS does."""
    from etils import epath

    destination = epath.Path(target)
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            out = destination / path.relative_to(folder).as_posix()
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(path.read_bytes())


def read_tail(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, os.path.getsize(path) - LOG_LIMIT_BYTES))
            return handle.read().decode(errors="replace")
    except OSError:
        return ""
