"""Training: the JAX side that runs an experiment for a fixed budget.

Owns the train.py contract (`contract.py`: Budget, Context, Experiment), `autoresearch
train` (`launcher.py`: a trainer process, then a scorer process), the tracer (the one
process that imports train.py, under the audit hooks of `sandbox.py`) and the exported
programs it writes (`programs.py`, `export.py`), the trainer and its progress line,
ahead-of-time compilation, the FLOP count read from the programs (`stablehlo.py`,
`kernel_flops.py`), the budget clock, the device mesh and shardings, device facts and MFU,
the checkpoint and the summary block.
Only this package, `engine.scoring` and `model/` import JAX; importing the package
itself stays light, so `engine.Experiment` costs nothing to the loop.
"""
