"""The scorer on a real prepared cache: the engine's cross-entropy, the probe first, the checks."""
import math
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from engine.data import cache
from engine.errors import UserError
from engine.scoring import metric, scorer
from engine.training import export
from engine.training.contract import Budget, Context

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import tiny_train  # noqa: E402


def saved(tmp_path: Path, data_dir: Path, logits=None, seq_len: int | None = None, rows: int = 8) -> tuple:
    manifest = cache.load_manifest(data_dir)
    seq = int(manifest["constants"]["sequence_length"])
    ctx = Context("cpu", "cpu", 1, 1, int(manifest["vocab_size"]), int(manifest["bos_id"]), seq,
                  Budget("tokens", 1e4), 0)
    exp = tiny_train.experiment(ctx)
    state = exp.init(jax.random.key(0))
    forward = export.export_forward(logits or exp.logits, jax.eval_shape(lambda: state), rows, seq_len or seq)
    export.save(tmp_path / "checkpoint", forward, state, {})
    return tmp_path / "checkpoint", exp, state, manifest


def numpy_bpb(exp, state, data_dir, manifest) -> float:
    """Straight from train.py's logits, in float64: no engine code but the layout."""
    tokens, _ = cache.load_split(data_dir, "val")
    seq = int(manifest["constants"]["sequence_length"])
    rows = metric.eval_rows(tokens, int(manifest["constants"]["eval_tokens"]), seq)
    logits = np.asarray(exp.logits(state, jnp.asarray(rows[:, :-1])), np.float64)
    logp = logits - logits.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    targets = rows[:, 1:]
    nats = -np.take_along_axis(logp, targets[..., None], -1)[..., 0]
    nbytes = cache.load_token_bytes(data_dir)[targets]
    return float(nats[nbytes > 0].sum() / (math.log(2) * nbytes.sum()))


def test_scores_the_exported_model_with_the_engines_cross_entropy(prepared_data, tmp_path):
    checkpoint, exp, state, manifest = saved(tmp_path, prepared_data)
    got = scorer.score(checkpoint, prepared_data, "val")
    assert got.status == "ok" and got.reason is None
    assert got.tokens == int(manifest["constants"]["eval_tokens"])
    assert got.bpb == pytest.approx(numpy_bpb(exp, state, prepared_data, manifest), rel=1e-5)
    assert got.probe_passes >= 5 and set(got.phases) == {"load", "compile", "probe", "metric"}
    assert got.forward_calls == got.probe_passes + got.tokens // (64 * 8)  # 8 rows of 64 per call
    test = scorer.score(checkpoint, prepared_data, "test")
    assert test.status == "ok" and test.bpb != got.bpb


def test_a_model_that_sees_the_future_is_invalid_before_any_metric(prepared_data, tmp_path):
    leaky = lambda state, x: tiny_train.logits(state["params"], jnp.roll(x, -3, axis=1))
    checkpoint, *_ = saved(tmp_path, prepared_data, logits=leaky)
    got = scorer.score(checkpoint, prepared_data, "val")
    assert got.status == "invalid" and got.bpb is None
    assert "it sees the future" in got.reason


def test_a_program_for_other_rows_is_a_user_error(prepared_data, tmp_path):
    checkpoint, *_ = saved(tmp_path, prepared_data, seq_len=32)
    with pytest.raises(UserError, match="scores rows of 64"):
        scorer.score(checkpoint, prepared_data, "val")


def test_programs_with_foreign_custom_calls_are_refused(prepared_data, tmp_path, monkeypatch):
    checkpoint, *_ = saved(tmp_path, prepared_data)
    program = export.load_program(checkpoint)
    monkeypatch.setattr(export, "stable_targets", lambda: set())
    monkeypatch.setattr(export, "custom_call_targets", lambda text: {"my_host_callback"})
    with pytest.raises(UserError, match="calls my_host_callback, which the scorer does not run"):
        scorer.check_program(program, 64, 512)
