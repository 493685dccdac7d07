"""Fixed building blocks train.py may import.

    modelkit.attention  causal attention per backend (cuDNN, Pallas splash, XLA)
    modelkit.flops      analytic FLOPs per token for MFU
    modelkit.loss       soft-capped head cross-entropy, and its fused chunked form for training
    modelkit.sampling   generation from a saved state

Nothing is imported here, so `import modelkit.flops` stays free of JAX.
"""
