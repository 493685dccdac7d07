"""Guards: editable files only, train.py parses, fixed files fingerprinted."""
import os

import pytest

from engine.loop import guards as guard


def test_only_editable_files_and_they_parse(tmp_path):
    (tmp_path / "train.py").write_text("X = 1\n")
    assert guard.check_proposal(["train.py"], ["train.py"], tmp_path).ok
    verdict = guard.check_proposal(["train.py", "engine/scoring/metric.py"], ["train.py"], tmp_path)
    assert not verdict.ok and "engine/scoring/metric.py" in verdict.reason
    assert guard.check_proposal(["configs/a.py"], ["train.py", "configs/*.py"], tmp_path).ok
    (tmp_path / "train.py").write_text("def broken(:\n")
    verdict = guard.check_proposal(["train.py"], ["train.py"], tmp_path)
    assert not verdict.ok and "does not parse" in verdict.reason and "line 1" in verdict.reason
    (tmp_path / "train.py").unlink()
    assert "deleted" in guard.check_proposal(["train.py"], ["train.py"], tmp_path).reason


def make_fixed(tmp_path):
    root, data = tmp_path / "repo", tmp_path / "data"
    (root / "engine" / "__pycache__").mkdir(parents=True)
    (root / "model").mkdir()
    data.mkdir()
    (root / "prepare.py").write_text("P = 1\n")
    (root / "engine" / "metric.py").write_text("def bpb(): ...\n")
    (root / "engine" / "__pycache__" / "metric.cpython-311.pyc").write_bytes(b"x")
    (root / "model" / "attention.py").write_text("A = 1\n")
    (data / "manifest.json").write_text("{}")
    (data / "val.tokens.npy").write_bytes(b"\0" * 100)
    (root / "train.py").write_text("T = 1\n")
    return root, data


def test_fixed_files_changes_are_caught(tmp_path):
    root, data = make_fixed(tmp_path)
    fixed = guard.FixedFiles(root, data)
    fixed.check("now")
    (root / "train.py").write_text("T = 2\n")  # editable: not fixed
    (root / "engine" / "__pycache__" / "other.pyc").write_bytes(b"y")  # bytecode: not fixed
    os.utime(root / "prepare.py")  # touched, same bytes
    assert fixed.differences() == []
    (root / "engine" / "metric.py").write_text("def bpb(): return 0\n")
    (data / "val.tokens.npy").write_bytes(b"\1" * 100)
    (root / "model" / "new.py").write_text("")
    changes = fixed.differences()
    assert "engine/metric.py modified" in changes and "model/new.py added" in changes
    assert any("val.tokens.npy modified" in c for c in changes)
    with pytest.raises(guard.FixedFilesChanged, match="engine/metric.py modified"):
        fixed.check("before a run")


def test_content_restored_with_old_mtime_still_checked(tmp_path):
    root, data = make_fixed(tmp_path)
    fixed = guard.FixedFiles(root, data)
    path = root / "prepare.py"
    stat = path.stat()
    path.write_text("P = 9\n")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # hide the edit from mtime
    assert fixed.differences() == ["prepare.py modified"]


def test_editable_data_files_must_parse(tmp_path):
    from engine.loop.guards import check_proposal
    (tmp_path / "r.yaml").write_text("a: [1, 2\n")
    (tmp_path / "c.json").write_text('{"a": 1,}')
    (tmp_path / "s.toml").write_text("k = \n")
    (tmp_path / "ok.yaml").write_text("a: 1\n")
    (tmp_path / "t.sql").write_text("anything goes;\n")
    for name in ("r.yaml", "c.json", "s.toml"):
        verdict = check_proposal([name], ["*"], tmp_path)
        assert not verdict.ok and verdict.reason.startswith(f"{name} does not parse")
    assert check_proposal(["ok.yaml", "t.sql"], ["*"], tmp_path).ok


def test_a_given_fixed_set_notices_edits_and_removals(tmp_path):
    from engine.loop.guards import FixedFiles
    (tmp_path / "score.py").write_text("print('x: 1')\n")
    (tmp_path / "data.txt").write_text("fixed\n")
    fixed = FixedFiles(tmp_path, None, files=[tmp_path / "score.py", tmp_path / "data.txt"])
    (tmp_path / "new.txt").write_text("untracked scratch is not fixed\n")
    assert fixed.differences() == []
    (tmp_path / "score.py").write_text("print('x: 0')\n")
    (tmp_path / "data.txt").unlink()
    assert fixed.differences() == ["data.txt removed", "score.py modified"]
