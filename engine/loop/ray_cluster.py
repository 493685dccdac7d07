"""`--ray ADDRESS`: joining the Ray cluster and sizing the experiments it can hold.

The only module besides ray_workers.py that imports Ray, and only when `--ray` is given
(`pip install -e ".[ray]"`). An address it cannot reach is an error at start, never a hang:
Ray's own client waits for an unreachable head without end, so the head's port is tried first.

Each experiment asks Ray for `--devices-per-worker` (default 1) of one kind: TPU chips (the
"TPU" resource KubeRay and Ray's TPU support declare), else GPUs, else CPUs. JAX_PLATFORMS=cpu
asks for CPUs on any cluster.
"""
from __future__ import annotations

import dataclasses
import os
import socket
from pathlib import Path

from engine.errors import UserError

CONNECT_SECONDS = 10.0
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclasses.dataclass(frozen=True)
class Plan:
    resource: str  # "TPU", "GPU" or "CPU"
    per_experiment: int
    fits: int  # experiments the cluster's resources hold at once
    in_flight: int  # what the loop runs at once: fits, or fewer under --workers

    def options(self) -> dict:
        """The Ray task options that reserve one experiment's devices."""
        if self.resource == "GPU":
            return {"num_gpus": self.per_experiment, "num_cpus": 1}
        if self.resource == "TPU":
            return {"resources": {"TPU": self.per_experiment}, "num_cpus": 1}
        return {"num_cpus": self.per_experiment}

    def describe(self) -> str:
        unit = {"TPU": "TPU chip", "GPU": "GPU", "CPU": "CPU"}[self.resource]
        return (f"{self.in_flight} experiments in flight (the cluster fits {self.fits}), "
                f"{self.per_experiment} {unit}{'s' if self.per_experiment != 1 else ''} each")


def engine_packages() -> list[Path]:
    """The folders of the engine's packages (engine/, model/) that nodes import, found without
    importing model/ (its attention imports JAX, which the coordinator never does)."""
    import importlib.util

    found = []
    for name in ("engine", "model"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            found.append(Path(list(spec.submodule_search_locations)[0]))
    return found


def require_ray():
    try:
        import ray
    except ImportError:
        raise UserError("--ray needs the Ray extra: pip install -e \".[ray]\" (or pip install ray) on this "
                        "machine and on the cluster's nodes") from None
    return ray


def connect(address: str, ship: list[Path]) -> None:
    """Join the cluster at address (`auto`: the one this machine belongs to, as `ray start` left
    it or RAY_ADDRESS names it), shipping the engine's packages to its nodes (runtime_env
    py_modules), so every node runs the coordinator's engine. Raises UserError when it cannot."""
    ray = require_ray()
    if address != "auto":
        check_reachable(address)
    options = {"address": address, "logging_level": "ERROR", "log_to_driver": False,
               "runtime_env": {"py_modules": [str(p) for p in ship]}}
    host = _host(address)
    if host in LOOPBACK:
        options["_node_ip_address"] = "127.0.0.1"  # a cluster on this machine's loopback: the driver too
    try:
        ray.init(**options)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise UserError(f"--ray {address}: cannot join the Ray cluster ({error}). Start one with `ray start "
                        "--head` (and `ray start --address HEAD:6379` on each node), or give its address") from None


def check_reachable(address: str) -> None:
    """A TCP connection to the head's port, within CONNECT_SECONDS."""
    host, port = _host(address), _port(address)
    try:
        with socket.create_connection((host, port), timeout=CONNECT_SECONDS):
            return
    except OSError as error:
        raise UserError(f"--ray {address}: the Ray head at {host}:{port} cannot be reached ({error.strerror or error}). "
                        "Is the cluster up (`ray status` on the head)? Use the head's address and GCS port "
                        "(default 6379), or `auto` on a node of the cluster") from None


def _host(address: str) -> str:
    bare = address.split("://", 1)[-1]
    return bare.rsplit(":", 1)[0].strip("[]") if ":" in bare else bare


def _port(address: str) -> int:
    bare = address.split("://", 1)[-1]
    default = 10001 if address.startswith("ray://") else 6379
    if ":" not in bare:
        return default
    text = bare.rsplit(":", 1)[1]
    if not text.isdigit():
        raise UserError(f"--ray {address}: the port {text!r} is not a number; give HOST:PORT, e.g. 10.0.0.2:6379")
    return int(text)


def plan(nodes: list[dict], per_experiment: int | None, workers: int | None) -> Plan:
    """What each experiment asks for and how many run at once, from the resources of each
    alive node (ray.nodes()'s "Resources"): an experiment lives on one node, so what fits is
    summed node by node. Raises UserError when not one experiment fits."""
    resources = {}
    for node in nodes:
        for name, amount in node.items():
            resources[name] = resources.get(name, 0) + amount
    resource = _kind(resources)
    per = per_experiment or 1
    if per < 1:
        raise UserError(f"--devices-per-worker {per}: give at least 1")
    demand = Plan(resource, per, 1, 1).options()
    fits = sum(_fits(node, demand) for node in nodes)
    if fits < 1:
        raise UserError(f"the Ray cluster has {_have(resources, resource)} {resource}, but one experiment asks for "
                        f"{per}: lower --devices-per-worker, or add nodes")
    if workers is not None and workers < 1:
        raise UserError(f"--workers {workers}: give at least 1")
    return Plan(resource, per, fits, min(workers, fits) if workers else fits)


def _kind(resources: dict) -> str:
    forced = os.environ.get("JAX_PLATFORMS", "").split(",")[0].strip().lower()
    if forced == "cpu":
        return "CPU"
    if resources.get("TPU", 0) >= 1 and forced in ("", "tpu"):
        return "TPU"
    if resources.get("GPU", 0) >= 1 and forced in ("", "cuda", "gpu"):
        return "GPU"
    return "CPU"


def _fits(resources: dict, demand: dict) -> int:
    asked = {"CPU": demand.get("num_cpus", 0), "GPU": demand.get("num_gpus", 0), **demand.get("resources", {})}
    counts = [int(resources.get(name, 0) // amount) for name, amount in asked.items() if amount]
    return min(counts) if counts else 0


def _have(resources: dict, name: str) -> str:
    return f"{resources.get(name, 0):g}"
