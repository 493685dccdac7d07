"""Fixed building blocks train.py may import.

    model.attention  causal attention per backend (cuDNN, Pallas splash, XLA)
    model.flops      analytic FLOPs per token for MFU
    model.loss       soft-capped head cross-entropy, and its fused chunked form for training
    model.sampling   generation from a saved state

Nothing is imported here, so `import model.flops` stays free of JAX.
"""
