"""The real train.py: its contract with the engine, its numerics, and a short run through the engine."""
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from engine import cli
from engine.training.contract import Budget, Context

TRAIN_PY = Path(__file__).resolve().parents[1] / "train.py"
TINY = dict(depth=2, model_dim=128, seq_len=32, rows_per_device=8)


def load_train(**size_overrides):
    spec = importlib.util.spec_from_file_location("baseline_train", TRAIN_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name in ("CPU_SIZE", "GPU_SIZE", "TPU_SIZE"):
        getattr(module, name).update(size_overrides)
    return module


def context(platform="cpu", vocab=64, eval_len=48):
    return Context(platform=platform, device_kind="cpu", num_devices=1, num_processes=1, vocab_size=vocab,
                   bos_id=1, eval_sequence_length=eval_len, budget=Budget("time", 10.0), seed=0)


def repeating_batch(rows, seq_len, vocab, period=7, seed=0):
    """Each row cycles through its own random `period` tokens: learnable from context alone."""
    rng = np.random.default_rng(seed)
    motifs = rng.integers(2, vocab, (rows, period))
    tokens = np.stack([np.resize(m, seq_len + 1) for m in motifs]).astype(np.int32)
    return {"inputs": jnp.asarray(tokens[:, :-1]), "targets": jnp.asarray(tokens[:, 1:])}


@pytest.fixture(scope="module")
def tiny():
    train = load_train(**TINY)
    exp = train.experiment(context())
    return train, exp, jax.jit(exp.init)(jax.random.key(0))


def test_shapes_and_sizes(tiny):
    _, exp, state = tiny
    assert (exp.batch_size, exp.sequence_length) == (8, 32)
    inputs = jnp.zeros((3, 48), jnp.int32)  # the eval length, longer than training's
    logits = jax.jit(exp.logits)(state, inputs)
    assert logits.shape == (3, 48, 64) and logits.dtype == jnp.float32
    # a fresh model predicts close to uniform: loss near ln(vocab)
    nats = -jax.nn.log_softmax(logits, axis=-1)[..., 0]
    assert float(jnp.mean(nats)) == pytest.approx(math.log(64), abs=0.05)


def test_flops_per_token_counts_matrices_not_the_embedding(tiny):
    _, exp, state = tiny
    params = state["params"]
    matrices = sum(x.size for x in jax.tree.leaves(params["blocks"])) + params["head"].size
    attention = 12 * 2 * 128 * (32 + 1) / 2
    assert exp.flops_per_token == pytest.approx(6 * matrices + attention)


def test_a_width_that_does_not_split_into_heads_is_named():
    train = load_train(model_dim=64)
    with pytest.raises(ValueError, match="model_dim 64 must be a multiple of HEAD_DIM 128"):
        train.experiment(context())


def test_loss_goes_down_and_progress_never_recompiles(tiny):
    _, exp, state = tiny
    step = jax.jit(exp.train_step, donate_argnums=0)
    batch = repeating_batch(8, 32, 64)
    losses = []
    for i in range(30):
        state, metrics = step(state, batch, jnp.float32(i / 30))
        losses.append(float(metrics["loss"]))
    assert step._cache_size() == 1
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < 0.5 * losses[0], losses


def test_the_schedule_warms_down_to_zero():
    train = load_train()
    multiplier = lambda p: float(train.learning_rate_multiplier(jnp.float32(p)))
    assert multiplier(0.0) == multiplier(0.4) == 1.0
    assert multiplier(1.0 - train.WARMDOWN / 2) == pytest.approx(1 - (1 - train.FINAL_LR_FRACTION) / 2)
    assert multiplier(1.0) == pytest.approx(train.FINAL_LR_FRACTION)


def test_orthogonalize_flattens_the_spectrum():
    train = load_train()
    g = jax.random.normal(jax.random.key(0), (2, 48, 96)) * jnp.array([1e-3, 1e3])[:, None, None]
    singular = jnp.linalg.svd(train.orthogonalize(g), compute_uv=False)
    assert singular.shape == (2, 48)
    assert float(singular.min()) > 0.5 and float(singular.max()) < 1.5  # quintic NS: roughly 1, scale-free


def test_accelerator_path_computes_in_bfloat16_with_float32_master_weights():
    train = load_train(**TINY)
    exp = train.experiment(context(platform="gpu"))
    state = jax.jit(exp.init)(jax.random.key(0))
    assert {leaf.dtype for leaf in jax.tree.leaves(state["params"])} == {jnp.dtype(jnp.float32)}
    batch = repeating_batch(8, 32, 64)
    state, metrics = jax.jit(exp.train_step)(state, batch, jnp.float32(0.0))
    assert math.isfinite(float(metrics["loss"]))
    assert {leaf.dtype for leaf in jax.tree.leaves(state["params"])} == {jnp.dtype(jnp.float32)}
    lowered = jax.jit(exp.logits).lower(state, batch["inputs"]).as_text()
    assert "bf16" in lowered


def test_cpu_defaults_fit_the_eval_length_and_learn_fast():
    train = load_train()
    exp = train.experiment(context(vocab=8192, eval_len=512))
    assert exp.sequence_length <= 512 and exp.batch_size >= 1
    params = jax.eval_shape(exp.init, jax.random.key(0))["params"]
    n = sum(x.size for x in jax.tree.leaves(params))
    assert 1e6 < n < 12e6  # small enough to take many steps in 60 s on 2 cores


def test_runs_through_the_engine(prepared_data, tmp_path):
    result_path = tmp_path / "result.json"
    code = cli.main(["train", str(TRAIN_PY), "--budget-seconds", "6", "--json", str(result_path),
                     "--no-checkpoint", "--run-dir", str(tmp_path / "run")])
    result = json.loads(result_path.read_text())
    assert code == 0, result
    assert result["status"] == "ok"
    assert result["num_steps"] >= 2
    assert math.isfinite(result["val_bpb"]) and result["val_bpb"] > 0
    assert result["final_loss"] < math.log(512) - 0.5  # below uniform over the tiny vocab: it learned


def test_runs_data_parallel_on_eight_devices(prepared_data, tmp_path):
    """The same file under the engine's 8-way data parallelism (forced host devices, in a subprocess)."""
    small = TRAIN_PY.read_text().replace("rows_per_device=64", "rows_per_device=2")
    assert small != TRAIN_PY.read_text(), "CPU_SIZE no longer has rows_per_device=64: update this test"
    path = tmp_path / "train.py"
    path.write_text(small)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    result_path = tmp_path / "result.json"
    run = subprocess.run([sys.executable, str(path), "--budget-seconds", "3", "--json", str(result_path),
                          "--no-checkpoint", "--run-dir", str(tmp_path / "run")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(result_path.read_text())
    assert result["num_devices"] == 8 and result["status"] == "ok"
    assert math.isfinite(result["val_bpb"]) and result["final_loss"] < math.log(512)
