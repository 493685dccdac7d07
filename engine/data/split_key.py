"""The split key: a secret drawn once per cache that decides which document is train, val or test.

Split membership by a plain hash of each document's content can be recomputed by anyone
who can read the sources and the prepare code, train.py's tracer included, which could then
rebuild the validation text and memorize it. A keyed hash (BLAKE2b with this key) cannot:
the key lives only in the cache root (`split.key`, mode 0600), which the tracer is refused
by the kernel and by its audit hooks (engine/confine.py, engine/training/sandbox.py).

Machines whose results are compared (a swarm, a Ray cluster, the hosts of a slice) must split
with the same key: the operator copies the file and runs `autoresearch prepare --split-key
FILE` there. The manifest records only the key's id, a keyed hash of a fixed text, which names
the key without revealing it, and the fingerprint includes it, so caches split with
different keys are never compared.
"""
from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

from engine.errors import UserError
from engine.paths import SPLIT_KEY_FILE

KEY_FILE = SPLIT_KEY_FILE
KEY_BYTES = 32
_ID_TEXT = b"autoresearch split key id"


def path(root: Path) -> Path:
    return Path(root) / KEY_FILE


def load(root: Path) -> bytes | None:
    """The cache root's key, or None when it has none. Raises UserError for a garbled file."""
    try:
        return parse(path(root).read_text(), path(root))
    except FileNotFoundError:
        return None


def parse(text: str, where: Path | str) -> bytes:
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise UserError(f"{where} is not a split key ({2 * KEY_BYTES} hex digits on one line): copy "
                        f"the file {KEY_FILE} from the cache root of the machine whose results this one "
                        "compares with, or remove it to draw a new key")
    return key


def key_id(key: bytes) -> str:
    """A name for the key that reveals nothing of it (a keyed hash of a fixed text)."""
    return hashlib.blake2b(_ID_TEXT, key=key, digest_size=16).hexdigest()


def root_key_id(root: Path) -> str | None:
    key = load(root)
    return None if key is None else key_id(key)


def for_prepare(root: Path, given: str | None) -> bytes:
    """The key a prepare splits with: the one in the file `given` (installed as the cache root's
    key, replacing another with a note), else the root's own, else a new one drawn now."""
    current = load(root)
    if given is not None:
        try:
            key = parse(Path(given).read_text(), given)
        except OSError as error:
            raise UserError(f"--split-key {given}: cannot read it ({error.strerror or error}): pass the path "
                            f"of a copy of another machine's {KEY_FILE}") from None
        if current is not None and current != key:
            print(f"autoresearch prepare: the split key of {root} (id {key_id(current)[:12]}) is replaced by "
                  f"{given} (id {key_id(key)[:12]}): datasets split with the old key are prepared again when used")
        if current != key:
            write(root, key)
        return key
    if current is None:
        current = secrets.token_bytes(KEY_BYTES)
        write(root, current)
        print(f"autoresearch prepare: drew a new split key (id {key_id(current)[:12]}) into {path(root)}: "
              "copy that file to every machine whose results this one compares with "
              "(`autoresearch prepare --split-key FILE` there)")
    return current


def write(root: Path, key: bytes) -> None:
    """Atomically, readable by its owner only."""
    target = path(root)
    staged = target.with_name(f".{KEY_FILE}-{os.getpid()}")
    descriptor = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(key.hex() + "\n")
    os.replace(staged, target)


def prepare_command(manifest: dict) -> str:
    """`autoresearch prepare ...` with the flags that made the cache of `manifest`."""
    spec, constants = manifest.get("spec") or {}, manifest.get("constants") or {}
    words = ["autoresearch", "prepare", "--dataset", str(spec.get("dataset", "stdlib"))]
    for flag, value in (("--vocab-size", spec.get("vocab_size")), ("--seq-len", constants.get("sequence_length")),
                        ("--eval-tokens", constants.get("eval_tokens")), ("--max-chars", spec.get("max_chars")),
                        ("--text-key", spec.get("text_key")), ("--data-dir", spec.get("data_dir"))):
        if value is not None:
            words += [flag, str(value)]
    return " ".join(words)


def missing_key_message(root: Path, wanted_id: str, where: str, prepare_command: str) -> str:
    """What to tell the operator of a machine that lacks the key its peers split with."""
    have = root_key_id(root)
    state = "has no split key" if have is None else f"has split key id {have[:12]}"
    return (f"{where} {state}, but the results it must compare with were split with key id {wanted_id[:12]}: "
            f"copy {KEY_FILE} from the cache root of the machine that prepared them (e.g. "
            f"~/.cache/autoresearch/{KEY_FILE}) to this machine and run `{prepare_command} --split-key FILE`")
