"""engine/training/programs.py: what the tracer writes is checked before the trainer runs it."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import engine
from engine.errors import UserError
from engine.training import programs, tracer

VOCAB, T_EVAL = 64, 16
LAYOUT = {"platform": "cpu", "device_kind": "cpu", "num_devices": 1, "num_processes": 1, "vocab_size": VOCAB,
          "bos_id": 1, "eval_sequence_length": T_EVAL, "eval_tokens": 4 * T_EVAL, "budget_mode": "tokens",
          "budget_value": 1e4, "seed": 0, "data_dir": "/nonexistent"}


def experiment(table=None):
    def init(rng):
        w = jax.random.normal(rng, (VOCAB, VOCAB)) * 0.01
        return {"w": w + (jnp.asarray(table) if table is not None else 0.0), "step": jnp.zeros((), jnp.int32)}

    def logits(state, inputs):
        return state["w"][inputs]

    def train_step(state, batch, progress):
        loss_of = lambda w: -jnp.mean(jax.nn.log_softmax(w[batch["inputs"]])[..., 0])
        loss, grad = jax.value_and_grad(loss_of)(state["w"])
        return {"w": state["w"] - 0.1 * grad, "step": state["step"] + 1}, {"loss": loss}

    return engine.Experiment(init=init, train_step=train_step, logits=logits, batch_size=4, sequence_length=8)


def saved(tmp_path, exp=None):
    traced = programs.trace(exp or experiment(), tracer.make_context(LAYOUT), LAYOUT)
    programs.save(tmp_path, traced)
    return tmp_path


def test_programs_round_trip_and_describe_the_state(tmp_path):
    loaded = programs.load(saved(tmp_path), "cpu", 1)
    assert [leaf["path"] for leaf in loaded.leaves] == ["['step']", "['w']"]
    assert loaded.used() == [False, True]  # the forward reads w only
    assert loaded.spec["batch_size"] == 4 and loaded.spec["eval_rows"] > 0


@pytest.mark.parametrize("field, value, message", [
    ("batch_size", 2, "train_step takes tokens"),
    ("eval_rows", 3, "not the 3 rows"),
    ("batch_size", True, "not a positive int"),
])
def test_a_spec_that_disagrees_with_its_programs_is_refused(tmp_path, field, value, message):
    folder = saved(tmp_path)
    spec = json.loads((folder / programs.SPEC_FILE).read_text())
    spec[field] = value
    (folder / programs.SPEC_FILE).write_text(json.dumps(spec))
    with pytest.raises(UserError, match=message):
        programs.load(folder, "cpu", 1)


def test_a_partition_over_an_axis_that_does_not_exist_is_refused(tmp_path):
    folder = saved(tmp_path)
    spec = json.loads((folder / programs.SPEC_FILE).read_text())
    spec["leaves"][1]["spec"] = ["model", None]
    (folder / programs.SPEC_FILE).write_text(json.dumps(spec))
    with pytest.raises(UserError, match="only the \"data\" axis exists"):
        programs.load(folder, "cpu", 1)


def test_a_program_whose_leaves_were_swapped_is_refused(tmp_path):
    folder = saved(tmp_path)
    (folder / programs.FILES["init"]).write_bytes((folder / programs.FILES["logits"]).read_bytes())
    with pytest.raises(UserError, match="init's outputs differ"):
        programs.load(folder, "cpu", 1)


def test_constants_beyond_the_limit_are_refused_with_what_to_do(tmp_path):
    table = np.ones((VOCAB, VOCAB), np.float32) + np.arange(VOCAB * VOCAB).reshape(VOCAB, VOCAB)  # 16 KiB
    assert table.nbytes < programs.MAX_CONSTANT_BYTES
    programs.load(saved(tmp_path / "small", experiment(table)), "cpu", 1)
    big = np.tile(table, (3, 3))[:VOCAB * 3, :VOCAB * 3]  # 144 KiB, used through a slice
    exp = experiment()
    baked = engine.Experiment(**{**exp.__dict__, "init": lambda rng: {
        "w": exp.init(rng)["w"] + jnp.asarray(big)[:VOCAB, :VOCAB], "step": jnp.zeros((), jnp.int32)}})
    with pytest.raises(UserError, match="bytes of constants together.*Compute tables inside the program"):
        programs.load(saved(tmp_path / "big", baked), "cpu", 1)


def test_constants_count_across_all_programs_together(tmp_path):
    """Two programs of 40 KiB each: within the old per-program limit, refused together."""
    half = np.arange(160 * VOCAB, dtype=np.float32).reshape(160, VOCAB) / 7  # 40 KiB
    exp = experiment()
    init = lambda rng: {"w": exp.init(rng)["w"] + jnp.asarray(half).sum(0)[:VOCAB],
                        "step": jnp.zeros((), jnp.int32)}
    logits = lambda state, inputs: exp.logits(state, inputs) + jnp.asarray(half).max(0)[:VOCAB]
    both = engine.Experiment(**{**exp.__dict__, "init": init, "logits": logits})
    with pytest.raises(UserError, match=r"carry \d[\d,]* bytes of constants together \(init 4[\d,]*, .*logits 4"):
        programs.load(saved(tmp_path, both), "cpu", 1)


def test_the_size_bound_counts_all_programs_and_says_exact_bytes():
    limit = programs.MAX_PROGRAM_BYTES
    programs.check_size({"init": limit // 2, "train_step": limit - limit // 2})
    with pytest.raises(UserError, match=f"take {limit + 1:,} bytes together .*init {limit // 2:,}.*"
                                        f"more than the {limit:,} bytes.*jax.lax.scan"):
        programs.check_size({"init": limit // 2, "train_step": limit - limit // 2 + 1})
    programs.check_constants({"init": programs.MAX_CONSTANT_BYTES})
    with pytest.raises(UserError, match=f"{programs.MAX_CONSTANT_BYTES + 1:,} bytes of constants"):
        programs.check_constants({"init": programs.MAX_CONSTANT_BYTES, "logits": 1})


def test_a_program_file_over_the_size_bound_is_refused_unread(tmp_path):
    folder = saved(tmp_path)
    with open(folder / programs.FILES["decode"], "wb") as padded:
        padded.truncate(programs.MAX_PROGRAM_BYTES)  # not a program at all: never parsed
    with pytest.raises(UserError, match="more than the .* bytes the engine accepts"):
        programs.load(folder, "cpu", 1)


def test_programs_for_another_platform_are_refused(tmp_path):
    with pytest.raises(UserError, match="exported for cpu, and this run is on tpu"):
        programs.load(saved(tmp_path), "tpu", 1)
