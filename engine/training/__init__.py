"""Training: the JAX side that runs an agent's train.py for a fixed budget.

Owns the train.py contract (`contract.py`: Budget, Context, Experiment), the trainer
(`autoresearch train`), ahead-of-time compilation, the budget clock, the device mesh
and shardings, device facts and MFU, the FLOP count, the checkpoint and the summary
block. Only this package, `engine.scoring` and `modelkit/` import JAX; importing the
package itself stays light, so `engine.Experiment` costs nothing to the loop.
"""
