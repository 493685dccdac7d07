"""autoresearch-jax engine: the fixed harness around an agent-edited train.py.

Importing `engine` stays light (no JAX): the research loop imports it too.
"""
from engine.training.contract import Budget, Context, Experiment

__all__ = ["Budget", "Context", "Experiment"]
