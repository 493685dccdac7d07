"""`autoresearch verify`: a fresh scorer agrees with an honest run and catches a doctored claim."""
import json
from pathlib import Path

from engine import cli

TINY_TRAIN = Path(__file__).parent / "fixtures" / "tiny_train.py"


def test_verify_agrees_with_the_run_and_refuses_a_doctored_claim(prepared_data, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert cli.main(["train", str(TINY_TRAIN), "--data", str(prepared_data), "--budget-tokens", "2048",
                     "--run-dir", str(run_dir), "--json", str(run_dir / "result.json")]) == 0
    capsys.readouterr()
    assert cli.main(["verify", str(run_dir), "--json", str(tmp_path / "v.json")]) == 0  # finds the cache
    assert "verified: val_bpb" in capsys.readouterr().out
    report = json.loads((tmp_path / "v.json").read_text())
    assert report["agree"] and report["fresh_val_bpb"] == report["stored_val_bpb"]
    stored = json.loads((run_dir / "result.json").read_text())
    assert isinstance(stored["probe_seed"], int) and report["probe_seed"] == stored["probe_seed"]  # the same probe

    claim = json.loads((run_dir / "result.json").read_text())
    claim["val_bpb"] -= 0.05
    (run_dir / "result.json").write_text(json.dumps(claim))
    assert cli.main(["verify", str(run_dir), "--data", str(prepared_data)]) == 1
    assert "not verified: a fresh scorer gives val_bpb" in capsys.readouterr().out


def test_verify_without_a_result_is_a_user_error(tmp_path, capsys):
    assert cli.main(["verify", str(tmp_path)]) == 2
    assert "holds no readable result.json" in capsys.readouterr().err
