"""prepare: the stdlib cache, idempotence, a changed spec, atomic writes, and each user error."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_PREPARE
from engine import cli, paths
from engine.data import cache as data
from engine import files as hashing
from engine.data import prepare
from engine.data import split_key
from engine.data import splits
from engine.errors import UserError
from engine.data.tokenizer import Tokenizer

REPO = Path(__file__).resolve().parents[1]
WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho "
         "sigma tau upsilon phi chi psi omega the of and to in is it for on with as").split()


def write_corpus(directory: Path, documents: int = 240, seed: int = 0) -> str:
    """A .jsonl corpus of small word-salad documents; returns its files: spec."""
    rng = np.random.default_rng(seed)
    lines = [json.dumps({"text": " ".join(rng.choice(WORDS, size=int(rng.integers(30, 80)))) + ".\n"})
             for _ in range(documents)]
    (directory / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    return f"files:{directory}/corpus.jsonl"


def run_prepare(dataset: str, *extra: str) -> int:
    return cli.main(["prepare", "--dataset", dataset, "--vocab-size", "300", "--seq-len", "8",
                     "--eval-tokens", "64", *extra])


def latest(root: Path) -> Path:
    return root / (root / "LATEST").read_text().strip()


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(root))
    return root


# the stdlib cache --------------------------------------------------------------

def test_stdlib_cache_matches_its_manifest(prepared_data):
    manifest = data.load_manifest(prepared_data)
    assert manifest["format"] == 1 and manifest["source"] == "stdlib"
    assert manifest["name"] == prepared_data.name and prepared_data.name.startswith("stdlib-v512-")
    assert manifest["vocab_size"] == 512 and manifest["bos_id"] == 1
    assert manifest["constants"]["sequence_length"] == 64 and manifest["constants"]["eval_tokens"] == 4096
    assert len(manifest["fingerprint"]) == 64 and manifest["spec"]["max_chars"] == 3_000_000
    token_bytes = data.load_token_bytes(prepared_data)
    assert len(token_bytes) == 512
    assert hashing.sha256_file(prepared_data / "tokenizer.model") == manifest["tokenizer_sha256"]
    for split in data.SPLITS:
        facts = manifest["splits"][split]
        tokens, doc_starts = data.load_split(prepared_data, split)
        assert tokens.dtype == np.uint16
        assert len(tokens) == facts["tokens"] and len(doc_starts) == facts["documents"] + 1
        assert (tokens[doc_starts[:-1]] == 1).all() and (tokens == 1).sum() == facts["documents"]
        assert int(token_bytes[tokens].sum()) == facts["bytes"]
        assert facts["tokens"] >= 4097 or split == "train"


def test_held_out_documents_are_the_ones_their_hash_picks(prepared_data):
    key = split_key.load(prepared_data.parent)
    tokenizer = Tokenizer(data.tokenizer_path(prepared_data))
    for split in ("val", "test"):
        tokens, doc_starts = data.load_split(prepared_data, split)
        for a, b in zip(doc_starts[:-1], doc_starts[1:]):
            assert splits.split_of(tokenizer.decode(tokens[a + 1:b]), key) == split


def test_second_stdlib_prepare_reuses_the_cache(prepared_data, capsys):
    created = data.load_manifest(prepared_data)["created"]
    started = time.monotonic()
    assert cli.main(TINY_PREPARE) == 0
    assert time.monotonic() - started < 10
    assert "reusing" in capsys.readouterr().out
    assert data.load_manifest(prepared_data)["created"] == created
    assert paths.resolve_data_dir(None) == prepared_data


# idempotence and a changed spec --------------------------------------------------

def test_same_spec_reuses_changed_spec_prepares_anew(cache, tmp_path, capsys):
    dataset = write_corpus(tmp_path)
    assert run_prepare(dataset) == 0
    first = latest(cache)
    assert run_prepare(dataset) == 0 and "reusing" in capsys.readouterr().out
    assert latest(cache) == first
    assert run_prepare(dataset, "--vocab-size", "320") == 0
    assert latest(cache).name.startswith("files-") and "-v320-" in latest(cache).name
    assert run_prepare(dataset, "--eval-tokens", "32") == 0
    assert data.load_manifest(latest(cache))["constants"]["eval_tokens"] == 32
    names = {p.name for p in cache.iterdir() if p.is_dir()}
    assert len(names) == 3 and first.name in names


def test_changed_files_prepare_anew_and_force_rebuilds(cache, tmp_path):
    dataset = write_corpus(tmp_path, seed=1)
    assert run_prepare(dataset) == 0
    first = latest(cache)
    write_corpus(tmp_path, documents=260, seed=2)
    assert run_prepare(dataset) == 0
    assert latest(cache) != first
    created = data.load_manifest(latest(cache))["created"]
    time.sleep(1.1)
    assert run_prepare(dataset, "--force") == 0
    assert data.load_manifest(latest(cache))["created"] != created


def test_lone_surrogates_from_json_escapes_are_replaced(cache, tmp_path):
    dataset = write_corpus(tmp_path)
    with open(tmp_path / "corpus.jsonl", "a") as corpus:
        corpus.write('{"text": "broken \\ud800 escape"}\n')
    assert run_prepare(dataset) == 0
    assert prepare.encodable("a\ud800b") == "a?b"


def test_eval_tokens_are_rounded_to_whole_rows(cache, tmp_path):
    assert run_prepare(write_corpus(tmp_path), "--eval-tokens", "70") == 0
    assert data.load_manifest(latest(cache))["constants"]["eval_tokens"] == 64


# atomic writes ---------------------------------------------------------------------

def test_a_killed_prepare_leaves_no_cache_that_looks_complete(cache, tmp_path):
    env = {**os.environ, "AUTORESEARCH_CACHE": str(cache)}
    process = subprocess.Popen([sys.executable, str(REPO / "prepare.py"), *TINY_PREPARE[1:]], cwd=tmp_path, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not any(cache.glob(".tmp-*/train.documents")) and time.monotonic() < deadline:
            assert process.poll() is None, "prepare finished before it could be killed"
            time.sleep(0.01)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert any(cache.glob(".tmp-*")), "the kill should have left a work directory behind"
    assert not [p for p in cache.iterdir() if not p.name.startswith(".") and p.name != split_key.KEY_FILE]
    assert not list(cache.glob("**/manifest.json"))
    with pytest.raises(UserError, match="run `autoresearch prepare` first"):
        paths.resolve_data_dir(None)
    name_part = next(cache.glob(".tmp-*")).name
    # the next prepare of the same dataset clears what the killed one left
    assert cli.main(TINY_PREPARE) == 0
    assert not (cache / name_part).exists()


def test_a_failed_prepare_removes_its_work(cache, tmp_path, monkeypatch):
    def fail(*args):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(prepare, "check_held_out_sizes", fail)
    with pytest.raises(RuntimeError, match="disk on fire"):
        run_prepare(write_corpus(tmp_path))
    assert [p.name for p in cache.iterdir()] == [split_key.KEY_FILE]  # the key stays: it names no data


# errors a user can act on ------------------------------------------------------

def user_error(capsys, argv: list[str]) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after any progress lines
    assert err.startswith("autoresearch prepare: error: ")
    return err


def test_unknown_source_form(cache, capsys):
    assert "use stdlib, tfds:NAME[/CONFIG] or files:GLOB" in user_error(capsys, ["prepare", "--dataset", "wiki"])


def test_unknown_tfds_name(cache, capsys):
    assert "unknown TFDS dataset 'no_such_dataset_xyz'" in user_error(
        capsys, ["prepare", "--dataset", "tfds:no_such_dataset_xyz"])


def test_no_text_field(cache, tmp_path, capsys):
    (tmp_path / "q.jsonl").write_text(json.dumps({"question": "why?", "answer": "because"}) + "\n")
    err = user_error(capsys, ["prepare", "--dataset", f"files:{tmp_path}/q.jsonl"])
    assert "no text field found" in err and "--text-key" in err


def test_corpus_too_small_for_the_vocabulary(cache, tmp_path, capsys):
    err = user_error(capsys, ["prepare", "--dataset", write_corpus(tmp_path), "--vocab-size", "6000",
                              "--seq-len", "8", "--eval-tokens", "64"])
    assert "too small for --vocab-size 6000" in err and "lower --vocab-size" in err


def test_vocabulary_below_byte_fallback(cache, capsys):
    assert "at least 259" in user_error(capsys, ["prepare", "--vocab-size", "100"])


def test_held_out_splits_too_small_for_eval_tokens(cache, tmp_path, capsys):
    err = user_error(capsys, ["prepare", "--dataset", write_corpus(tmp_path), "--vocab-size", "300",
                              "--seq-len", "8", "--eval-tokens", "400000"])
    assert "split" in err and "lower --eval-tokens" in err and "add data" in err


def test_held_out_token_count_is_checked_after_tokenizing(cache, tmp_path, capsys):
    dataset = write_corpus(tmp_path)
    texts = [json.loads(line)["text"] for line in (tmp_path / "corpus.jsonl").read_text().splitlines()]
    cache.mkdir()
    split_key.write(cache, key := bytes(range(32)))
    smallest = min(sum(len(t.encode()) + 1 for t in texts if splits.split_of(t, key) == s) for s in ("val", "test"))
    eval_tokens = (smallest - 1) // 8 * 8  # passes the bytes bound; BPE makes far fewer tokens than bytes
    err = user_error(capsys, ["prepare", "--dataset", dataset, "--vocab-size", "300", "--seq-len", "8",
                              "--eval-tokens", str(eval_tokens)])
    assert f"--eval-tokens {eval_tokens} + 1" in err and "holds at most" not in err


def test_eval_tokens_below_one_row(cache, capsys):
    assert "less than one row" in user_error(capsys, ["prepare", "--seq-len", "512", "--eval-tokens", "100"])


def test_unwritable_cache(tmp_path, monkeypatch, capsys):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tmp_path / "a-file" / "cache"))
    err = user_error(capsys, ["prepare", "--max-chars", "1000"])
    assert "cannot write the cache" in err and "AUTORESEARCH_CACHE" in err


# the split key -------------------------------------------------------------------------------

def test_the_split_key_is_drawn_once_kept_private_and_named_only_by_its_id(cache, tmp_path):
    dataset = write_corpus(tmp_path)
    assert run_prepare(dataset) == 0
    key_file = cache / split_key.KEY_FILE
    key = split_key.load(cache)
    assert len(key) == split_key.KEY_BYTES and key_file.stat().st_mode & 0o777 == 0o600
    manifest_text = (latest(cache) / data.MANIFEST).read_text()
    assert key.hex() not in manifest_text
    assert json.loads(manifest_text)["split_key_id"] == split_key.key_id(key)
    assert run_prepare(dataset, "--vocab-size", "320") == 0
    assert split_key.load(cache) == key  # every dataset of this cache splits with the same key


def test_another_key_splits_differently_and_a_copied_key_the_same(cache, tmp_path, monkeypatch):
    dataset = write_corpus(tmp_path)
    assert run_prepare(dataset) == 0
    first = data.load_manifest(latest(cache))
    other = tmp_path / "other-cache"
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(other))
    assert run_prepare(dataset) == 0
    drawn = data.load_manifest(latest(other))
    assert drawn["split_key_id"] != first["split_key_id"] and drawn["fingerprint"] != first["fingerprint"]
    assert drawn["splits"]["val"]["sha256"] != first["splits"]["val"]["sha256"]
    assert run_prepare(dataset, "--split-key", str(cache / split_key.KEY_FILE)) == 0
    copied = data.load_manifest(latest(other))
    assert copied["fingerprint"] == first["fingerprint"]


def test_a_garbled_split_key_file_is_a_user_error(cache, tmp_path, capsys):
    (tmp_path / "key").write_text("not a key\n")
    err = user_error(capsys, ["prepare", "--split-key", str(tmp_path / "key")])
    assert "is not a split key" in err and "64 hex digits" in err
    err = user_error(capsys, ["prepare", "--split-key", str(tmp_path / "missing")])
    assert "cannot read it" in err
