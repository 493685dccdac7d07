"""Which devices this run has: platform, kind, peak FLOP/s for MFU, peak memory.

Also joins a multi-host run (jax.distributed) before anything else touches JAX's
backends, because devices of other hosts are visible only after that.
"""
from __future__ import annotations

import os
import resource
import sys

import jax

# Dense bf16 peak FLOP/s per JAX device (a TPU v2/v3 device is one core; later TPUs
# and GPUs expose one device per chip). Sources: Cloud TPU system-architecture pages,
# NVIDIA data sheets (dense, i.e. without 2:4 sparsity). Matched in order against the
# lower-cased device_kind, so the more specific names come first.
PEAK_FLOPS_BY_KIND: tuple[tuple[str, float], ...] = (
    ("tpu v2", 22.5e12),
    ("tpu v3", 61.5e12),
    ("tpu v4 lite", 137.5e12),
    ("tpu v4", 275e12),
    ("tpu v5 lite", 197e12),  # v5e
    ("tpu v5e", 197e12),
    ("tpu v5p", 459e12),
    ("tpu v5", 459e12),  # v5p reports itself as "TPU v5"
    ("tpu v6 lite", 918e12),  # v6e, Trillium
    ("tpu v6e", 918e12),
    ("tpu7x", 2307e12),  # Ironwood
    ("h100 pcie", 756e12),
    ("h100 nvl", 835e12),
    ("h100", 989e12),
    ("h200", 989e12),
    ("h800", 989e12),
    ("gh200", 989e12),
    ("b200", 2250e12),
    ("gb200", 2500e12),
    ("a100", 312e12),
    ("a800", 312e12),
    ("l40s", 362e12),
    ("l4", 121e12),
    ("a10g", 125e12),
    ("a10", 125e12),
    ("v100", 125e12),
    ("t4", 65e12),
)

# Environment variables that ask for a multi-process run (JAX reads the same names).
COORDINATOR_ENV = "JAX_COORDINATOR_ADDRESS"
NUM_PROCESSES_ENV = "JAX_NUM_PROCESSES"
PROCESS_ID_ENV = "JAX_PROCESS_ID"


def initialize_distributed() -> None:
    """Join a multi-process run when the environment describes one; a no-op otherwise.

    Explicit: JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID (any platform,
    CPU included, with gloo collectives). Implicit: a multi-host Cloud TPU slice, whose
    metadata JAX reads itself.
    """
    if _already_initialized():
        return
    address = os.environ.get(COORDINATOR_ENV)
    if address:
        _use_gloo_on_cpu()
        jax.distributed.initialize(
            coordinator_address=address,
            num_processes=int(os.environ[NUM_PROCESSES_ENV]),
            process_id=int(os.environ[PROCESS_ID_ENV]),
        )
    elif len([h for h in os.environ.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1:
        jax.distributed.initialize()


def _already_initialized() -> bool:
    try:
        from jax._src import distributed  # no public check that holds across JAX versions
        return distributed.global_state.client is not None
    except (ImportError, AttributeError):
        return False


def _use_gloo_on_cpu() -> None:
    try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except AttributeError:  # a JAX that has no such option uses gloo already
        pass


def platform() -> str:
    """"cpu", "gpu" or "tpu": JAX's default backend (JAX_PLATFORMS honored, else TPU > GPU > CPU)."""
    name = jax.default_backend()
    return "gpu" if name in ("cuda", "rocm", "gpu") else name


def device_kind() -> str:
    return jax.devices()[0].device_kind


def describe() -> str:
    """E.g. "TPU v5 lite x8" or "cpu x1", for the summary and the ledger."""
    return f"{device_kind()} x{jax.device_count()}"


def peak_flops_per_device(kind: str | None = None) -> float | None:
    """Dense bf16 peak of one device, or None where unknown (CPUs, unlisted chips)."""
    kind = (kind if kind is not None else device_kind()).lower()
    for name, flops in PEAK_FLOPS_BY_KIND:
        if name in kind:
            return flops
    return None


def mfu_percent(model_flops_per_second: float, kind: str | None = None,
                num_devices: int | None = None) -> float | None:
    """Model FLOP/s as a percentage of the chips' bf16 peak; None on CPU or an unknown chip."""
    peak = peak_flops_per_device(kind)
    if peak is None or platform() == "cpu":
        return None
    count = num_devices if num_devices is not None else jax.device_count()
    return 100.0 * model_flops_per_second / (peak * count)


def peak_memory_mb() -> float:
    """Peak bytes in use on this host's busiest device; the process's peak RSS on CPU."""
    peaks = [_device_peak_bytes(d) for d in jax.local_devices()]
    peaks = [p for p in peaks if p is not None]
    if platform() != "cpu" and peaks:
        return max(peaks) / 2**20
    return _process_peak_rss_bytes() / 2**20


def _device_peak_bytes(device) -> int | None:
    try:
        stats = device.memory_stats()
    except Exception:  # backends without memory stats raise rather than return None
        return None
    if not stats:
        return None
    return stats.get("peak_bytes_in_use", stats.get("bytes_in_use"))


def _process_peak_rss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # Linux reports KiB


def is_out_of_memory(error: BaseException) -> bool:
    """Whether an exception is the backend running out of device memory (status "oom")."""
    if isinstance(error, MemoryError):
        return True
    text = str(error).lower()
    return "resource_exhausted" in text or "out of memory" in text
