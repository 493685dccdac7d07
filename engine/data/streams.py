"""What prepare streams through on disk, so no split is ever held in memory whole:
a split's documents spooled as UTF-8, and its flat token array written as .npy."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Iterator

import numpy as np


class DocumentStore:
    """One split's documents spooled to disk as UTF-8, read back in batches."""

    def __init__(self, path: Path):
        self.path = path
        self._file = open(path, "wb")
        self.offsets = [0]
        self.chars = 0
        self.sample_keys: list[float] = []  # per document, in [0, 1): picks the tokenizer's sample

    def add(self, text: str, sample_key: float) -> None:
        encoded = text.encode("utf-8")
        self._file.write(encoded)
        self.offsets.append(self.offsets[-1] + len(encoded))
        self.chars += len(text)
        self.sample_keys.append(sample_key)

    @property
    def documents(self) -> int:
        return len(self.offsets) - 1

    @property
    def bytes(self) -> int:
        return self.offsets[-1]

    def close(self) -> None:
        self._file.close()

    def batches(self, max_chars: int, chosen=None) -> Iterator[list[str]]:
        batch, size = [], 0
        with open(self.path, "rb") as stream:
            for i in range(self.documents):
                text = stream.read(self.offsets[i + 1] - self.offsets[i]).decode("utf-8")
                if chosen is not None and not chosen(i):
                    continue
                batch.append(text)
                size += len(text)
                if size >= max_chars:
                    yield batch
                    batch, size = [], 0
        if batch:
            yield batch

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


class TokenWriter:
    """Streams a split's flat token array to .npy without holding it in memory."""

    def __init__(self, path: Path, dtype):
        self.path, self.dtype = path, np.dtype(dtype)
        self._raw_path = path.with_suffix(".raw")
        self._raw = open(self._raw_path, "wb")
        self._hash = hashlib.sha256()
        self.doc_starts = [0]
        self.count = 0
        self.last_chunk = np.zeros(0, dtype=self.dtype)

    def add_documents(self, documents: list[list[int]], bos_id: int) -> None:
        bos = np.array([bos_id], dtype=self.dtype)
        parts = []
        for ids in documents:
            parts.append(bos)
            parts.append(np.asarray(ids, dtype=self.dtype))
            self.count += len(ids) + 1
            self.doc_starts.append(self.count)
        chunk = np.concatenate(parts) if parts else np.zeros(0, dtype=self.dtype)
        encoded = chunk.tobytes()
        self._raw.write(encoded)
        self._hash.update(encoded)
        self.last_chunk = chunk

    def finish(self, docs_path: Path) -> str:
        self._raw.close()
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": (self.count,)}
        with open(self.path, "wb") as out, open(self._raw_path, "rb") as raw:
            np.lib.format.write_array_header_1_0(out, header)
            shutil.copyfileobj(raw, out, 1 << 24)
        self._raw_path.unlink()
        doc_starts = np.asarray(self.doc_starts[:-1] + [self.count], dtype=np.int64)
        np.save(docs_path, doc_starts)
        self._hash.update(doc_starts.tobytes())
        return self._hash.hexdigest()
