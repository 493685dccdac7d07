"""`autoresearch sample`: text from the best kept checkpoint of a loop.

No train.py is imported: the checkpoint's exported programs (saved by the trainer, see
engine/training/programs.py) drive model/sampling.py. With the experiment's KV cache
(exported `init_cache` and a one-token `decode`) the prompt is fed a token at a time;
without one, the exported forward recomputes the window for each token. The state is
restored with Orbax onto this machine's devices.
"""
from __future__ import annotations

import sys
from pathlib import Path

from engine import paths
from engine.errors import UserError
from engine.loop.ledger import read_rows
from engine.loop.standings import best_row, score
from engine.report.runs import LEDGER, checkpoint_of, resolve_run_dir


def main(args) -> int:
    _check_settings(args.max_tokens, args.temperature, args.top_k)
    run_dir = resolve_run_dir(args.tag)
    rows = read_rows(run_dir / LEDGER)
    best = best_row(rows)
    if best is None:
        raise UserError(_nothing_to_sample(run_dir, rows))
    checkpoint = checkpoint_of(run_dir, best)
    if not checkpoint.exists():
        raise UserError(f"the best experiment ({best.get('experiment')}) has no checkpoint at "
                        f"{checkpoint}: was the loop run with checkpoints turned off?")
    data_dir = paths.find_data_dir(best.get("manifest_fingerprint"))
    if data_dir is None:
        data_dir = paths.resolve_data_dir(None)
        print(f"note: no cache matches the loop's manifest; using {data_dir}", file=sys.stderr)
    print(f"experiment {best.get('experiment')} ({str(best.get('commit'))[:7]}), "
          f"val_bpb {score(best):.6f}: {best.get('description')}", file=sys.stderr)
    text = sample_text(checkpoint, data_dir, args.prompt, args.max_tokens, args.temperature, args.top_k, args.seed)
    print(args.prompt + text)
    return 0


def _nothing_to_sample(run_dir: Path, rows: list[dict]) -> str:
    """Why a loop has no best checkpoint: its baseline failed (and why), is running, or never ran."""
    from engine.loop.standings import baseline_rows
    from engine.report.runs import lock_holder
    from engine.report.status import baseline_failure

    runs, (_, running) = baseline_rows(rows), lock_holder(run_dir)
    if runs and not running:
        return f"loop {run_dir.name!r} has no checkpoint to sample: its baseline {baseline_failure(runs)}"
    if running:
        return (f"loop {run_dir.name!r} has no scored experiment yet: wait for the baseline to finish "
                f"(`autoresearch status --tag {run_dir.name}`)")
    return (f"loop {run_dir.name!r} has no scored experiment: start it with "
            f"`autoresearch loop --tag {run_dir.name}`")


def sample_text(checkpoint: Path, data_dir: Path, prompt: str, max_tokens: int, temperature: float,
                top_k: int, seed: int) -> str:
    """The text that follows `prompt`, cut at the first end of document."""
    import jax

    from engine.data import cache as data
    from engine.data.tokenizer import Tokenizer
    from engine.training import compile as compiling
    from engine.training import devices
    from model.sampling import generate

    _check_settings(max_tokens, temperature, top_k)
    compiling.disable_persistent_cache()
    loaded = _programs(Path(checkpoint), devices.platform(), jax.device_count())
    state = _restore_state(Path(checkpoint), loaded)
    tokenizer = Tokenizer(data.tokenizer_path(data_dir))
    prompt_ids = [tokenizer.bos_id] + tokenizer.encode(prompt)
    logits_fn, cache = exported_sampling(loaded)
    context = int(loaded.logits.in_avals[-1].shape[1])
    new_ids = generate(logits_fn, state, prompt_ids, max_tokens, temperature=temperature, top_k=top_k,
                       rng=jax.random.key(seed), context_length=context, cache=cache).tolist()
    if tokenizer.bos_id in new_ids:
        new_ids = new_ids[: new_ids.index(tokenizer.bos_id)]
    return tokenizer.decode(new_ids)


def _programs(checkpoint: Path, platform: str, num_devices: int):
    from engine.training import programs

    folder = checkpoint / "programs"
    if not (folder / programs.SPEC_FILE).is_file():
        raise UserError(f"{checkpoint} holds no exported programs (programs/): it was saved by an older "
                        "engine or with --no-checkpoint; train it again to sample from it")
    return programs.load(folder, platform, num_devices)


def _restore_state(checkpoint: Path, loaded) -> tuple:
    import jax

    from engine.training import checkpoint as checkpoints
    from engine.training import export, programs, sharding

    mesh = sharding.make_mesh()
    avals = programs.leaf_avals(loaded)
    keys = [export.leaf_key(i) for i in range(len(avals))]
    whole = sharding.replicated(mesh)
    restored = checkpoints.restore(checkpoint, dict(zip(keys, avals)), {key: whole for key in keys})
    return tuple(jax.device_put(restored[key], whole) for key in keys)


def exported_sampling(loaded):
    """(logits_fn, cache) for model/sampling.generate from exported programs: logits_fn pads a
    window into the forward's fixed [rows, T] (causal: padding after it changes nothing), and
    the cache's decode feeds its tokens one at a time (the export takes one)."""
    import jax
    import jax.numpy as jnp

    rows, width = loaded.logits.in_avals[-1].shape
    used = loaded.used()

    def logits_fn(state, inputs_1xW):
        W = inputs_1xW.shape[1]
        padded = jnp.zeros((rows, width), jnp.int32).at[0, :W].set(inputs_1xW[0])
        read = [leaf for leaf, u in zip(state, used) if u]
        return loaded.logits.call(*read, padded)[:1, :W]

    if loaded.init_cache is None or loaded.decode is None:
        return logits_fn, None

    def init_cache(state, _rows, _capacity):  # exported for one row and the whole context
        return tuple(loaded.init_cache.call(*state))

    def decode(state, cache, tokens_1xT, position):
        def one(carry, token):
            cache_now, at = carry
            logits, *cache_now = loaded.decode.call(*state, *cache_now, token.reshape(1, 1), at)
            return (tuple(cache_now), at + 1), logits[0, 0]
        (cache, _), logits_TxV = jax.lax.scan(one, (cache, jnp.int32(position)), tokens_1xT[0])
        return logits_TxV[None], cache

    return logits_fn, (init_cache, decode)


def _check_settings(max_tokens: int, temperature: float, top_k: int) -> None:
    if max_tokens <= 0:
        raise UserError(f"--max-tokens must be positive, got {max_tokens}")
    if temperature < 0:
        raise UserError(f"--temperature must be 0 (greedy) or more, got {temperature}")
    if top_k < 0:
        raise UserError(f"--top-k must be 0 (no limit) or more, got {top_k}")
