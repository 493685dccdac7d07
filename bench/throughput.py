"""Training throughput of train.py's default model against the machine's own matmul speed.

    python bench/throughput.py                      # this machine's default platform
    python bench/throughput.py --data stdlib-...    # also print the unigram bound of that cache

Model FLOP/s = 6 x parameters x tokens/s, printed three ways: all parameters (the
common 6N rule of thumb), matrix parameters only (the embedding table is a lookup,
not a matmul), and train.py's own flops_per_token (matrices plus causal attention).
On CPU each is divided by the FLOP/s of a large jitted float32 matmul measured in the
same run, in alternating rounds, best of each, so a busy machine slows both alike.
On a machine whose speed drifts (a shared VM), "paired rounds" also compares each round
of steps with the matmul run for as long right after it, and prints the median.
On GPU/TPU the same figures are printed as MFU against the chip's peak.

    python bench/throughput.py --exported           # also the step as the trainer runs it

--exported also times the step the way the engine runs it since the tracer split: exported
by jax.export, serialized, loaded back and compiled with the engine's shardings
(engine/training/compile.py), in rounds alternating with train.py's step jitted directly.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.training import devices  # noqa: E402
from engine.training.contract import Budget, Context  # noqa: E402
from engine.training.tracer import load_experiment  # noqa: E402
from model.flops import count_params  # noqa: E402

MATMUL_SIZES = (2048, 3072)  # the best of these is the machine's matmul speed


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", default=str(REPO / "train.py"))
    p.add_argument("--vocab-size", type=int, default=8192)
    p.add_argument("--eval-length", type=int, default=512)
    p.add_argument("--steps", type=int, default=4, help="train steps per timed round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--data", default=None, help="a prepared cache: print its unigram bits-per-byte bound")
    p.add_argument("--exported", action="store_true",
                   help="also time the exported step as the trainer compiles it, in alternating rounds")
    return p.parse_args(argv)


def best_seconds(run, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        jax.block_until_ready(run())
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_flops_per_second(size: int, dtype) -> tuple[float, callable]:
    a = jax.random.normal(jax.random.key(0), (size, size), dtype)
    b = jax.random.normal(jax.random.key(1), (size, size), dtype)
    matmul = jax.jit(lambda a, b: a @ b)
    jax.block_until_ready(matmul(a, b))
    return 2.0 * size ** 3, lambda: matmul(a, b)


def build(args):
    ctx = Context(platform=devices.platform(), device_kind=devices.device_kind(), num_devices=1,
                  num_processes=1, vocab_size=args.vocab_size, bos_id=1,
                  eval_sequence_length=args.eval_length, budget=Budget("time", 60.0), seed=0)
    exp = load_experiment(args.train, ctx)
    state = jax.jit(exp.init)(jax.random.key(0))
    tokens = np.random.default_rng(0).integers(2, args.vocab_size, (exp.batch_size, exp.sequence_length + 1))
    batch = {"inputs": jnp.asarray(tokens[:, :-1], jnp.int32), "targets": jnp.asarray(tokens[:, 1:], jnp.int32)}
    return ctx, exp, state, batch


def time_training(exp, state, batch, steps: int, rounds: int, matmuls: list) -> tuple[float, float, list]:
    """Best seconds per step (steps dispatched back to back, one sync per round), best matmul FLOP/s,
    and per round (seconds per step, matmul FLOP/s over as long right after): measured in
    alternating rounds."""
    step = jax.jit(exp.train_step, donate_argnums=0)
    progress = jnp.float32(0.1)
    state, metrics = step(state, batch, progress)  # compile
    jax.block_until_ready(metrics)
    holder = {"state": state}

    def run_steps():
        for _ in range(steps):
            holder["state"], out = step(holder["state"], batch, progress)
        return out["loss"]

    step_seconds, matmul_rate, paired = float("inf"), 0.0, []
    for _ in range(rounds):
        round_seconds = best_seconds(run_steps, 1) / steps
        step_seconds = min(step_seconds, round_seconds)
        paired.append((round_seconds, matmul_rate_over(matmuls[0], round_seconds * steps)))
        for flops, run in matmuls:
            matmul_rate = max(matmul_rate, flops / best_seconds(run, 3))
    return step_seconds, matmul_rate, paired


def matmul_rate_over(matmul, seconds: float) -> float:
    """FLOP/s of one matmul run back to back for about `seconds`: on a machine whose speed drifts,
    the rate to compare a round of training steps with."""
    flops, run = matmul
    start = time.perf_counter()
    jax.block_until_ready(run())
    repeats = max(1, round(seconds / (time.perf_counter() - start)) - 1)
    for _ in range(repeats):
        out = run()
    jax.block_until_ready(out)
    return flops * (repeats + 1) / (time.perf_counter() - start)


def exported_step(exp, ctx, args):
    """(step, state, tokens) as the trainer runs them: exported, serialized, loaded, compiled."""
    import tempfile

    from engine.training import compile as compiling
    from engine.training import programs, sharding

    layout = {"eval_tokens": 4 * args.eval_length}
    with tempfile.TemporaryDirectory() as folder:
        programs.save(Path(folder), programs.trace(exp, ctx, layout))
        loaded = programs.load(Path(folder), ctx.platform, 1)
    mesh = sharding.make_mesh(jax.devices()[:1])
    compiled = compiling.compile_programs(loaded, mesh)
    state = compiled.init(jax.random.key_data(jax.random.key(0)))
    tokens = np.random.default_rng(0).integers(2, args.vocab_size, (exp.batch_size, exp.sequence_length + 1))
    return compiled.train_step, state, jnp.asarray(tokens, jnp.int32)


def time_exported(exp, ctx, args, state, batch) -> tuple[float, float]:
    """Best seconds per step of train.py's jitted step and of the exported one, alternating rounds."""
    direct = jax.jit(exp.train_step, donate_argnums=0)
    exported, exported_state, tokens = exported_step(exp, ctx, args)
    progress = jnp.float32(0.1)
    holders = {"direct": [state, lambda s: direct(s, batch, progress)],
               "exported": [exported_state, lambda s: exported(s, tokens, progress)]}
    for holder in holders.values():  # compile and warm
        holder[0], out = holder[1](holder[0])
        jax.block_until_ready(out)
    best = {name: float("inf") for name in holders}
    for _ in range(args.rounds):
        for name, holder in holders.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                holder[0], out = holder[1](holder[0])
            jax.block_until_ready(out)
            best[name] = min(best[name], (time.perf_counter() - start) / args.steps)
    return best["direct"], best["exported"]


