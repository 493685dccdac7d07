"""The data cache is verified against its manifest's sha256 values, not trusted."""
import shutil

import numpy as np
import pytest

from engine.data import cache as data
from engine.data import checksums
from engine.errors import UserError


@pytest.fixture
def cache_copy(prepared_data, tmp_path):
    copy = tmp_path / prepared_data.name
    shutil.copytree(prepared_data, copy)
    return copy


def test_a_clean_cache_passes_and_its_fingerprint_is_its_content(cache_copy):
    manifest = checksums.verify(cache_copy)
    facts = manifest["splits"]
    assert manifest["fingerprint"] == checksums.content_fingerprint(
        manifest["format"], manifest["spec"], manifest["constants"], manifest["tokenizer_sha256"],
        manifest["token_bytes_sha256"], {name: f["sha256"] for name, f in facts.items()}, manifest["split_key_id"])
    assert all(checksums.split_sha256(cache_copy, s) == facts[s]["sha256"] for s in data.SPLITS)


def _shuffle_val(d):
    path = data.tokens_path(d, "val")
    tokens = np.load(path)
    np.save(path, np.random.default_rng(0).permutation(tokens))


def _double_token_bytes(d):
    path = d / data.TOKEN_BYTES
    np.save(path, np.load(path) * 2)


def _truncate_val(d):
    path = data.tokens_path(d, "val")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _forge_fingerprint(d):
    import json
    manifest = json.loads((d / data.MANIFEST).read_text())
    manifest["fingerprint"] = "0" * 64
    (d / data.MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize("damage, says", [
    (_shuffle_val, "the val split does not match its sha256"),
    (_double_token_bytes, "token_bytes.npy does not match its sha256"),
    (_truncate_val, "the val split cannot be read"),
    (lambda d: data.docs_path(d, "val").unlink(), "val.docs.npy is missing"),
    (_forge_fingerprint, "fingerprint does not match"),
])
def test_a_damaged_cache_says_prepare_again(cache_copy, damage, says):
    damage(cache_copy)
    with pytest.raises(UserError, match="Run `autoresearch prepare` again") as caught:
        checksums.verify(cache_copy, splits=("val",))
    assert says in str(caught.value)


def test_the_scorer_verifies_what_it_reads():
    """score() checks the cache before reading it (one call; the scorer is JAX-side)."""
    import inspect
    from engine.scoring import scorer
    assert "checksums.verify(data_dir, splits=(split,))" in inspect.getsource(scorer.score)


def test_prepare_rebuilds_a_damaged_cache(prepared_data, tmp_path, monkeypatch, capsys):
    from engine import cli
    from conftest import TINY_PREPARE
    root = tmp_path / "cache-root"
    shutil.copytree(prepared_data.parent, root)
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(root))
    _double_token_bytes(root / prepared_data.name)
    assert cli.main(TINY_PREPARE) == 0
    assert "preparing it again" in capsys.readouterr().out
    checksums.verify(root / prepared_data.name)


def test_caches_split_with_different_keys_have_different_fingerprints(cache_copy):
    """The key's id is part of the fingerprint: results on caches split with other keys never compare."""
    manifest = checksums.verify(cache_copy)
    facts = (manifest["format"], manifest["spec"], manifest["constants"], manifest["tokenizer_sha256"],
             manifest["token_bytes_sha256"], {name: f["sha256"] for name, f in manifest["splits"].items()})
    assert checksums.content_fingerprint(*facts, "0" * 32) != manifest["fingerprint"]
    assert checksums.content_fingerprint(*facts, None) != manifest["fingerprint"]
