"""`autoresearch train` end to end on the tiny train.py: result, summary, failures, checkpoint."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine import cli
from engine.training import summary

FIXTURES = Path(__file__).parent / "fixtures"
TINY_TRAIN = FIXTURES / "tiny_train.py"
TOKENS = "4096"  # 8 steps of 8 rows x 64 tokens: seconds on CPU


def train(data_dir, tmp_path, path=TINY_TRAIN, *flags, json_name="result.json"):
    result = tmp_path / json_name
    code = cli.main(["train", str(path), "--data", str(data_dir), "--json", str(result), *flags])
    return code, (json.loads(result.read_text()) if result.exists() else None)


def variant(tmp_path, body: str, name: str = "train_variant.py") -> Path:
    """A train.py built on the tiny one, changed as a test needs."""
    path = tmp_path / name
    path.write_text(f"import sys\nsys.path.insert(0, {str(FIXTURES)!r})\n"
                    "import dataclasses\nimport jax\nimport jax.numpy as jnp\nimport engine\n"
                    "import tiny_train\n" + textwrap.dedent(body))
    return path


def test_success_prints_summary_last_and_writes_json(prepared_data, tmp_path, capfd):
    code, result = train(prepared_data, tmp_path, TINY_TRAIN, "--budget-tokens", TOKENS,
                         "--run-dir", str(tmp_path / "run"))
    assert code == 0
    out = capfd.readouterr().out.rstrip().splitlines()  # the trainer is a child process: fd level
    block = out[out.index("---"):]
    assert len(block) == 1 + len(summary.SUMMARY_FIELDS)
    parsed = summary.parse_block("\n".join(out))
    assert float(parsed["val_bpb"]) == pytest.approx(result["val_bpb"], abs=1e-6)
    assert result["status"] == "ok" and result["error"] is None
    assert result["num_steps"] == 8 and result["total_tokens_M"] == pytest.approx(4096 / 1e6)
    assert result["budget"] == "tokens 4.1e+03" and result["budget_mode"] == "tokens"
    assert 0 < result["val_bpb"] < 20
    assert result["manifest_fingerprint"] and result["platform"] == "cpu"
    assert result["mfu_percent"] is None and result["peak_vram_mb"] > 0
    assert result["num_devices"] == 1 and result["tokens_per_second"] > 0
    assert Path(result["checkpoint"]).is_dir()
    shown = [line for line in out[:out.index("---")] if line.startswith("step ")]
    assert shown[0].startswith("step     1 | loss ") and shown[-1].startswith("step     8 | loss ")
    figures = json.loads((tmp_path / "run" / "progress.json").read_text())
    assert figures["step"] == 8 and figures["phase"] == "scoring" and figures["fraction"] == 1.0


def test_data_outside_a_cache_root_that_does_not_exist_yet(prepared_data, tmp_path, monkeypatch):
    """--data names a dataset elsewhere and the default cache root was never made: the run
    needs nothing there, and train.py is not blamed for it."""
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tmp_path / "never-prepared"))
    code, result = train(prepared_data, tmp_path, TINY_TRAIN, "--budget-tokens", TOKENS, "--no-checkpoint")
    assert code == 0, result
    assert result["status"] == "ok"


def test_checkpoint_restores_the_same_val_bpb(prepared_data, tmp_path):
    code, result = train(prepared_data, tmp_path, TINY_TRAIN, "--budget-tokens", TOKENS,
                         "--run-dir", str(tmp_path / "run"))
    assert code == 0
    scored = tmp_path / "eval.json"
    assert cli.main(["evaluate", str(TINY_TRAIN), "--checkpoint", result["checkpoint"],
                     "--data", str(prepared_data), "--json", str(scored)]) == 0
    evaluation = json.loads(scored.read_text())
    assert evaluation["split"] == "val" and evaluation["tokens"] == 4096
    assert evaluation["bpb"] == pytest.approx(result["val_bpb"], abs=1e-6)
    assert cli.main(["evaluate", str(TINY_TRAIN), "--checkpoint", result["checkpoint"],
                     "--data", str(prepared_data), "--split", "test", "--json", str(scored)]) == 0
    assert json.loads(scored.read_text())["split"] == "test"


def old_scorer_bpb(checkpoint: str, data_dir) -> float:
    """val_bpb as the separate scorer process computed it before the engine scored in memory:
    the forward restored from the checkpoint, replicated, jitted alone, then the metric's own
    jitted cross-entropy batch by batch (metric.evaluate_bpb)."""
    import jax
    from engine.data import cache
    from engine.scoring import metric
    from engine.training import export, sharding

    manifest = cache.load_manifest(data_dir)
    program = export.load_program(checkpoint)
    mesh = sharding.make_mesh()
    weights = export.restore_weights(checkpoint, program, mesh)
    logits_of = jax.jit(lambda w, inputs: program.call(*w, inputs))
    nats_and_bytes = jax.jit(metric.nats_and_bytes, out_shardings=sharding.replicated(mesh))
    step = lambda w, batch, table: nats_and_bytes(logits_of(w, batch[:, :-1]), batch[:, 1:], table)
    tokens, _ = cache.load_split(data_dir, "val")
    put = lambda rows: sharding.global_batch(sharding.process_share(rows), mesh, len(rows))
    return metric.evaluate_bpb(step, weights, tokens, cache.load_token_bytes(data_dir),
                               eval_tokens=int(manifest["constants"]["eval_tokens"]),
                               sequence_length=int(manifest["constants"]["sequence_length"]),
                               batch_size=int(program.in_avals[-1].shape[0]), pad_id=int(manifest["bos_id"]),
                               put=put).bpb


def test_the_engine_process_scores_to_the_bit_what_the_separate_scorer_scored(prepared_data, tmp_path):
    code, result = train(prepared_data, tmp_path, TINY_TRAIN, "--budget-tokens", TOKENS,
                         "--run-dir", str(tmp_path / "run"))
    assert code == 0 and result["scored_by"] == "engine"
    assert result["val_bpb"] == old_scorer_bpb(result["checkpoint"], prepared_data)
    phases = result["phase_seconds"]
    assert set(phases) >= {"trace", "compile", "train", "checkpoint", "probe", "metric"}
    assert all(seconds >= 0 for seconds in phases.values()) and phases["train"] > 0
    assert result["forward_calls"] > result["probe_passes"] > 0


def test_same_seed_same_val_bpb_other_seed_differs(prepared_data, tmp_path):
    runs = [train(prepared_data, tmp_path, TINY_TRAIN, "--budget-tokens", TOKENS, "--no-checkpoint",
                  "--seed", seed, json_name=f"r{i}.json")[1]["val_bpb"]
            for i, seed in enumerate(["3", "3", "4"])]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_python_train_py_is_the_same_run(prepared_data, tmp_path):
    in_process = train(prepared_data, tmp_path, TINY_TRAIN, "--budget-tokens", TOKENS,
                       "--no-checkpoint")[1]
    out = tmp_path / "script.json"
    done = subprocess.run([sys.executable, str(TINY_TRAIN), "--budget-tokens", TOKENS, "--no-checkpoint",
                           "--data", str(prepared_data), "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().splitlines()[-1].startswith("device:")
    assert json.loads(out.read_text())["val_bpb"] == pytest.approx(in_process["val_bpb"], abs=1e-6)


CONTRACT_BREAKS = {
    "no_experiment": ("X = 1\n", "defines no experiment(ctx)"),
    "wrong_type": ("def experiment(ctx):\n    return {'init': None}\n", "returned dict, not engine.Experiment"),
    "changes_shape": ("""
        def experiment(ctx):
            exp = tiny_train.experiment(ctx)
            def step(state, batch, progress):
                state, metrics = exp.train_step(state, batch, progress)
                params = dict(state["params"], pos_LxD=state["params"]["pos_LxD"][:-1])
                return dict(state, params=params), metrics
            return dataclasses.replace(exp, train_step=step)
        """, "changed state['params']['pos_LxD'] from float32[64, 32] to float32[63, 32]"),
    "no_loss": ("""
        def experiment(ctx):
            exp = tiny_train.experiment(ctx)
            return dataclasses.replace(exp, train_step=lambda s, b, p: (exp.train_step(s, b, p)[0], {}))
        """, 'scalar "loss"'),
    "drops_state": ("""
        def experiment(ctx):
            exp = tiny_train.experiment(ctx)
            return dataclasses.replace(exp, train_step=lambda s, b, p: ({"params": exp.train_step(s, b, p)[0]["params"]}, {"loss": 0.0}))
        """, "changed the state's structure: missing state['opt'][0].count"),
    "bad_logits": ("""
        def experiment(ctx):
            exp = tiny_train.experiment(ctx)
            return dataclasses.replace(exp, logits=lambda s, i: exp.logits(s, i).mean(axis=-1))
        """, "Experiment.logits must return float next-token logits"),
    "bad_batch": ("""
        def experiment(ctx):
            return dataclasses.replace(tiny_train.experiment(ctx), batch_size=0)
        """, "batch_size must be a positive int"),
}


@pytest.mark.parametrize("case", sorted(CONTRACT_BREAKS))
def test_contract_breaks_fail_fast_naming_the_problem(prepared_data, tmp_path, capsys, case):
    body, message = CONTRACT_BREAKS[case]
    code, result = train(prepared_data, tmp_path, variant(tmp_path, body), "--budget-seconds", "60")
    assert code == 2
    assert message in capsys.readouterr().err
    assert result["status"] == "crash" and message in result["error"]


def test_nan_loss_stops_at_once(prepared_data, tmp_path, capsys):
    path = variant(tmp_path, """
        def experiment(ctx):
            exp = tiny_train.experiment(ctx)
            def step(state, batch, progress):
                state, metrics = exp.train_step(state, batch, progress)
                return state, {"loss": jnp.where(progress > 0, jnp.nan, metrics["loss"])}
            return dataclasses.replace(exp, train_step=step)
        """)
    code, result = train(prepared_data, tmp_path, path, "--budget-seconds", "600")
    assert code == 1
    assert "nan: training loss nan at step 2" in capsys.readouterr().err
    assert result["status"] == "nan" and "not a number" in result["error"]


def test_out_of_memory_is_caught(prepared_data, tmp_path, capsys):
    path = variant(tmp_path, """
        def experiment(ctx):
            exp = tiny_train.experiment(ctx)
            def init(rng):  # a terabyte of state
                return {"model": exp.init(rng), "ballast": jnp.ones((2**38,), jnp.float32)}
            def step(state, batch, progress):
                model, metrics = exp.train_step(state["model"], batch, progress)
                return {"model": model, "ballast": state["ballast"]}, metrics
            return dataclasses.replace(exp, init=init, train_step=step,
                                       logits=lambda s, i: exp.logits(s["model"], i))
        """)
    code, result = train(prepared_data, tmp_path, path, "--budget-seconds", "60", "--no-checkpoint")
    assert code == 1
    assert "oom:" in capsys.readouterr().err
    assert result["status"] == "oom"


def test_crash_in_experiment_code_reports_crash(prepared_data, tmp_path, capsys):
    path = variant(tmp_path, """
        def experiment(ctx):
            raise RuntimeError("my model is broken")
        """)
    code, result = train(prepared_data, tmp_path, path, "--budget-seconds", "60")
    assert code == 1
    assert "my model is broken" in capsys.readouterr().err
    assert result["status"] == "crash" and result["error"].startswith("train_variant.py:")
    assert "RuntimeError: my model is broken" in result["error"]
    assert "val_bpb" not in result


def test_missing_data_is_a_user_error_with_a_result(tmp_path, capsys):
    out = tmp_path / "r.json"
    code = cli.main(["train", str(TINY_TRAIN), "--data", str(tmp_path / "nowhere"), "--json", str(out)])
    assert code == 2
    assert "autoresearch prepare" in capsys.readouterr().err
    assert json.loads(out.read_text())["status"] == "crash"


@pytest.mark.parametrize("kind, peak", [
    ("TPU v4", 275e12), ("TPU v5 lite", 197e12), ("TPU v5p", 459e12), ("TPU v6 lite", 918e12),
    ("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12), ("NVIDIA H200", 989e12),
    ("NVIDIA A100-SXM4-40GB", 312e12), ("cpu", None)])
def test_peak_flops_table(kind, peak):
    from engine.training import devices
    assert devices.peak_flops_per_device(kind) == peak


def test_out_of_memory_recognised():
    from engine.training import devices
    assert devices.is_out_of_memory(RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 5 bytes"))
    assert devices.is_out_of_memory(MemoryError())
    assert not devices.is_out_of_memory(ValueError("shapes do not match"))


def test_summary_block_round_trips_and_json_has_no_nan(tmp_path):
    result = {key: None for key, _ in summary.SUMMARY_FIELDS}
    result.update(val_bpb=1.2345678, num_steps=12, budget="time 300 s", device="cpu x1")
    parsed = summary.parse_block("log line\n" + summary.format_block(result))
    assert parsed["val_bpb"] == "1.234568" and parsed["num_steps"] == "12"
    assert parsed["mfu_percent"] == "n/a" and parsed["device"] == "cpu x1"
    small = summary.parse_block(summary.format_block({"total_tokens_M": 0.04096, "num_params_M": 5.767168}))
    assert small["total_tokens_M"] == "0.04096" and small["num_params_M"] == "5.767"  # never "0.0"
    summary.write_json(tmp_path / "r.json", {"status": "nan", "final_loss": float("nan")})
    assert json.loads((tmp_path / "r.json").read_text())["final_loss"] is None
