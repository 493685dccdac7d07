"""Training: the JAX side that runs an agent's train.py for a fixed budget.

Owns the train.py contract (`contract.py`: Budget, Context, Experiment), `autoresearch
train` (`launcher.py`: a trainer process, then a scorer process), the trainer and its
progress line, ahead-of-time compilation, the budget clock, the device mesh and shardings, device facts
and MFU, the FLOP count, the checkpoint and the exported forward, the audit hooks and
engine snapshot around train.py (`sandbox.py`, `integrity.py`) and the summary block.
Only this package, `engine.scoring` and `model/` import JAX; importing the package
itself stays light, so `engine.Experiment` costs nothing to the loop.
"""
