"""`autoresearch evaluate`: score a saved checkpoint on val or the held-out test split.

The same fixed metric as training, with the train.py that wrote the checkpoint; the
state is restored onto this machine's mesh, whatever mesh saved it.
"""
from __future__ import annotations

import argparse

import jax

from engine import constants
from engine.training import checkpoint
from engine.training import compile as compiling
from engine.training import devices
from engine.training import sharding
from engine.training import summary
from engine.training import trainer
from engine.errors import UserError
from engine.training.contract import Budget


def main(args: argparse.Namespace) -> int:
    from engine.data import cache as data
    data_dir = _data_dir(args)
    manifest = data.load_manifest(data_dir)
    meta = checkpoint.read_meta(args.checkpoint)
    _check_same_data(meta, manifest, args.checkpoint)
    devices.initialize_distributed()
    compiling.enable_persistent_cache()
    seed = int(meta.get("seed", 0))
    ctx = trainer.make_context(manifest, Budget("time", constants.TIME_BUDGET_SECONDS), seed)
    exp = trainer.load_experiment(args.path, ctx)
    mesh = sharding.make_mesh()
    eval_batch = trainer.check_batches(exp, mesh)
    abstract_state, state_sh = compiling.plan_state(exp, mesh, jax.random.key(seed))
    state = checkpoint.restore(args.checkpoint, abstract_state, state_sh)
    eval_step = compiling.compile_eval_step(exp, mesh, abstract_state, state_sh, eval_batch,
                                            ctx.eval_sequence_length, ctx.vocab_size)
    score = trainer.evaluate(exp, eval_step, state, data_dir, manifest, eval_batch, mesh, args.split)
    result = {"split": args.split, "bpb": score.bpb, "tokens": score.tokens,
              "manifest_fingerprint": manifest.get("fingerprint"), "checkpoint": str(args.checkpoint)}
    if args.json_path and jax.process_index() == 0:
        summary.write_json(args.json_path, result)
    print(f"{args.split}_bpb: {score.bpb:.6f}", flush=True)
    return 0


def _data_dir(args):
    from engine import paths
    return paths.resolve_data_dir(args.data)


def _check_same_data(meta: dict, manifest: dict, where) -> None:
    trained_on, here = meta.get("manifest_fingerprint"), manifest.get("fingerprint")
    if trained_on and here and trained_on != here:
        raise UserError(f"the checkpoint in {where} was trained on data {trained_on[:12]}, but the "
                        f"dataset given is {here[:12]}: pass --data with the cache it was trained on")
