"""The data cache is verified, not trusted: its files against the manifest's sha256 values.

`prepare` records, in manifest.json, the sha256 of the tokenizer model, of the token-byte
table, and of each split's content (its token stream's raw bytes, then its int64 document
offsets), and a fingerprint computed from those values with the dataset spec and the fixed
constants (`content_fingerprint`). `verify` recomputes what it is asked for and the
fingerprint: a shuffled split, an edited token-byte table or a truncated file is a UserError
that says to prepare again, never a score or a traceback.

Cost (hashing runs at disk speed, about 1 GB/s): the scorer checks the tokenizer, the table and
the split it reads on every score (the val split of the default cache: a few MB, milliseconds);
the loop checks everything once when it starts (the train split's size: seconds for GBs).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from engine.data import cache as data
from engine.errors import UserError
from engine.files import sha256_file, sha256_json

BLOCK_BYTES = 1 << 24


def content_fingerprint(format_: int, spec: dict, constants: dict, tokenizer_sha: str, token_bytes_sha: str,
                        split_shas: dict[str, str], split_key_id: str | None = None) -> str:
    """The manifest's fingerprint: one hash of the spec, the constants, every file's content and
    the split key's id (engine/data/split_key.py; None only in caches prepared before keys)."""
    facts = {"format": format_, "spec": spec, "constants": constants, "tokenizer": tokenizer_sha,
             "token_bytes": token_bytes_sha, "splits": split_shas}
    if split_key_id is not None:
        facts["split_key"] = split_key_id
    return sha256_json(facts)


def split_sha256(data_dir: Path, split: str) -> str:
    """sha256 of a split's tokens (raw bytes, as prepare wrote them) then its int64 document offsets."""
    import numpy as np

    tokens = np.load(data.tokens_path(data_dir, split), mmap_mode="r")
    doc_starts = np.load(data.docs_path(data_dir, split), mmap_mode="r")
    digest = hashlib.sha256()
    flat = tokens.reshape(-1)
    step = max(BLOCK_BYTES // max(flat.itemsize, 1), 1)
    for start in range(0, len(flat), step):
        digest.update(np.ascontiguousarray(flat[start:start + step]).tobytes())
    digest.update(np.asarray(doc_starts, dtype=np.int64).tobytes())
    return digest.hexdigest()


def verify(data_dir: str | Path, splits: tuple[str, ...] = data.SPLITS) -> dict:
    """Check the tokenizer, the token-byte table and `splits` against the manifest, and the
    manifest's fingerprint against its content hashes. Returns the manifest.

    Raises UserError naming the damaged file and saying to prepare again."""
    data_dir = Path(data_dir)
    manifest = data.load_manifest(data_dir)
    try:
        recorded = {"tokenizer": manifest["tokenizer_sha256"], "token_bytes": manifest["token_bytes_sha256"],
                    "splits": {name: facts["sha256"] for name, facts in manifest["splits"].items()}}
        fingerprint = content_fingerprint(manifest["format"], manifest["spec"], manifest["constants"],
                                          recorded["tokenizer"], recorded["token_bytes"], recorded["splits"],
                                          manifest.get("split_key_id"))
    except (KeyError, TypeError, AttributeError) as error:
        raise _damaged(data_dir, f"its manifest lacks {error}") from None
    if fingerprint != manifest.get("fingerprint"):
        raise _damaged(data_dir, "its manifest's fingerprint does not match the hashes it lists")
    checks = [(data.TOKENIZER, recorded["tokenizer"], lambda: sha256_file(data_dir / data.TOKENIZER)),
              (data.TOKEN_BYTES, recorded["token_bytes"], lambda: sha256_file(data_dir / data.TOKEN_BYTES))]
    for split in splits:
        if split not in recorded["splits"]:
            raise _damaged(data_dir, f"its manifest lists no {split} split")
        checks.append((f"the {split} split", recorded["splits"][split], lambda s=split: split_sha256(data_dir, s)))
    for what, expected, compute in checks:
        try:
            actual = compute()
        except FileNotFoundError as error:
            raise _damaged(data_dir, f"{Path(error.filename).name} is missing") from None
        except (OSError, ValueError, EOFError) as error:  # a truncated or garbled .npy
            raise _damaged(data_dir, f"{what} cannot be read ({error})") from None
        if actual != expected:
            raise _damaged(data_dir, f"{what} does not match its sha256 in the manifest "
                                     f"({actual[:12]} != {expected[:12]})")
    return manifest


def _damaged(data_dir: Path, why: str) -> UserError:
    return UserError(f"the data cache {data_dir} is damaged: {why}. Run `autoresearch prepare` again with the "
                     "same settings (it rebuilds a damaged cache), then start again")
