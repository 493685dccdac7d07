"""Baseline experiment: a small modern GPT in Flax NNX, trained with Muon and Adam.

The engine calls `experiment(ctx)`, compiles what it returns, and owns the clock,
the data and the metric (val_bpb, computed from `logits` by engine code only). Everything in this file is yours to change.
Run it with `python train.py` (same as `autoresearch train train.py`).
"""
from __future__ import annotations

import math
import sys

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from engine.training.contract import Context, Experiment
from model import accumulate, kv_cache
from model.attention import causal_attention
from model.flops import count_params, transformer_flops_per_token
from model.loss import fused_head_cross_entropy_mean, head_logits

# Model size per platform. CPU: a demo that learns visibly (loss 9 to about 5) in the README's
# 30 s budget on 2 busy cores: small batches, so even a slow machine takes tens of steps.
# One GPU or TPU chip: about the reference baseline (depth 8, ~50M parameters).
# window: attention span (None: all earlier tokens); training on seq_len = window keeps
# evaluation on longer text within distances the model has seen.
# batch_tokens: tokens per optimizer step, whatever the number of devices (so a flops budget
# trains the same steps on 1 chip or 8); device_rows: most rows one device computes at once
# (more rows per device are accumulated in micro-batches; on CPU, small enough that each
# matmul's output stays in cache).
# loss_chunk: tokens per chunk of the fused head + cross-entropy (on CPU, cache-sized).
CPU_SIZE = dict(depth=2, model_dim=256, seq_len=128, window=128, batch_tokens=2048, device_rows=16,
                loss_chunk=256)
GPU_SIZE = dict(depth=8, model_dim=640, seq_len=2048, window=None, batch_tokens=65536, device_rows=32,
                loss_chunk=16384)
TPU_SIZE = dict(depth=8, model_dim=640, seq_len=2048, window=None, batch_tokens=262144, device_rows=16,
                loss_chunk=16384)
HEAD_DIM = 128  # width of one attention head
MLP_RATIO = 4  # MLP hidden width / model width
ROPE_BASE = 10_000.0  # rotary embedding base frequency
LOGIT_SOFTCAP = 15.0  # output logits -> cap * tanh(logits / cap)
EMBED_INIT_STD = 1.0  # input embedding init (it is RMS-normed right after)
HEAD_INIT_STD = 0.001  # output head init: start near the uniform prediction
# Optimizer, by shape: Muon (orthogonalized momentum) on matrices; Adam on the embedding, the
# head, and every vector or scalar (gains, biases).
MATRIX_LR = 0.06  # Muon step size; updates have RMS ~ 1/sqrt(fan_in) * this
MUON_MOMENTUM = 0.95  # Nesterov momentum before orthogonalization
NS_STEPS = 5  # Newton-Schulz iterations per orthogonalization
NS_COEFFS = (3.4445, -4.7750, 2.0315)  # quintic coefficients: fast, approximate orthogonalization
EMBED_LR = 0.3  # Adam on the input embedding
HEAD_LR = 0.02  # Adam on the output head
VECTOR_LR = 0.02  # Adam on vectors and scalars (gains, biases): none in the baseline
ADAM_BETAS = (0.8, 0.95)  # short memory suits short budgets
WEIGHT_DECAY = 0.0  # decoupled decay on the block matrices, scaled by the learning rate
# Schedule, as fractions of the budget (the engine's `progress`).
WARMUP = 0.0  # linear ramp from 0 at the start
WARMDOWN = 0.5  # linear decay to FINAL_LR_FRACTION over the last part
FINAL_LR_FRACTION = 0.0


# ------------------------------------------------------------------ model
def rms_norm(x):
    """Parameter-free RMSNorm, reduced in float32."""
    x32 = x.astype(jnp.float32)
    return (x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + 1e-6)).astype(x.dtype)


def rotary_tables(seq_len: int, head_dim: int):
    """cos and sin of position * frequency, [T, head_dim / 2], for any length (eval may be longer).
    Computed once per call behind an optimization barrier: otherwise XLA fuses cos and sin into
    every use and evaluates them per element (baked in as constants, they would exceed the
    engine's limit on data carried by a program)."""
    inv_freq = ROPE_BASE ** (-jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim)
    angles_TF = jnp.arange(seq_len, dtype=jnp.float32)[:, None] * inv_freq[None, :]
    return jax.lax.optimization_barrier((jnp.cos(angles_TF), jnp.sin(angles_TF)))


