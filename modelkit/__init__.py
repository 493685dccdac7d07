"""Fixed building blocks train.py may import.

    modelkit.attention  causal attention per backend (cuDNN, Pallas splash, XLA)
    modelkit.flops      analytic FLOPs per token for MFU
    modelkit.loss       soft-capped head cross-entropy, and its fused chunked form for training
    modelkit.sampling   generation from a saved state
    modelkit.accumulate gradients of a fixed global batch, in micro-batches that fit a device
    modelkit.kv_cache   a key/value cache for decoding one token at a time

Nothing is imported here, so `import modelkit.flops` stays free of JAX.
"""
