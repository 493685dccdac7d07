"""Scoring: everything that runs a trained model to measure or use it.

Owns the fixed metric (bits per byte on the fixed layout), the scorer and its
causality probe (the only source of val_bpb and test_bpb: it runs a checkpoint's
exported forward and never imports train.py), `autoresearch evaluate`, `verify` and
`sample`. Imports JAX and `engine.training` for the mesh, the checkpoint and the export
format; never the loop, agents or report.
"""
