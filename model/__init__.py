"""Fixed building blocks train.py may import.

    model.attention  causal attention per backend (cuDNN, Pallas splash, XLA)
    model.flops      analytic FLOPs per token for MFU
    model.sampling   generation from a saved state

Nothing is imported here, so `import model.flops` stays free of JAX.
"""
