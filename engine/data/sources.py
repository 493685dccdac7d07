"""Text sources for prepare: each yields documents (str), in a fixed order.

    stdlib               the running Python's standard-library .py files (offline default)
    tfds:NAME[/CONFIG]   any TFDS dataset, read through tfds.data_source (ArrayRecord)
    files:GLOB           local .txt (one document per file), .jsonl and .parquet (one per record)
"""
from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import platform
import sysconfig
from pathlib import Path
from typing import Iterable, Iterator

from engine.errors import UserError

FORMS = "stdlib, tfds:NAME[/CONFIG] or files:GLOB"
# Tried in this order when a record has several text fields and no --text-key.
PREFERRED_TEXT_KEYS = ("text", "content", "document", "article", "body", "story", "sentence")
FILE_SUFFIXES = (".txt", ".jsonl", ".parquet")


@dataclasses.dataclass(frozen=True)
class Source:
    kind: str  # "stdlib", "tfds" or "files"
    target: str = ""  # dataset name[/config] or glob

    def __str__(self) -> str:
        return self.kind if self.kind == "stdlib" else f"{self.kind}:{self.target}"


def parse_source(text: str) -> Source:
    kind, sep, target = text.partition(":")
    if text == "stdlib":
        return Source("stdlib")
    if sep and kind in ("tfds", "files") and target.strip():
        return Source(kind, target.strip())
    raise UserError(f"unknown dataset {text!r}: use {FORMS}")


def read_documents(source: Source, data_dir: str | None = None, text_key: str | None = None) -> Iterator[str]:
    if source.kind == "stdlib":
        return read_stdlib()
    if source.kind == "tfds":
        return read_tfds(source.target, data_dir, text_key)
    return read_files(source.target, text_key)


def limit_chars(documents: Iterable[str], max_chars: int | None) -> Iterator[str]:
    """Documents until max_chars characters in all; the last one is cut to fit."""
    total = 0
    for doc in documents:
        if max_chars is not None and total + len(doc) >= max_chars:
            if max_chars > total:
                yield doc[:max_chars - total]
            return
        total += len(doc)
        yield doc


def source_version(source: Source, data_dir: str | None = None) -> str:
    """What identifies the data behind a spec, so a changed source prepares anew."""
    if source.kind == "stdlib":
        return f"python-{platform.python_version()}"
    if source.kind == "files":
        digest = hashlib.sha256()
        for path in matching_files(source.target):
            stat = path.stat()
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return "files-" + digest.hexdigest()[:16]
    return f"tfds-{tfds_builder(source.target, data_dir).info.version}"


# stdlib ---------------------------------------------------------------------

def stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    excluded = {"site-packages", "dist-packages", "__pycache__"}
    return sorted((p for p in root.rglob("*.py") if not excluded.intersection(p.relative_to(root).parts)),
                  key=lambda p: p.relative_to(root).as_posix())


def read_stdlib() -> Iterator[str]:
    for path in stdlib_files():
        try:
            text = path.read_bytes().decode("utf-8")
        except (UnicodeDecodeError, OSError):  # a few test files are deliberately not UTF-8
            continue
        if text:
            yield text


# files ----------------------------------------------------------------------

def matching_files(pattern: str) -> list[Path]:
    paths = sorted(Path(p) for p in glob.glob(os.path.expanduser(pattern), recursive=True) if os.path.isfile(p))
    if not paths:
        raise UserError(f"files:{pattern} matches no files: check the path (quote the glob so the shell "
                        "leaves it alone)")
    unsupported = sorted({p.suffix or p.name for p in paths if p.suffix not in FILE_SUFFIXES})
    if unsupported:
        raise UserError(f"files:{pattern} matches files of unsupported type {', '.join(unsupported)}: "
                        f"use {', '.join(FILE_SUFFIXES)} (narrow the glob, e.g. 'corpus/*.jsonl')")
    return paths


def read_files(pattern: str, text_key: str | None) -> Iterator[str]:
    readers = {".txt": read_txt, ".jsonl": read_jsonl, ".parquet": read_parquet}
    for path in matching_files(pattern):
        yield from readers[path.suffix](path, text_key)


def read_txt(path: Path, text_key: str | None) -> Iterator[str]:
    text = path.read_bytes().decode("utf-8", errors="replace")
    if text:
        yield text


def read_jsonl(path: Path, text_key: str | None) -> Iterator[str]:
    key = None
    with open(path, encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise UserError(f"{path}:{number} is not a JSON object ({error.msg}): fix or remove the line") from None
            if not isinstance(record, dict):
                raise UserError(f"{path}:{number} is {type(record).__name__}, not a JSON object with a text field")
            if key is None:
                key = find_text_key({k: isinstance(v, str) for k, v in record.items()}, text_key, str(path))
            value = record.get(key)
            if not isinstance(value, str):
                raise UserError(f"{path}:{number} has no string field {key!r}: every line needs one")
            if value:
                yield value


def read_parquet(path: Path, text_key: str | None) -> Iterator[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.ParquetFile(path)
    schema = table.schema_arrow
    fields = {f.name: pa.types.is_string(f.type) or pa.types.is_large_string(f.type) for f in schema}
    key = find_text_key(fields, text_key, str(path))
    for batch in table.iter_batches(columns=[key], batch_size=4096):
        for value in batch.column(0).to_pylist():
            if value:
                yield value


# tfds -----------------------------------------------------------------------

def tfds_builder(name: str, data_dir: str | None):
    import tensorflow_datasets as tfds

    try:
        return tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise UserError(f"unknown TFDS dataset {name!r}: check the name against "
                        "https://www.tensorflow.org/datasets/catalog (community datasets: huggingface:NAME)") from None
    except ValueError as error:
        first_line = str(error).splitlines()[0]
        raise UserError(f"TFDS cannot build {name!r}: {first_line}") from None


def read_tfds(name: str, data_dir: str | None, text_key: str | None) -> Iterator[str]:
    import tensorflow_datasets as tfds

    builder = tfds_builder(name, data_dir)
    features = builder.info.features
    fields = {k: type(v).__name__ == "Text" for k, v in features.items()} if hasattr(features, "items") else {}
    key = find_text_key(fields, text_key, f"tfds:{name}")
    for split in ordered_splits(list(builder.info.splits)):
        try:
            records = tfds.data_source(name, split=split, data_dir=data_dir)
        except ImportError as error:
            raise UserError(f"building tfds:{name} needs {error.name or 'a missing module'}: pip install it, or "
                            "build the dataset once with `tfds build --file_format=array_record`") from None
        for i in range(len(records)):
            text = as_text(records[i][key])
            if text:
                yield text


def ordered_splits(splits: list[str]) -> list[str]:
    """train first (the bulk of the text), then the rest by name; datasets that list none read train."""
    names = sorted(str(s) for s in splits)
    return sorted(names, key=lambda s: s != "train") or ["train"]


def as_text(value) -> str:
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


# text field -----------------------------------------------------------------

def find_text_key(fields: dict[str, bool], given: str | None, where: str) -> str:
    """The record field holding the text: given, a preferred name, or the only string field."""
    described = ", ".join(f"{k} ({'text' if is_text else 'not text'})" for k, is_text in fields.items()) or "none"
    if given is not None:
        if given not in fields:
            raise UserError(f"--text-key {given!r} is not a field of {where}; its fields: {described}")
        return given
    texts = [k for k, is_text in fields.items() if is_text]
    for key in PREFERRED_TEXT_KEYS:
        if key in texts:
            return key
    if len(texts) == 1:
        return texts[0]
    raise UserError(f"no text field found in {where} (fields: {described}): pass --text-key NAME")
