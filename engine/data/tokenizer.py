"""SentencePiece BPE with exact bytes: every text's token bytes sum to its UTF-8 length.

Trained with byte fallback (no unknown tokens), identity normalization, no dummy
prefix and whitespace kept, so decoding gives back the text exactly. SentencePiece
writes spaces as U+2581 inside pieces; a literal U+2581 in the text is therefore
encoded as its three UTF-8 byte tokens, which decode to that character again.
"""
from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import sentencepiece as spm

from engine import constants
from engine.errors import UserError

SPACE_MARK = "\u2581"  # SentencePiece's visible space
UNK_ID, BOS_ID = 0, 1
# SentencePiece skips longer sentences, so documents are fed to training in pieces.
TRAINING_PIECE_BYTES = 8192
# Settings that decide the vocabulary; they go into the manifest's spec.
TRAINER_OPTIONS = {
    "model_type": "bpe",
    "byte_fallback": True,
    "normalization_rule_name": "identity",
    "add_dummy_prefix": False,
    "remove_extra_whitespaces": False,
    "allow_whitespace_only_pieces": True,
    "split_digits": False,
    "character_coverage": 0.9995,
    "max_sentencepiece_length": 16,
    "unk_id": UNK_ID,
    "bos_id": BOS_ID,
    "eos_id": -1,
    "pad_id": -1,
    "bos_piece": constants.BOS_PIECE,
}


class Tokenizer:
    def __init__(self, model: str | Path | bytes):
        if isinstance(model, bytes):
            self._sp = spm.SentencePieceProcessor(model_proto=model)
        else:
            self._sp = spm.SentencePieceProcessor(model_file=str(model))
        self.vocab_size = self._sp.get_piece_size()
        self.bos_id = self._sp.bos_id()
        self._space_mark_ids = [self._sp.piece_to_id(f"<0x{b:02X}>") for b in SPACE_MARK.encode()]

    def encode(self, text: str) -> list[int]:
        """Token ids of text, without BOS."""
        if SPACE_MARK not in text:
            return self._sp.encode(text)
        ids: list[int] = []
        for i, part in enumerate(text.split(SPACE_MARK)):
            if i:
                ids.extend(self._space_mark_ids)
            ids.extend(self._sp.encode(part))
        return ids

    def encode_batch(self, texts: list[str], num_threads: int | None = None) -> list[list[int]]:
        plain = [i for i, text in enumerate(texts) if SPACE_MARK not in text]
        encoded = self._sp.encode([texts[i] for i in plain], num_threads=num_threads or os.cpu_count() or 1)
        result: list[list[int]] = [None] * len(texts)  # type: ignore[list-item]
        for i, ids in zip(plain, encoded):
            result[i] = ids
        for i, text in enumerate(texts):
            if result[i] is None:
                result[i] = self.encode(text)
        return result

    def decode(self, ids: Iterable[int]) -> str:
        return self._sp.decode([int(i) for i in ids])

    def id_to_piece(self, token_id: int) -> str:
        return self._sp.id_to_piece(token_id)

    def token_bytes(self) -> np.ndarray:
        """int32[vocab]: UTF-8 bytes each id decodes to; special tokens 0, byte tokens 1."""
        sp = self._sp
        table = np.zeros(self.vocab_size, dtype=np.int32)
        for i in range(self.vocab_size):
            if sp.is_control(i) or sp.is_unknown(i):
                continue
            if sp.is_byte(i):
                table[i] = 1
            else:
                table[i] = len(sp.id_to_piece(i).replace(SPACE_MARK, " ").encode("utf-8"))
        return table


def training_pieces(text: str, limit: int = TRAINING_PIECE_BYTES) -> Iterator[str]:
    """Cut a document at line ends into pieces of at most `limit` UTF-8 bytes (long lines are cut)."""
    piece, size = [], 0
    for line in text.splitlines(keepends=True):
        encoded = len(line.encode("utf-8"))
        if size + encoded > limit and piece:
            yield "".join(piece)
            piece, size = [], 0
        while encoded > limit:
            cut = limit // 4  # at most `limit` bytes whatever the characters
            yield line[:cut]
            line = line[cut:]
            encoded = len(line.encode("utf-8"))
        piece.append(line)
        size += encoded
    if piece:
        yield "".join(piece)


def train_tokenizer(documents: Iterable[str], vocab_size: int, num_threads: int | None = None) -> bytes:
    """Train on documents (train split only) and return the serialized model."""
    model = io.BytesIO()
    sentences = (piece for doc in documents for piece in training_pieces(doc))
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=sentences, model_writer=model, vocab_size=vocab_size,
            max_sentence_length=4 * TRAINING_PIECE_BYTES, num_threads=num_threads or os.cpu_count() or 1,
            minloglevel=2, **TRAINER_OPTIONS)
    except RuntimeError as error:
        raise _vocab_error(str(error), vocab_size) from None
    return model.getvalue()


def _vocab_error(message: str, vocab_size: int) -> Exception:
    too_high = re.search(r"Vocabulary size too high \((\d+)\).*<= (\d+)", message)
    if too_high:
        return UserError(f"the training text is too small for --vocab-size {vocab_size}: it supports at most "
                         f"{too_high.group(2)}; lower --vocab-size or add data")
    too_low = re.search(r"smaller than required_chars\. (\d+) vs (\d+)", message)
    if too_low:
        return UserError(f"--vocab-size {vocab_size} cannot hold the {too_low.group(2)} pieces this text needs: "
                         "raise --vocab-size")
    return UserError(f"SentencePiece could not train a tokenizer with --vocab-size {vocab_size}: {message.strip()}")
