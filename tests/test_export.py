"""The exported forward: the leaves it reads, its file layout, and equality with train.py's logits."""
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from engine.errors import UserError
from engine.training import export, sharding
from engine.training.contract import Budget, Context

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import tiny_train  # noqa: E402

VOCAB, SEQ = 97, 16


def tiny(seed: int = 0):
    ctx = Context("cpu", "cpu", 1, 1, VOCAB, 0, SEQ, Budget("tokens", 1e4), seed)
    exp = tiny_train.experiment(ctx)
    return exp, exp.init(jax.random.key(seed))


def test_program_reads_only_the_model_and_matches_train_py(tmp_path):
    exp, state = tiny()
    forward = export.export_forward(exp.logits, jax.eval_shape(lambda: state), rows=4, seq_len=SEQ)
    leaves = jax.tree.leaves(state)
    assert sum(forward.used) == len(jax.tree.leaves(state["params"])) < len(leaves)  # no optimizer state
    assert forward.exported.nr_devices == 1 and forward.kernels == ()
    export.save(tmp_path, forward, state, {"note": "test"})
    program = export.load_program(tmp_path)
    weights = export.restore_weights(tmp_path, program, sharding.make_mesh())
    inputs = np.random.default_rng(0).integers(0, VOCAB, (4, SEQ)).astype(np.int32)
    got = program.call(*weights, jnp.asarray(inputs))
    want = exp.logits(state, jnp.asarray(inputs))
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
    meta = (tmp_path / export.FORWARD_DIR / export.META_FILE).read_text()
    assert '"leaves": ' in meta and '"jax_version"' in meta


def test_missing_or_damaged_program_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="holds no exported forward"):
        export.load_program(tmp_path)
    (tmp_path / export.FORWARD_DIR).mkdir()
    (tmp_path / export.FORWARD_DIR / export.PROGRAM_FILE).write_bytes(b"not a program")
    with pytest.raises(UserError, match="not a program exported by this engine"):
        export.load_program(tmp_path)


def _calling(target: str):
    return jax.jit(lambda x: jax.ffi.ffi_call(target, jax.ShapeDtypeStruct(x.shape, x.dtype))(x) + 1)


def test_export_disables_the_stability_check_for_kernels_only():
    """A program without custom calls exports in one lowering; a kernel's call (here a named
    stand-in, lowered for CPU) is exported with its check disabled and named; any other call
    outside JAX's stable list is refused."""
    x = jax.ShapeDtypeStruct((4,), jnp.float32)
    assert export.kernels_of(export.export_for(jax.jit(lambda v: v * 2), "cpu", x)) == ()
    assert export.kernels_of(export.export_for(_calling("__cudnn$standIn"), "cpu", x)) == ("__cudnn$standIn",)
    with pytest.raises(ValueError, match="compatibility guarantees"):
        export.export_for(_calling("not_a_kernel"), "cpu", x)


def test_custom_call_targets_in_both_spellings_and_kernels():
    text = ('%0 = stablehlo.custom_call @__cudnn$fmhaSoftmax(%a) : ...\n'
            '"stablehlo.custom_call"(%b) {call_target_name = "tpu_custom_call"} : ...\n'
            '%2 = stablehlo.custom_call @Sharding(%c)')
    assert export.custom_call_targets(text) == {"__cudnn$fmhaSoftmax", "tpu_custom_call", "Sharding"}
    assert export.is_kernel("__cudnn$fmhaSoftmax") and export.is_kernel("__gpu$xla.gpu.triton")
    assert not export.is_kernel("Sharding") and not export.is_kernel("my_python_callback")


@pytest.mark.parametrize("requested, devices, seq, vocab, total, platform, want", [
    (None, 1, 512, 8192, 256, "cuda", 4),    # 16 MiB of logits per row: 4 rows stay within 64 MiB
    (None, 8, 512, 8192, 256, "tpu", 32),    # per device
    (None, 1, 512, 8192, 256, "cpu", 1),     # a CPU keeps one call's logits near its cache
    (None, 8, 256, 8192, 128, "cpu", 8),     # one row per CPU device
    (None, 1, 64, 512, 64, "cpu", 8),        # small rows: at most MAX_ROWS_PER_DEVICE
    (None, 4, 64, 512, 6, "cuda", 8),        # no more than the layout needs, a multiple of the devices
    (None, 1, 4096, 2**17, 8, "cuda", 1),    # a huge row still gets one
    (12, 1, 512, 8192, 256, "cpu", 12),      # Experiment.eval_batch_size wins
])
def test_scoring_rows(requested, devices, seq, vocab, total, platform, want):
    assert export.scoring_rows(requested, devices, seq, vocab, total, platform) == want
