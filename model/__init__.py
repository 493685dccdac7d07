"""The fixed building blocks a model in train.py is built from.

The model itself lives in train.py, where the agent edits it; these parts are fixed (the
fixed-file guard refuses changes to them) so that every experiment shares them:

    model.attention  causal attention per backend (cuDNN, Pallas splash, XLA)
    model.flops      analytic FLOPs per token for MFU
    model.loss       soft-capped head cross-entropy, and its fused chunked form for training
    model.sampling   generation from a saved state
    model.accumulate gradients of a fixed global batch, in micro-batches that fit a device
    model.kv_cache   a key/value cache for decoding one token at a time

Nothing is imported here, so `import model.flops` stays free of JAX.
"""
