"""Sources: spec forms, local files (.txt .jsonl .parquet), stdlib, and TFDS offline with its mock data."""
import json
import sysconfig
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine import cli
from engine.data import cache as data
from engine.data import sources
from engine.errors import UserError


@pytest.mark.parametrize("text, expected", [
    ("stdlib", sources.Source("stdlib")),
    ("tfds:tiny_shakespeare", sources.Source("tfds", "tiny_shakespeare")),
    ("tfds:wikipedia/20230601.en", sources.Source("tfds", "wikipedia/20230601.en")),
    ("files:corpus/*.jsonl", sources.Source("files", "corpus/*.jsonl")),
])
def test_parse_source_forms(text, expected):
    assert sources.parse_source(text) == expected
    assert str(expected) == text


@pytest.mark.parametrize("text", ["", "stdlib:x", "hf:wikitext", "tfds:", "files:", "corpus.txt"])
def test_unknown_source_forms_say_what_is_accepted(text):
    with pytest.raises(UserError, match=r"unknown dataset .*use stdlib, tfds:NAME\[/CONFIG\] or files:GLOB"):
        sources.parse_source(text)


def test_txt_files_are_one_document_each_in_path_order(tmp_path):
    (tmp_path / "b.txt").write_text("second\r\nfile  ")
    (tmp_path / "a.txt").write_text("first file\n")
    (tmp_path / "empty.txt").write_text("")
    docs = list(sources.read_documents(sources.parse_source(f"files:{tmp_path}/*.txt")))
    assert docs == ["first file\n", "second\r\nfile  "]


def test_jsonl_reads_the_text_field_or_the_given_key(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [{"id": 1, "text": "one", "title": "t1"},
                                                      {"id": 2, "text": "two", "title": "t2"}]) + "\n\n")
    assert list(sources.read_files(str(path), None)) == ["one", "two"]
    assert list(sources.read_files(str(path), "title")) == ["t1", "t2"]
    with pytest.raises(UserError, match="--text-key 'body' is not a field"):
        list(sources.read_files(str(path), "body"))


def test_jsonl_without_a_text_field_asks_for_text_key(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"question": "q?", "answer": "a."}) + "\n")
    with pytest.raises(UserError, match=r"no text field found .*pass --text-key"):
        list(sources.read_files(str(path), None))


def test_jsonl_bad_line_names_file_and_line(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_text('{"text": "fine"}\n{not json\n')
    with pytest.raises(UserError, match=r"e\.jsonl:2 is not a JSON object"):
        list(sources.read_files(str(path), None))


def test_parquet_reads_the_string_column(tmp_path):
    path = tmp_path / "f.parquet"
    pq.write_table(pa.table({"n": [1, 2, 3], "content": ["α β", "", "γ\n"]}), path)
    assert list(sources.read_files(str(path), None)) == ["α β", "γ\n"]


def test_mixed_glob_and_bad_globs(tmp_path):
    (tmp_path / "a.txt").write_text("alpha")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "beta"}) + "\n")
    pq.write_table(pa.table({"text": ["gamma"]}), tmp_path / "c.parquet")
    assert list(sources.read_files(f"{tmp_path}/*", None)) == ["alpha", "beta", "gamma"]
    with pytest.raises(UserError, match="matches no files"):
        sources.matching_files(f"{tmp_path}/*.csv")
    (tmp_path / "d.csv").write_text("x")
    with pytest.raises(UserError, match=r"unsupported type \.csv"):
        sources.matching_files(f"{tmp_path}/*")


def test_limit_chars_cuts_the_last_document():
    assert list(sources.limit_chars(["abc", "defg", "hi"], 5)) == ["abc", "de"]
    assert list(sources.limit_chars(["abc", "defg"], 3)) == ["abc"]
    assert list(sources.limit_chars(["abc", "defg"], None)) == ["abc", "defg"]


def test_stdlib_is_sorted_and_excludes_site_packages():
    files = sources.stdlib_files()
    root = Path(sysconfig.get_paths()["stdlib"])
    relative = [f.relative_to(root).as_posix() for f in files]
    assert len(files) > 500 and relative == sorted(relative)
    assert not any("site-packages" in r for r in relative)
    assert next(sources.read_stdlib()) == files[0].read_text(encoding="utf-8")


# TFDS: offline, through tfds.testing.mock_data, along the same path a real dataset takes.

tfds = pytest.importorskip("tensorflow_datasets")


def test_tfds_reads_the_text_feature_of_a_mocked_dataset():
    with tfds.testing.mock_data(num_examples=5):
        docs = list(sources.read_documents(sources.parse_source("tfds:imdb_reviews/plain_text")))
    assert len(docs) == 5 and all(isinstance(d, str) and d for d in docs)


def test_tfds_prefers_a_known_text_name_and_honours_text_key():
    with tfds.testing.mock_data(num_examples=3):
        builder = sources.tfds_builder("scientific_papers", None)
        assert {"article", "abstract"} <= set(builder.info.features)
        assert len(list(sources.read_tfds("scientific_papers", None, None))) == 3
        with pytest.raises(UserError, match=r"no text field found in tfds:aeslc .*email_body \(text\)"):
            list(sources.read_tfds("aeslc", None, None))
        assert len(list(sources.read_tfds("aeslc", None, "email_body"))) == 3


def test_tfds_dataset_without_text_asks_for_text_key():
    with tfds.testing.mock_data(num_examples=2), pytest.raises(UserError, match="no text field found in tfds:mnist"):
        list(sources.read_tfds("mnist", None, None))


def test_unknown_tfds_name_is_a_clear_error():
    with pytest.raises(UserError, match="unknown TFDS dataset 'no_such_dataset_xyz'"):
        list(sources.read_tfds("no_such_dataset_xyz", None, None))


def test_prepare_from_a_mocked_tfds_dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tmp_path))
    with tfds.testing.mock_data(num_examples=3000):
        code = cli.main(["prepare", "--dataset", "tfds:imdb_reviews/plain_text", "--vocab-size", "300",
                         "--seq-len", "16", "--eval-tokens", "256", "--data-dir", str(tmp_path / "tfds")])
    assert code == 0
    cache = tmp_path / (tmp_path / "LATEST").read_text().strip()
    manifest = data.load_manifest(cache)
    assert manifest["source"] == "tfds:imdb_reviews/plain_text"
    assert manifest["spec"]["data_dir"] == str(tmp_path / "tfds")
    assert sum(s["documents"] for s in manifest["splits"].values()) == 3000
    assert all(manifest["splits"][s]["tokens"] > 256 for s in ("val", "test"))
