"""`autoresearch evaluate`: score a saved checkpoint on val or the held-out test split.

The scorer (engine/scoring/scorer.py) runs the checkpoint's exported forward: no train.py
is imported, so the figure is the same whoever wrote the code that trained it. The state
is placed on this machine's mesh, whatever mesh saved it, as long as the device count
and JAX version match the export.
"""
from __future__ import annotations

import argparse
import sys

from engine.training import checkpoint
from engine.training import compile as compiling
from engine.training import devices
from engine.training import summary
from engine.errors import UserError


def main(args: argparse.Namespace) -> int:
    from engine import paths
    from engine.data import cache as data
    from engine.scoring import scorer

    data_dir = paths.resolve_data_dir(args.data)
    manifest = data.load_manifest(data_dir)
    meta = checkpoint.read_meta(args.checkpoint)
    _check_same_data(meta, manifest, args.checkpoint)
    devices.initialize_distributed()
    compiling.disable_persistent_cache()
    result = scorer.score(args.checkpoint, data_dir, args.split, getattr(args, "probe_seed", None))
    figures = {**result.as_dict(args.split), "manifest_fingerprint": manifest.get("fingerprint"),
               "checkpoint": str(args.checkpoint)}
    if args.json_path:  # every host: each launcher reads its own copy
        summary.write_json(args.json_path, figures)
    if result.status != "ok":
        print(f"autoresearch evaluate: {result.status}: {result.reason}", file=sys.stderr, flush=True)
        return 1
    print(f"{args.split}_bpb: {result.bpb:.6f}", flush=True)
    return 0


def _check_same_data(meta: dict, manifest: dict, where) -> None:
    trained_on, here = meta.get("manifest_fingerprint"), manifest.get("fingerprint")
    if trained_on and here and trained_on != here:
        raise UserError(f"the checkpoint in {where} was trained on data {trained_on[:12]}, but the "
                        f"dataset given is {here[:12]}: pass --data with the cache it was trained on")