def apply_rotary(x_BTNH, cos_TF, sin_TF):
    x1, x2 = jnp.split(x_BTNH, 2, axis=-1)
    cos, sin = cos_TF[:, None, :].astype(x_BTNH.dtype), sin_TF[:, None, :].astype(x_BTNH.dtype)
    return jnp.concatenate([x1 * cos + x2 * sin, x2 * cos - x1 * sin], axis=-1)


def normal(rngs: nnx.Rngs, shape, std: float):
    return nnx.Param(std * jax.random.normal(rngs.params(), shape, jnp.float32))


class Block(nnx.Module):
    """Pre-norm attention (QK-norm, rotary) and ReLU^2 MLP; output projections start at zero."""

    def __init__(self, dim: int, window: int | None, dtype, rngs: nnx.Rngs):
        std = dim ** -0.5
        self.qkv = normal(rngs, (3, dim, dim), std)  # q, k, v: three Muon matrices in one array
        self.attn_out = nnx.Param(jnp.zeros((dim, dim)))
        self.mlp_in = normal(rngs, (dim, MLP_RATIO * dim), std)
        self.mlp_out = nnx.Param(jnp.zeros((MLP_RATIO * dim, dim)))
        self.window = window
        self.dtype = dtype

    def __call__(self, x_MD, cos_TF, sin_TF, batch: int, cache=None, position=0):
        """x_MD: the M = batch * T token rows, flattened so every matmul is one 2-D GEMM.
        Returns (x_MD, cache). With a KV cache (sampling), the T tokens sit at position onward
        and also see the cached ones."""
        M, D = x_MD.shape
        shape_BTNH = (batch, M // batch, D // HEAD_DIM, HEAD_DIM)
        h_MD = rms_norm(x_MD)
        # three matmuls, not one sliced three ways: slicing's gradient pads and adds
        q_BTNH, k_BTNH, v_BTNH = (
            (h_MD @ w_DD.astype(self.dtype)).reshape(shape_BTNH) for w_DD in self.qkv[...])
        q_BTNH = apply_rotary(rms_norm(q_BTNH), cos_TF, sin_TF)
        k_BTNH = apply_rotary(rms_norm(k_BTNH), cos_TF, sin_TF)
        if cache is None:
            y_BTNH = causal_attention(q_BTNH, k_BTNH, v_BTNH, window=self.window)
        else:
            cache = kv_cache.write(cache, k_BTNH, v_BTNH, position)
            y_BTNH = kv_cache.attend(q_BTNH, cache, position, window=self.window)
        x_MD = x_MD + y_BTNH.reshape(M, D) @ self.attn_out[...].astype(self.dtype)
        h_MF = jnp.square(jax.nn.relu(rms_norm(x_MD) @ self.mlp_in[...].astype(self.dtype)))
        return x_MD + h_MF @ self.mlp_out[...].astype(self.dtype), cache


class GPT(nnx.Module):
    def __init__(self, vocab_size: int, size: dict, dtype, rngs: nnx.Rngs):
        dim = size["model_dim"]
        self.embed = normal(rngs, (vocab_size, dim), EMBED_INIT_STD)
        self.blocks = nnx.List([Block(dim, size["window"], dtype, rngs) for _ in range(size["depth"])])
        self.head = normal(rngs, (dim, vocab_size), HEAD_INIT_STD)
        self.loss_chunk = size["loss_chunk"]
        self.dtype = dtype

    def hidden(self, inputs_BT):
        """Final normalized hidden state of each of the B * T tokens, [M, D]."""
        B, T = inputs_BT.shape
        cos_TF, sin_TF = rotary_tables(T, HEAD_DIM)
        x_MD = rms_norm(jnp.take(self.embed[...], inputs_BT.reshape(B * T), axis=0).astype(self.dtype))
        for block in self.blocks:
            x_MD, _ = block(x_MD, cos_TF, sin_TF, B)
        return rms_norm(x_MD)

    def decode(self, inputs_BT, cache: list, position):
        """Logits [B, T, V] of T tokens at position onward, given the KV cache of the earlier ones."""
        B, T = inputs_BT.shape
        cos_TF, sin_TF = (jax.lax.dynamic_slice_in_dim(table, position, T)
                          for table in rotary_tables(cache[0]["k"].shape[1], HEAD_DIM))
        x_MD = rms_norm(jnp.take(self.embed[...], inputs_BT.reshape(B * T), axis=0).astype(self.dtype))
        new_cache = []
        for block, layer in zip(self.blocks, cache):
            x_MD, layer = block(x_MD, cos_TF, sin_TF, B, layer, position)
            new_cache.append(layer)
        logits_MV = head_logits(rms_norm(x_MD), self.head[...].astype(self.dtype), LOGIT_SOFTCAP)
        return logits_MV.reshape(B, T, -1), new_cache

    def mean_loss(self, inputs_BT, targets_BT):
        """The training loss: fused head + cross-entropy, gradients computed in chunks."""
        return fused_head_cross_entropy_mean(self.hidden(inputs_BT), self.head[...].astype(self.dtype),
                                             targets_BT.reshape(-1), LOGIT_SOFTCAP, self.loss_chunk)

    def __call__(self, inputs_BT):
        """Next-token logits in float32, soft-capped, [B, T, V]."""
        logits_MV = head_logits(self.hidden(inputs_BT), self.head[...].astype(self.dtype), LOGIT_SOFTCAP)
        return logits_MV.reshape(*inputs_BT.shape, -1)


# ------------------------------------------------------------------ optimizer
def orthogonalize(g):
    """Newton-Schulz iteration towards U V^T of g's SVD, over the last two axes (f32)."""
    a, b, c = NS_COEFFS
    x = g.astype(jnp.float32)
    wide = x.shape[-2] <= x.shape[-1]
    if not wide:  # iterate on the smaller Gram matrix
        x = jnp.swapaxes(x, -1, -2)
    x = x / (jnp.linalg.norm(x, axis=(-2, -1), keepdims=True) + 1e-7)
    for _ in range(NS_STEPS):
        gram = x @ jnp.swapaxes(x, -1, -2)
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x if wide else jnp.swapaxes(x, -1, -2)


def muon_step(param, update):
    """Orthogonalized step, scaled so tall and wide matrices move their outputs alike."""
    fan_in, fan_out = param.shape[-2], param.shape[-1]
    return math.sqrt(max(1.0, fan_out / fan_in)) * orthogonalize(update)


ADAM = optax.scale_by_adam(b1=ADAM_BETAS[0], b2=ADAM_BETAS[1], eps=1e-10)
ADAM_GROUPS = ("embed", "head", "vector")  # groups Adam updates; "muon" is the other one


def learning_rate_multiplier(progress):
    """Warmup, flat, then linear warmdown, as a function of the elapsed budget fraction."""
    warmup = jnp.minimum(1.0, progress / WARMUP) if WARMUP > 0 else 1.0
    into_warmdown = jnp.clip((progress - (1.0 - WARMDOWN)) / WARMDOWN, 0.0, 1.0) if WARMDOWN > 0 else 0.0
    return warmup * (1.0 - into_warmdown * (1.0 - FINAL_LR_FRACTION))


def _top(name: str) -> str:
    return name.split(".")[0]


# Which parameters each group takes, by name ("blocks.0.qkv") and shape: matrices (and stacks
# of them) to Muon; the embedding, the head, and every vector or scalar (gains, biases) to Adam.
GROUP_RULES = {
    "muon": lambda name, shape: len(shape) >= 2 and _top(name) not in ("embed", "head"),
    "embed": lambda name, shape: _top(name) == "embed",
    "head": lambda name, shape: _top(name) == "head",
    "vector": lambda name, shape: len(shape) < 2 and _top(name) not in ("embed", "head"),
}


def param_names(params) -> list[str]:
    """Names like "blocks.0.qkv", in the order of the tree's leaves."""
    return [".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
            for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]


def param_groups(params) -> dict:
    """{group: {name: param}}; fails loudly unless every parameter is in exactly one group."""
    groups = {group: {} for group in GROUP_RULES}
    for name, leaf in zip(param_names(params), jax.tree.leaves(params)):
        matches = [group for group, rule in GROUP_RULES.items() if rule(name, leaf.shape)]
        assert len(matches) == 1, f"parameter {name} {leaf.shape} is in groups {matches}, not exactly one"
        groups[matches[0]][name] = leaf
    return groups


def adam_params(groups: dict) -> dict:
    return {name: leaf for group in ADAM_GROUPS for name, leaf in groups[group].items()}


def init_optimizer(params):
    groups = param_groups(params)
    return {"momentum": {name: jnp.zeros_like(p) for name, p in groups["muon"].items()},
            "adam": ADAM.init(adam_params(groups))}


def apply_updates(params, grads, opt_state, progress):
    lr = learning_rate_multiplier(progress)
    groups, grad_groups = param_groups(params), param_groups(grads)
    new = {}
    momentum = {n: MUON_MOMENTUM * m + grad_groups["muon"][n] for n, m in opt_state["momentum"].items()}
    for name, p in groups["muon"].items():
        nesterov = MUON_MOMENTUM * momentum[name] + grad_groups["muon"][name]
        new[name] = p * (1.0 - lr * MATRIX_LR * WEIGHT_DECAY) - lr * MATRIX_LR * muon_step(p, nesterov)
    adam_updates, adam_state = ADAM.update(adam_params(grad_groups), opt_state["adam"])
    adam_lr = {"embed": EMBED_LR, "head": HEAD_LR, "vector": VECTOR_LR}
    for group in ADAM_GROUPS:
        for name, p in groups[group].items():
            new[name] = p - lr * adam_lr[group] * adam_updates[name]
    leaves = [new[name] for name in param_names(params)]
    return jax.tree.unflatten(jax.tree.structure(params), leaves), {"momentum": momentum, "adam": adam_state}


# ------------------------------------------------------------------ experiment
def experiment(ctx: Context) -> Experiment:
    size = {"cpu": CPU_SIZE, "gpu": GPU_SIZE, "tpu": TPU_SIZE}.get(ctx.platform, CPU_SIZE)
    if size["model_dim"] % HEAD_DIM:
        raise ValueError(f"model_dim {size['model_dim']} must be a multiple of HEAD_DIM {HEAD_DIM}")
    dtype = jnp.float32 if ctx.platform == "cpu" else jnp.bfloat16
    seq_len = size["seq_len"]
    rows = size["batch_tokens"] // seq_len
    micro_batches = accumulate.micro_batch_count(rows, ctx.num_devices, size["device_rows"])
    build = lambda rng: GPT(ctx.vocab_size, size, dtype, nnx.Rngs(params=rng))
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: build(jax.random.key(0))))

    model = lambda params: nnx.merge(graphdef, params)

    def init(rng):
        params = nnx.to_pure_dict(nnx.state(build(rng)))
        return {"params": params, "opt": init_optimizer(params)}

    def train_step(state, batch, progress):
        mean_loss = lambda p, b: model(p).mean_loss(b["inputs"], b["targets"])
        loss, grads = accumulate.value_and_grad(mean_loss, state["params"], batch, micro_batches)
        params, opt = apply_updates(state["params"], grads, state["opt"], progress)
        return {"params": params, "opt": opt}, {"loss": loss}

    params = nnx.to_pure_dict(abstract)
    return Experiment(
        init=init,
        train_step=train_step,
        logits=lambda state, x: model(state["params"])(x),
        init_cache=lambda state, rows, capacity: kv_cache.init(
            size["depth"], rows, capacity, size["model_dim"] // HEAD_DIM, HEAD_DIM, dtype),
        decode=lambda state, cache, x, position: model(state["params"]).decode(x, cache, position),
        batch_size=rows,  # the same on any number of devices
        sequence_length=seq_len,
        sharding="replicated",
        flops_per_token=transformer_flops_per_token(
            count_params(params, exclude=["embed"]), size["depth"], size["model_dim"], seq_len),
    )


if __name__ == "__main__":
    from engine.cli import main

    sys.exit(main(["train", __file__, *sys.argv[1:]]))
