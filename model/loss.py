"""Cross-entropy of a soft-capped output head, plain and fused.

`head_cross_entropy` is the reference: per-token nats from hidden states, for evaluation.
`fused_head_cross_entropy_mean` computes the same mean loss for training, in chunks of
tokens, and its gradients in the same pass (the cotangent of a mean is one scalar, so
they only need scaling afterwards). The [tokens, vocab] logits then never exist whole,
which saves several memory-bound passes over them: on CPU those cost as much as the
head's matmuls.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def softcap(logits, cap: float | None):
    return logits if cap is None else cap * jnp.tanh(logits / cap)


def cross_entropy(logits_MV, targets_M):
    """Nats per row. Picks the target's logit by comparison, not by gather, whose
    gradient is a scatter that is slow on CPU."""
    is_target_MV = jnp.arange(logits_MV.shape[-1]) == targets_M[..., None]
    target_logit_M = jnp.sum(jnp.where(is_target_MV, logits_MV, 0.0), axis=-1)
    return jax.nn.logsumexp(logits_MV, axis=-1) - target_logit_M


def head_logits(h_MD, w_DV, cap: float | None):
    return softcap(jnp.dot(h_MD, w_DV, preferred_element_type=jnp.float32), cap)


def head_cross_entropy(h_MD, w_DV, targets_M, cap: float | None):
    """Per-token nats of softcap(h @ w) against the targets (differentiable by autodiff)."""
    return cross_entropy(head_logits(h_MD, w_DV, cap), targets_M)


def _chunks(h_MD, targets_M, chunk: int):
    """[count, size, D] chunks, chunk i holding tokens i, i + count, i + 2 count, ...: strided,
    so each chunk keeps a share of every device's rows when the batch is sharded."""
    M = h_MD.shape[0]
    size = chunk if M % chunk == 0 else M  # uneven: one chunk
    count = M // size
    return (jnp.swapaxes(h_MD.reshape(size, count, -1), 0, 1),
            jnp.swapaxes(targets_M.reshape(size, count), 0, 1))


def _unchunk(x_CKD):
    return jnp.swapaxes(x_CKD, 0, 1).reshape(-1, x_CKD.shape[-1])


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def fused_head_cross_entropy_mean(h_MD, w_DV, targets_M, cap: float | None, chunk: int = 1024):
    """Mean over tokens of head_cross_entropy, `chunk` tokens at a time."""
    h_CKD, targets_CK = _chunks(h_MD, targets_M, chunk)
    chunk_sums = jax.lax.map(lambda xs: jnp.sum(head_cross_entropy(xs[0], w_DV, xs[1], cap)),
                             (h_CKD, targets_CK))
    return jnp.sum(chunk_sums) / h_MD.shape[0]


def _forward_with_gradients(h_MD, w_DV, targets_M, cap, chunk):
    M, V = h_MD.shape[0], w_DV.shape[1]
    h_CKD, targets_CK = _chunks(h_MD, targets_M, chunk)
    # each chunk also transposed, made before the loop: inside it XLA would fold the transpose
    # into the weight-gradient matmul, whose transposed-operand form runs at half speed on CPU
    h_CDK = jnp.swapaxes(h_CKD, 1, 2)

    def one_chunk(dw_DV, xs):
        h_KD, h_DK, targets_K = xs
        capped_KV = softcap(jnp.dot(h_KD, w_DV, preferred_element_type=jnp.float32), cap)
        # capped logits lie in [-cap, cap]: shifting by cap cannot overflow, and saves a max pass
        shift_K = jnp.full(targets_K.shape, cap, jnp.float32) if cap else jnp.max(capped_KV, axis=-1)
        exp_KV = jnp.exp(capped_KV - shift_K[:, None])
        sum_K = jnp.sum(exp_KV, axis=-1)
        # forward only (no autodiff here), so a gather is cheap
        target_K = jnp.take_along_axis(capped_KV, targets_K[:, None], axis=-1)[:, 0]
        loss = jnp.sum(shift_K + jnp.log(sum_K) - target_K)
        is_target_KV = jnp.arange(V) == targets_K[:, None]
        dcapped_KV = exp_KV * (1.0 / (M * sum_K))[:, None] - jnp.where(is_target_KV, 1.0 / M, 0.0)
        draw_KV = dcapped_KV if cap is None else dcapped_KV * (1.0 - jnp.square(capped_KV * (1.0 / cap)))
        draw_KV = draw_KV.astype(h_KD.dtype)
        dh_KD = jnp.dot(draw_KV, w_DV.T, preferred_element_type=jnp.float32).astype(h_KD.dtype)
        dw_DV = dw_DV + jnp.dot(h_DK, draw_KV, preferred_element_type=jnp.float32)
        return dw_DV, (loss, dh_KD)

    dw_DV, (losses, dh_CKD) = jax.lax.scan(one_chunk, jnp.zeros(w_DV.shape, jnp.float32), (h_CKD, h_CDK, targets_CK))
    return jnp.sum(losses) / M, (_unchunk(dh_CKD), dw_DV.astype(w_DV.dtype))


def _fused_fwd(h_MD, w_DV, targets_M, cap, chunk):
    return _forward_with_gradients(h_MD, w_DV, targets_M, cap, chunk)


def _fused_bwd(cap, chunk, residuals, g):
    dh_MD, dw_DV = residuals
    g = g.astype(jnp.float32)
    return (g * dh_MD).astype(dh_MD.dtype), (g * dw_DV).astype(dw_DV.dtype), None  # targets: integers


fused_head_cross_entropy_mean.defvjp(_fused_fwd, _fused_bwd)
