"""Shared fixtures. `prepared_data` builds one tiny real cache per test session."""
from __future__ import annotations

from pathlib import Path

import pytest

from engine import cli, paths

# A tiny but real cache: the first few MB of the stdlib corpus through the real prepare.
TINY_PREPARE = ["prepare", "--dataset", "stdlib", "--max-chars", "3000000", "--vocab-size", "512",
                "--seq-len", "64", "--eval-tokens", "4096"]


@pytest.fixture(scope="session")
def prepared_data(tmp_path_factory) -> Path:
    """Path of a prepared cache (vocab 512, sequence_length 64, eval_tokens 4096); for the rest
    of the session AUTORESEARCH_CACHE points at its temporary cache root, and LATEST names it."""
    root = tmp_path_factory.mktemp("autoresearch-cache")
    patch = pytest.MonkeyPatch()
    patch.setenv("AUTORESEARCH_CACHE", str(root))
    try:
        assert cli.main(TINY_PREPARE) == 0
        yield paths.resolve_data_dir(None)
    finally:
        patch.undo()
