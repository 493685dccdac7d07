"""Pieces of bench/device_check.sh that need Python: the device, attention agreement, FLOP count.

    python bench/device_check.py device                  # platform, kind, count, jax version
    python bench/device_check.py attention               # the backend's kernel against XLA attention
    python bench/device_check.py flops --as gpu          # FLOPs of train.py's step built for that platform
    JAX_PLATFORMS=cpu python bench/device_check.py flops --as gpu   # the same program, counted on CPU

Each prints one JSON object on its last line.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.training import devices  # noqa: E402
from model import attention  # noqa: E402

# The default accelerator model's attention: batch, sequence, heads (640 / 128), head width.
ATTENTION_SHAPE = (4, 2048, 5, 128)


def device() -> dict:
    return {"platform": devices.platform(), "device_kind": devices.device_kind(),
            "devices": jax.device_count(), "jax": jax.__version__}


def attention_agreement() -> dict:
    """The kernel this backend picks (cuDNN on NVIDIA, splash on TPU) against plain XLA, causal."""
    dtype = jnp.float32 if devices.platform() == "cpu" else jnp.bfloat16
    shape = ATTENTION_SHAPE if devices.platform() != "cpu" else (2, 256, 2, 128)
    q, k, v = (jax.random.normal(key, shape, dtype) for key in jax.random.split(jax.random.key(0), 3))
    kernel = attention.default_implementation(q)
    out = {name: jax.jit(lambda q, k, v, name=name: attention.causal_attention(q, k, v, implementation=name))(q, k, v)
           for name in {kernel, "xla"}}
    a, b = (np.asarray(out[name], np.float32) for name in (kernel, "xla"))
    relative = float(np.linalg.norm(a - b) / np.linalg.norm(b))
    tolerance = 1e-5 if dtype == jnp.float32 else 2e-2
    return {"kernel": kernel, "against": "xla", "shape": list(shape), "dtype": jnp.dtype(dtype).name,
            "max_abs_diff": float(np.max(np.abs(a - b))), "relative_error": relative,
            "agree": relative < tolerance, "tolerance": tolerance,
            "note": "" if kernel != "xla" else "this backend has no fused kernel: XLA against itself"}


def step_flops(train_py: Path, platform: str, vocab_size: int, eval_len: int) -> dict:
    """FLOPs of one train step of train.py as built for `platform` on one device, exported for
    this process's backend (its kernels: cuDNN on a GPU, XLA attention on CPU) and counted as
    the trainer counts a flops budget (engine/training/stablehlo.py, kernels by formula)."""
    from engine.training import programs, stablehlo, tracer

    layout = {"platform": platform, "device_kind": "device check", "num_devices": 1, "num_processes": 1,
              "vocab_size": vocab_size, "bos_id": 1, "eval_sequence_length": eval_len, "eval_tokens": 4 * eval_len,
              "budget_mode": "flops", "budget_value": 1e15, "seed": 0}
    exp = tracer.load_experiment(train_py, tracer.make_context(layout))
    start = time.perf_counter()
    backend = devices.platform()
    traced = programs.trace(exp, tracer.make_context(layout), layout, platform=programs.PLATFORM_NAMES[backend])
    counted = stablehlo.read(traced.train_step.mlir_module())
    return {"counted_on": backend, "built_for": platform, "step_flops": counted.flops,
            "uncounted": list(counted.uncounted), "custom_calls": list(counted.custom_calls),
            "tokens_per_step": exp.batch_size * exp.sequence_length, "seconds": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("device", "attention", "flops"))
    parser.add_argument("--as", dest="platform", default=None, help="build train.py for this platform")
    parser.add_argument("--train", default=str(ROOT / "train.py"))
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--eval-len", type=int, default=512)
    args = parser.parse_args(argv)
    if args.what == "device":
        result = device()
    elif args.what == "attention":
        result = attention_agreement()
    else:
        result = step_flops(Path(args.train), args.platform or devices.platform(), args.vocab_size, args.eval_len)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
