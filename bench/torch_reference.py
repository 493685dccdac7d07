"""train.py's CPU model against the same model and optimizer in PyTorch with torch.compile.

    pip install torch                        # not a dependency of the project: this bench only
    python bench/torch_reference.py

The PyTorch side mirrors train.py's CPU size: depth 2, width 256, 128-wide heads with QK-norm
and rotary, ReLU^2 MLP, soft-capped head, Muon (Newton-Schulz) on the block matrices and
Adam on the embedding and head, 8,192 tokens per step. It reads the size and the optimizer
constants from train.py itself, so the two stay the same model. Both train on the same
random tokens, in alternating rounds, best round of each.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.append(str(REPO / "bench"))  # after the repository: bench/engine.py would shadow the package


def load_train_module(path: str):
    spec = importlib.util.spec_from_file_location("train_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rms_norm(x):
    return x * torch.rsqrt(x.square().mean(-1, keepdim=True) + 1e-6)


def rotary(x, cos, sin):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos + x2 * sin, x2 * cos - x1 * sin], dim=-1)


class TorchGPT(torch.nn.Module):
    def __init__(self, cfg, vocab_size: int):
        super().__init__()
        dim, depth = cfg.CPU_SIZE["model_dim"], cfg.CPU_SIZE["depth"]
        std = dim ** -0.5
        self.cfg, self.heads = cfg, dim // cfg.HEAD_DIM
        self.embed = torch.nn.Parameter(torch.randn(vocab_size, dim) * cfg.EMBED_INIT_STD)
        self.head = torch.nn.Parameter(torch.randn(dim, vocab_size) * cfg.HEAD_INIT_STD)
        self.qkv = torch.nn.ParameterList([torch.nn.Parameter(torch.randn(3, dim, dim) * std) for _ in range(depth)])
        self.attn_out = torch.nn.ParameterList([torch.nn.Parameter(torch.zeros(dim, dim)) for _ in range(depth)])
        self.mlp_in = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.randn(dim, cfg.MLP_RATIO * dim) * std) for _ in range(depth)])
        self.mlp_out = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.zeros(cfg.MLP_RATIO * dim, dim)) for _ in range(depth)])
        seq_len, head_dim = cfg.CPU_SIZE["seq_len"], cfg.HEAD_DIM
        inv_freq = cfg.ROPE_BASE ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
        angles = torch.arange(seq_len, dtype=torch.float64)[:, None] * inv_freq[None, :]
        self.register_buffer("cos", angles.cos().float()[None, None])
        self.register_buffer("sin", angles.sin().float()[None, None])

    def forward(self, inputs, targets):
        B, T = inputs.shape
        x = rms_norm(self.embed[inputs])
        for qkv, attn_out, mlp_in, mlp_out in zip(self.qkv, self.attn_out, self.mlp_in, self.mlp_out):
            h = rms_norm(x)
            q, k, v = ((h @ w).view(B, T, self.heads, -1).transpose(1, 2) for w in qkv)
            q, k = rotary(rms_norm(q), self.cos, self.sin), rotary(rms_norm(k), self.cos, self.sin)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + y.transpose(1, 2).reshape(B, T, -1) @ attn_out
            x = x + F.relu(rms_norm(x) @ mlp_in).square() @ mlp_out
        cap = self.cfg.LOGIT_SOFTCAP
        logits = cap * torch.tanh((rms_norm(x) @ self.head) / cap)
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1))


def newton_schulz(g, coeffs, steps: int):
    a, b, c = coeffs
    x = g
    wide = x.shape[-2] <= x.shape[-1]
    if not wide:
        x = x.transpose(-2, -1)
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    for _ in range(steps):
        gram = x @ x.transpose(-2, -1)
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x if wide else x.transpose(-2, -1)


class MuonAdam:
    """train.py's optimizer: Muon with Nesterov momentum on the block matrices, Adam on the rest."""

    def __init__(self, model: TorchGPT, cfg):
        self.cfg = cfg
        self.matrices = [p for group in (model.qkv, model.attn_out, model.mlp_in, model.mlp_out) for p in group]
        self.momentum = [torch.zeros_like(p) for p in self.matrices]
        self.adam = torch.optim.Adam([{"params": [model.embed], "lr": cfg.EMBED_LR},
                                      {"params": [model.head], "lr": cfg.HEAD_LR}],
                                     betas=cfg.ADAM_BETAS, eps=1e-10, fused=False, foreach=True)
        self.orthogonalize = torch.compile(lambda g: newton_schulz(g, cfg.NS_COEFFS, cfg.NS_STEPS))

    @torch.no_grad()
    def step(self):
        for p, m in zip(self.matrices, self.momentum):
            m.mul_(self.cfg.MUON_MOMENTUM).add_(p.grad)
            nesterov = p.grad + self.cfg.MUON_MOMENTUM * m
            scale = max(1.0, p.shape[-1] / p.shape[-2]) ** 0.5
            p.sub_(self.cfg.MATRIX_LR * scale * self.orthogonalize(nesterov))
        self.adam.step()

    def zero_grad(self):
        for p in self.matrices:
            p.grad = None
        self.adam.zero_grad(set_to_none=True)


def torch_step_runner(cfg, vocab_size: int, batch: dict):
    torch.manual_seed(0)
    model = TorchGPT(cfg, vocab_size)
    optimizer = MuonAdam(model, cfg)
    loss_fn = torch.compile(model)
    inputs, targets = (torch.as_tensor(np.asarray(batch[name]), dtype=torch.long) for name in ("inputs", "targets"))

    def step():
        loss = loss_fn(inputs, targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return loss.item()

    return step


def jax_step_runner(train_path: str, vocab_size: int):
    """The train step of train.py on the CPU, and the batch of random tokens it trains on."""
    import jax
    import jax.numpy as jnp

    import throughput

    args = throughput.parse_args(["--train", train_path, "--vocab-size", str(vocab_size)])
    _, exp, state, batch = throughput.build(args)
    train_step = jax.jit(exp.train_step, donate_argnums=0)
    holder = {"state": state}

    def step():
        holder["state"], metrics = train_step(holder["state"], batch, jnp.float32(0.1))
        return float(metrics["loss"])

    return step, batch


def best_step_seconds(step, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", default=str(REPO / "train.py"))
    p.add_argument("--vocab-size", type=int, default=8192)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=2, help="steps per timed round")
    args = p.parse_args(argv)

    cfg = load_train_module(args.train)
    jax_step, batch = jax_step_runner(args.train, args.vocab_size)
    torch_step = torch_step_runner(cfg, args.vocab_size, batch)
    tokens_per_step = batch["inputs"].size
    print(f"first loss: jax {jax_step():.4f}, torch {torch_step():.4f} (compiling both)")
    jax_step(), torch_step()

    jax_best = torch_best = float("inf")
    for _ in range(args.rounds):
        jax_best = min(jax_best, best_step_seconds(jax_step, args.steps))
        torch_best = min(torch_best, best_step_seconds(torch_step, args.steps))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {tokens_per_step} tokens per step")
    print(f"jax   (train.py):      {jax_best * 1e3:7.0f} ms/step   {tokens_per_step / jax_best:8,.0f} tokens/s")
    print(f"torch (torch.compile): {torch_best * 1e3:7.0f} ms/step   {tokens_per_step / torch_best:8,.0f} tokens/s")
    print(f"jax is {torch_best / jax_best:.2f}x the speed of torch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
