"""Where things live on disk: the data cache, the compilation cache, run directories."""
from __future__ import annotations

import json
import os
from pathlib import Path

from engine.errors import UserError


SPLIT_KEY_FILE = "split.key"  # beside the data caches it split (engine/data/split_key.py)


def split_key_beside(data_dir: str | Path) -> Path:
    """The split key of the cache root that holds data_dir, wherever that root is."""
    return Path(data_dir).parent / SPLIT_KEY_FILE


def cache_root() -> Path:
    return Path(os.environ.get("AUTORESEARCH_CACHE", Path.home() / ".cache" / "autoresearch")).absolute()


def latest_pointer() -> Path:
    """A text file naming the most recently prepared dataset directory."""
    return cache_root() / "LATEST"


def resolve_data_dir(data: str | None) -> Path:
    """A prepared cache from a path, a name under the cache root, or the last prepared."""
    if data is None:
        pointer = latest_pointer()
        if not pointer.exists():
            raise UserError(f"no prepared dataset under {cache_root()}: run `autoresearch prepare` first")
        data = pointer.read_text().strip()
    path = Path(data)
    if not path.is_absolute() and not path.exists():
        path = cache_root() / data
    if not (path / "manifest.json").exists():
        raise UserError(f"{data!r} is not a prepared dataset (no manifest.json in {path}): "
                        "run `autoresearch prepare` or pass --data with a cache directory")
    return path


def compilation_cache_dir() -> Path:
    return Path(os.environ.get("JAX_COMPILATION_CACHE_DIR", cache_root() / "xla")).absolute()


def find_data_dir(fingerprint: str | None) -> Path | None:
    """The prepared cache whose manifest has this fingerprint (the loop's data)."""
    root = cache_root()
    if not fingerprint or not root.is_dir():
        return None
    for manifest in sorted(root.glob("*/manifest.json")):
        try:
            if json.loads(manifest.read_text()).get("fingerprint") == fingerprint:
                return manifest.parent
        except (OSError, json.JSONDecodeError):
            continue
    return None
