"""Shared fixtures. `prepared_data` builds one tiny real cache per test session."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from engine import cli, paths
from loop_helpers import FAKE_TRAIN, make_cache, make_repo

# A tiny but real cache: the first few MB of the stdlib corpus through the real prepare.
TINY_PREPARE = ["prepare", "--dataset", "stdlib", "--max-chars", "3000000", "--vocab-size", "512",
                "--seq-len", "64", "--eval-tokens", "4096"]

# A fixed split key: the same documents are val and test in every session, so a test that
# asserts what a change does to val_bpb (kept or not) asserts the same thing on every run. A
# user's cache draws its own key.
FIXED_SPLIT_KEY = "5eed" * 16


@pytest.fixture(scope="session")
def prepared_data(tmp_path_factory) -> Path:
    """Path of a prepared cache (vocab 512, sequence_length 64, eval_tokens 4096); for the rest
    of the session AUTORESEARCH_CACHE points at its temporary cache root, and LATEST names it."""
    root = tmp_path_factory.mktemp("autoresearch-cache")
    key = tmp_path_factory.mktemp("split-key") / "split.key"
    key.write_text(FIXED_SPLIT_KEY)
    patch = pytest.MonkeyPatch()
    patch.setenv("AUTORESEARCH_CACHE", str(root))
    try:
        assert cli.main([*TINY_PREPARE, "--split-key", str(key)]) == 0
        yield paths.resolve_data_dir(None)
    finally:
        patch.undo()


@pytest.fixture
def loop_env(tmp_path, monkeypatch):
    """A scratch repo as cwd, a fake data cache, and the stand-in train command."""
    root = make_repo(tmp_path)
    cache = make_cache(tmp_path)
    fake = tmp_path / "fake_train.py"
    fake.write_text(FAKE_TRAIN)
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(cache))
    monkeypatch.setenv("AUTORESEARCH_TRAIN_COMMAND", f"{sys.executable} {fake}")
    monkeypatch.chdir(root)
    return root
