"""`autoresearch sample`: text from the best kept checkpoint of a loop.

The model is the train.py of the best kept commit (read from git, so the working
tree may be anywhere), its state restored with Orbax onto this machine's devices,
and its Experiment.logits drives model/sampling.py (with the experiment's KV cache,
init_cache and decode, where it has one).
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from engine import constants, paths
from engine.errors import UserError
from engine.loop.ledger import read_rows
from engine.loop.standings import best_row, score
from engine.report.runs import LEDGER, checkpoint_of, resolve_run_dir, train_source


def main(args) -> int:
    _check_settings(args.max_tokens, args.temperature, args.top_k)
    run_dir = resolve_run_dir(args.tag)
    best = best_row(read_rows(run_dir / LEDGER))
    if best is None:
        raise UserError(f"loop {run_dir.name!r} has no kept experiment with a val_bpb yet: "
                        "wait for the baseline to finish (`autoresearch status`)")
    checkpoint = checkpoint_of(run_dir, best)
    if not checkpoint.exists():
        raise UserError(f"the best experiment ({best.get('experiment')}) has no checkpoint at "
                        f"{checkpoint}: was the loop run with checkpoints turned off?")
    data_dir = paths.find_data_dir(best.get("manifest_fingerprint"))
    if data_dir is None:
        data_dir = paths.resolve_data_dir(None)
        print(f"note: no cache matches the loop's manifest; using {data_dir}", file=sys.stderr)
    source = _train_source(run_dir, best)
    print(f"experiment {best.get('experiment')} ({str(best.get('commit'))[:7]}), "
          f"val_bpb {score(best):.6f}: {best.get('description')}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="autoresearch-sample-") as tmp:
        train_py = Path(tmp) / "train.py"
        train_py.write_text(source)
        text = sample_text(train_py, checkpoint, data_dir, args.prompt, args.max_tokens,
                           args.temperature, args.top_k, args.seed, _budget_of(best))
    print(args.prompt + text)
    return 0


def sample_text(train_py: Path, checkpoint: Path, data_dir: Path, prompt: str, max_tokens: int,
                temperature: float, top_k: int, seed: int, budget=None) -> str:
    """The text that follows `prompt`, cut at the first end of document."""
    import jax

    from engine.training import checkpoint as checkpoints
    from engine.training import compile as compiling
    from engine.data import cache as data
    from engine.training import sharding
    from engine.training import trainer
    from engine.training.contract import Budget
    from engine.data.tokenizer import Tokenizer
    from model.sampling import generate

    _check_settings(max_tokens, temperature, top_k)
    manifest = data.load_manifest(data_dir)
    budget = budget or Budget("time", constants.TIME_BUDGET_SECONDS)
    compiling.enable_persistent_cache()
    ctx = trainer.make_context(manifest, budget, seed)
    exp = trainer.load_experiment(train_py, ctx)
    if exp.logits is None:
        raise UserError(f"the experiment in {train_py} sets no Experiment.logits: add "
                        "logits=(state, inputs int32[B, T]) -> float32[B, T, vocab] to sample")
    mesh = sharding.make_mesh()
    abstract_state, state_sh = compiling.plan_state(exp, mesh, jax.random.key(seed))
    state = checkpoints.restore(checkpoint, abstract_state, state_sh)
    tokenizer = Tokenizer(data.tokenizer_path(data_dir))
    prompt_ids = [tokenizer.bos_id] + tokenizer.encode(prompt)
    cache = (exp.init_cache, exp.decode) if exp.init_cache and exp.decode else None
    new_ids = generate(exp.logits, state, prompt_ids, max_tokens, temperature=temperature,
                       top_k=top_k, rng=jax.random.key(seed),
                       context_length=ctx.eval_sequence_length, cache=cache).tolist()
    if tokenizer.bos_id in new_ids:
        new_ids = new_ids[: new_ids.index(tokenizer.bos_id)]
    return tokenizer.decode(new_ids)


def _check_settings(max_tokens: int, temperature: float, top_k: int) -> None:
    if max_tokens <= 0:
        raise UserError(f"--max-tokens must be positive, got {max_tokens}")
    if temperature < 0:
        raise UserError(f"--temperature must be 0 (greedy) or more, got {temperature}")
    if top_k < 0:
        raise UserError(f"--top-k must be 0 (no limit) or more, got {top_k}")


def _budget_of(row: dict):
    from engine.training.contract import Budget

    mode, value = row.get("budget_mode"), row.get("budget_value")
    if mode in ("time", "flops", "tokens") and isinstance(value, (int, float)):
        return Budget(mode, float(value))
    return None


def _train_source(run_dir: Path, row: dict) -> str:
    try:
        return train_source(run_dir.parent.parent, row)
    except Exception as error:  # GitPython raises several kinds for a missing commit or path
        raise UserError(f"cannot read train.py of commit {row.get('commit')} from git: {error}; "
                        "run sample in the repository the loop ran in") from error
