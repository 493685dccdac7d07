"""Scoring: everything that runs a trained model to measure or use it.

Owns the fixed metric (bits per byte on the fixed layout), `autoresearch evaluate`
and `autoresearch sample`. Imports JAX and `engine.training` for the mesh and the
checkpoint; never the loop, agents or report.
"""
