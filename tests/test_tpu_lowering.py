"""The default train.py's TPU programs, exported on this CPU machine by the tracer's code.

The tracer only lowers, so the TPU programs (splash attention forward and backward, over an
abstract mesh of 8 chips) can be checked without a TPU: they export, call only custom calls
the trainer accepts, and their FLOPs, with each splash kernel counted as the XLA attention it
replaces, equal the same step's count with XLA attention exported for the CPU.
"""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = textwrap.dedent('''
    import json, sys
    import jax
    from engine.training import programs, stablehlo, tracer
    from model import attention

    layout = {"platform": "tpu", "device_kind": "TPU v5 lite", "num_devices": 8, "num_processes": 1,
              "vocab_size": 8192, "bos_id": 1, "eval_sequence_length": 2048, "eval_tokens": 2 ** 21,
              "budget_mode": "flops", "budget_value": 1e15, "seed": 0, "data_dir": "/nonexistent"}
    ctx = tracer.make_context(layout)
    exp = tracer.load_experiment(sys.argv[1], ctx)
    out = {}
    for target, platform in (("tpu", "tpu"), ("cpu", "cpu")):
        attention.set_target(target, 8)
        traced = programs.trace(exp, ctx, layout, platform=platform)
        step = stablehlo.read(traced.train_step.mlir_module())
        forward = stablehlo.read(traced.logits.mlir_module())
        programs.check(traced, "tpu" if platform == "tpu" else "cpu", 8) if platform == "tpu" else None
        out[platform] = {"step": step.flops, "forward": forward.flops, "uncounted": list(step.uncounted),
                         "calls": sorted(set(step.custom_calls) | set(forward.custom_calls)),
                         "platforms": list(traced.train_step.platforms)}
    print(json.dumps(out))
''')


@pytest.mark.slow
def test_tpu_programs_lower_on_cpu_and_count_as_the_cpu_program():
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(ROOT / "train.py")], capture_output=True,
                          text=True, timeout=900, env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin",
                                                       "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    tpu, cpu = got["tpu"], got["cpu"]
    assert tpu["platforms"] == ["tpu"] and cpu["platforms"] == ["cpu"]
    assert tpu["calls"] == ["tpu_custom_call"]  # splash, and nothing else
    assert tpu["uncounted"] == [] and cpu["uncounted"] == []
    assert tpu["step"] == pytest.approx(cpu["step"], rel=1e-3)
    assert tpu["forward"] == pytest.approx(cpu["forward"], rel=1e-3)
