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
TINY = dict(depth=2, model_dim=128, seq_len=32, batch_tokens=256, device_rows=8)


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


# A small model whose 16-row batch one device computes in 4 micro-batches of 4 rows and eight
# devices in one micro-batch of 2 rows each: the same arithmetic, partitioned two ways.
SMALL_CPU_SIZE = ("CPU_SIZE = dict(depth=1, model_dim=128, seq_len=64, window=64, batch_tokens=1024, "
                  "device_rows=4, loss_chunk=1024)\n")
STEP_FLOPS = 2.37e9  # of that model's step, as the engine counts it (measured)


@pytest.mark.slow
def test_one_and_eight_devices_train_alike_under_a_flops_budget(prepared_data, tmp_path):
    """The batch per step is fixed, so a flops budget buys the same steps on any device count
    (forced host devices, each count in its own process)."""
    source = TRAIN_PY.read_text()
    table = source[source.index("CPU_SIZE = dict("):source.index("GPU_SIZE")]
    path = tmp_path / "train.py"
    path.write_text(source.replace(table, SMALL_CPU_SIZE))
    budget = str(10.5 * STEP_FLOPS)  # half a step from either boundary
    runs = {}
    for devices in (1, 8):
        env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
               "JAX_PLATFORMS": "cpu"}
        command = [sys.executable, str(path), "--budget-flops", budget, "--json", str(tmp_path / f"{devices}.json"),
                   "--no-checkpoint", "--run-dir", str(tmp_path / f"run{devices}")]
        runs[devices] = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = {}
    for devices, process in runs.items():
        _, err = process.communicate(timeout=600)
        assert process.returncode == 0, err[-3000:]
        results[devices] = json.loads((tmp_path / f"{devices}.json").read_text())
    one, eight = results[1], results[8]
    assert (one["num_devices"], eight["num_devices"]) == (1, 8)
    assert one["step_flops"] == pytest.approx(STEP_FLOPS, rel=0.04), "the model changed: measure STEP_FLOPS again"
    assert one["num_steps"] == eight["num_steps"] == 11
    assert one["val_bpb"] == pytest.approx(eight["val_bpb"], abs=0.005)
    assert eight["final_loss"] < math.log(512)


def test_parameters_are_grouped_by_shape(tiny):
    train, _, state = tiny
    groups = train.param_groups(state["params"])
    assert set(groups["embed"]) == {"embed"} and set(groups["head"]) == {"head"}
    assert groups["vector"] == {}
    assert set(groups["muon"]) == {f"blocks.{i}.{w}" for i in range(2) for w in ("qkv", "attn_out", "mlp_in", "mlp_out")}


def test_a_new_gain_vector_and_a_new_top_level_parameter_train():
    """What an agent adds most: a gain inside a Block, a parameter beside the embedding."""
    source = TRAIN_PY.read_text()
    edits = [
        ("        self.window = window\n", "        self.gain = nnx.Param(jnp.ones((dim,)))\n        self.window = window\n"),
        ("        return x_MD + h_MF @ self.mlp_out[...].astype(self.dtype)",
         "        return (x_MD + h_MF @ self.mlp_out[...].astype(self.dtype)) * self.gain[...].astype(self.dtype)"),
        ("        self.loss_chunk = size[\"loss_chunk\"]\n",
         "        self.loss_chunk = size[\"loss_chunk\"]\n        self.out_gain = nnx.Param(jnp.ones((dim, dim)) / dim + jnp.eye(dim))\n"),
        ("        return rms_norm(x_MD)\n", "        return rms_norm(x_MD @ self.out_gain[...].astype(self.dtype))\n"),
    ]
    for old, new in edits:
        assert source.count(old) == 1, f"train.py changed: update this test's edit of {old!r}"
        source = source.replace(old, new)
    train = load_source(source)
    exp = train.experiment(context())
    state = jax.jit(exp.init)(jax.random.key(0))
    groups = train.param_groups(state["params"])
    assert set(groups["vector"]) == {"blocks.0.gain", "blocks.1.gain"}
    assert "out_gain" in groups["muon"]
    before = state["params"]
    step = jax.jit(exp.train_step)
    batch = repeating_batch(8, 32, 64)
    for i in range(3):
        state, metrics = step(state, batch, jnp.float32(i / 3))
    assert math.isfinite(float(metrics["loss"]))
    assert not np.allclose(state["params"]["blocks"][0]["gain"], before["blocks"][0]["gain"])
    assert not np.allclose(state["params"]["out_gain"], before["out_gain"])


def load_source(source: str, **size_overrides):
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location("edited_train", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    for name in ("CPU_SIZE", "GPU_SIZE", "TPU_SIZE"):
        getattr(module, name).update({**TINY, **size_overrides})
    return module


@pytest.fixture(scope="module")
def windowed():
    """A window shorter than the sampled text, as on CPU; a head that makes the model decisive."""
    train = load_train(**TINY, window=8)
    exp = train.experiment(context())
    state = jax.jit(exp.init)(jax.random.key(0))
    state["params"]["head"] = state["params"]["head"] * 500.0
    return exp, state


def test_decode_with_the_kv_cache_gives_the_full_forwards_logits(windowed):
    exp, state = windowed
    tokens = jax.random.randint(jax.random.key(1), (2, 20), 0, 64)
    full = jax.jit(exp.logits)(state, tokens)
    cache = exp.init_cache(state, 2, 24)
    decode = jax.jit(exp.decode)
    prefill, cache = decode(state, cache, tokens[:, :13], jnp.int32(0))
    pieces = [prefill]
    for t in range(13, 20):
        logits, cache = decode(state, cache, tokens[:, t:t + 1], jnp.int32(t))
        pieces.append(logits)
    np.testing.assert_allclose(jnp.concatenate(pieces, axis=1), full, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("temperature, context_length", [(0.0, 64), (1.0, 16)])
def test_sampling_with_the_kv_cache_draws_the_same_tokens(windowed, temperature, context_length):
    """context 16 < prompt + new tokens: the cache covers the first ones, the sliding window the rest."""
    from model.sampling import generate
    exp, state = windowed
    prompt = [1, 5, 9, 2, 7]
    kwargs = dict(temperature=temperature, top_k=0, rng=jax.random.key(3), context_length=context_length)
    uncached = generate(exp.logits, state, prompt, 24, **kwargs)
    cached = generate(exp.logits, state, prompt, 24, cache=(exp.init_cache, exp.decode), **kwargs)
    np.testing.assert_array_equal(cached, uncached)
    assert len(set(uncached.tolist())) > 3  # a real continuation, not one token repeated
