"""Files: SHA-256 fingerprints (manifests, guarded files) and atomic replacement."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_json(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def write_atomic(path: Path, text: str, durable: bool = False) -> None:
    """Replace path's content in one step: a reader sees the old file or the new, never half.

    The temporary name carries the pid, so two processes writing the same file never share
    one. `durable` fsyncs before the rename (for records that must survive a power cut).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as stream:
        stream.write(text)
        if durable:
            stream.flush()
            os.fsync(stream.fileno())
    os.replace(tmp, path)
