"""A full disk is an outage, not the candidate's fault: a real loop on a small tmpfs whose disk
fills during an experiment stops with one line (what filled up, how much is free, how to resume),
records no crash, prints no traceback, and resumes after space is freed losing and doubling nothing."""
import os
import subprocess
import sys
import textwrap

import pytest

from loop_helpers import FAKE_TRAIN, ledger_rows, make_cache, make_repo

FILL_THEN_TRAIN = textwrap.dedent('''
    """Fills the disk when the marker exists and train.py is a candidate, then runs the stand-in."""
    import os, sys
    marker, filler, fake = sys.argv[1:4]
    train_py = open(sys.argv[4]).read()
    if os.path.exists(marker) and "LEARNING_RATE = 0.04" not in train_py:
        try:
            with open(filler, "ab") as handle:
                while True:
                    handle.write(b"\\0" * 65536)
                    handle.flush()
        except OSError as error:
            sys.exit(f"train: {error}")
    os.execv(sys.executable, [sys.executable, fake, *sys.argv[4:]])
''')


@pytest.fixture
def small_disk(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(disk)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()})")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_a_disk_filled_during_an_experiment_stops_the_loop_and_resume_loses_nothing(small_disk, tmp_path):
    root = make_repo(small_disk)
    cache = make_cache(tmp_path)
    (tmp_path / "fake_train.py").write_text(FAKE_TRAIN)
    (tmp_path / "fill_then_train.py").write_text(FILL_THEN_TRAIN)
    marker, filler = tmp_path / "fill-once", small_disk / "filler.bin"
    marker.write_text("1")
    env = {**os.environ, "AUTORESEARCH_CACHE": str(cache),
           "AUTORESEARCH_TRAIN_COMMAND": f"{sys.executable} {tmp_path / 'fill_then_train.py'} {marker} {filler} "
                                         f"{tmp_path / 'fake_train.py'}"}
    loop = [sys.executable, "-m", "engine.cli", "loop", "--tag", "d", "--agent", "offline", "--max-experiments", "5"]
    first = subprocess.run(loop, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 2, first.stderr
    assert "Traceback" not in first.stderr, first.stderr
    errors = [line for line in first.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and f"the disk holding {root / 'runs'}" in errors[0], first.stderr
    assert " is full (" in errors[0] and "free of" in errors[0] and "run the same command again" in errors[0]
    rows = ledger_rows(root, "d")
    assert [r["role"] for r in rows] == ["baseline", "baseline"]  # the candidate that met it: no row
    assert all(r["status"] != "crash" for r in rows)

    filler.unlink()
    marker.unlink()
    second = subprocess.run(loop, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    rows = ledger_rows(root, "d")
    assert [r["experiment"] for r in rows] == list(range(5))
    assert all(r["status"] != "crash" for r in rows)
    candidates = [r["commit"] for r in rows if r["role"] == "candidate"]
    assert len(candidates) == len(set(candidates))
    assert rows[2]["commit"] == [r for r in rows if r["role"] != "baseline"][0]["commit"]