def unigram_bits_per_byte(data: str) -> float:
    """Entropy of the train split's token frequencies, in bits per UTF-8 byte: what a model
    that ignores context can reach at best."""
    from engine import paths
    from engine.data import cache

    directory = paths.resolve_data_dir(data)
    tokens, _ = cache.load_split(directory, "train")
    token_bytes = cache.load_token_bytes(directory)
    counts = np.bincount(np.asarray(tokens), minlength=len(token_bytes)).astype(np.float64)
    counts[token_bytes == 0] = 0.0  # specials carry no bytes and are not scored
    p = counts[counts > 0] / counts.sum()
    bits_per_token = -(p * np.log2(p)).sum()
    return bits_per_token * counts.sum() / (counts * token_bytes).sum()


def main(argv=None) -> int:
    args = parse_args(argv)
    ctx, exp, state, batch = build(args)
    params = state["params"] if isinstance(state, dict) and "params" in state else state
    n_all = count_params(params)
    n_matrices = count_params(params, exclude=["embed"])
    dtype = jnp.float32 if ctx.platform == "cpu" else jnp.bfloat16
    matmuls = [matmul_flops_per_second(size, dtype) for size in MATMUL_SIZES]
    step_seconds, matmul_rate, paired = time_training(exp, state, batch, args.steps, args.rounds, matmuls)
    tokens_per_second = exp.batch_size * exp.sequence_length / step_seconds

    print(f"device:            {devices.describe()}")
    print(f"model:             {n_all / 1e6:.2f}M parameters, {n_matrices / 1e6:.2f}M in matrices "
          f"(embedding {(n_all - n_matrices) / 1e6:.2f}M)")
    print(f"batch:             {exp.batch_size} x {exp.sequence_length} = {exp.batch_size * exp.sequence_length} tokens")
    print(f"step:              {step_seconds * 1e3:.1f} ms   {tokens_per_second:,.0f} tokens/s")
    print(f"matmul ({jnp.dtype(dtype).name}):    {matmul_rate / 1e9:,.1f} GFLOP/s (best of {MATMUL_SIZES})")
    figures = {"6 x all parameters": 6 * n_all, "6 x matrix parameters": 6 * n_matrices,
               "flops_per_token (6N + attn)": exp.flops_per_token}
    for name, per_token in figures.items():
        if not per_token:
            continue
        rate = per_token * tokens_per_second
        line = f"{name:28s} {rate / 1e9:9.1f} GFLOP/s   {100 * rate / matmul_rate:5.1f}% of matmul"
        mfu = devices.mfu_percent(rate, ctx.device_kind, 1) if ctx.platform != "cpu" else None
        print(line + (f"   MFU {mfu:.1f}%" if mfu is not None else ""))
    tokens = exp.batch_size * exp.sequence_length
    ratios = sorted(6 * n_matrices * tokens / seconds / rate for seconds, rate in paired)
    print(f"paired rounds:     6 x matrix parameters at {100 * ratios[len(ratios) // 2]:.1f}% of the matmul run "
          f"right after each round (median of {len(ratios)}; range {100 * ratios[0]:.1f}-{100 * ratios[-1]:.1f}%)")
    if args.exported:
        direct, exported = time_exported(exp, ctx, args, jax.jit(exp.init)(jax.random.key(0)), batch)
        print(f"exported step:     {exported * 1e3:.1f} ms against train.py's step jitted directly {direct * 1e3:.1f} ms "
              f"(best of {args.rounds} alternating rounds; ratio {exported / direct:.3f})")
    if args.data:
        print(f"unigram bound:     {unigram_bits_per_byte(args.data):.4f} bits per byte (train split of {args.data})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
