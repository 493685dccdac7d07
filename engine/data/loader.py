"""BOS-aligned best-fit packing of a token stream into rows of seq_len + 1 tokens.

Every row starts with BOS and has no padding. Documents are the packing units:
each row takes the largest buffered unit that still fits, and only when none fits
is the shortest one cropped to fill the row. Nothing is thrown away: a document
longer than a row is cut into row-sized units, and the rest of a cropped unit
goes back into the buffer; both continue behind a BOS of their own, so every
unit, like every row, starts with BOS.

Each host packs only its share of the units (every process_count-th one from
process_index), so the hosts' rows are disjoint and together cover the data.
The order is a fresh permutation of the share per epoch, fixed by the seed.
"""
from __future__ import annotations

import bisect

import numpy as np

from engine.errors import UserError

STATE_VERSION = 1
BUFFER_UNITS = 1000  # more units to choose from packs tighter; the buffer's list ops stay cheap


def document_units(doc_starts: np.ndarray, row_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut documents into units of at most row_len tokens: (src_start, src_len, synthetic_bos).

    A unit emits [BOS if synthetic_bos] + tokens[src_start : src_start + src_len]. The first
    unit of a document begins at its own BOS; later ones carry row_len - 1 tokens behind a
    synthetic BOS.
    """
    doc_starts = np.asarray(doc_starts, dtype=np.int64)
    first_token = doc_starts[:-1]
    doc_len = np.diff(doc_starts)
    continuations = -(-np.maximum(doc_len - row_len, 0) // (row_len - 1))
    per_doc = 1 + continuations
    unit_doc = np.repeat(np.arange(len(doc_len)), per_doc)
    index_in_doc = np.arange(len(unit_doc)) - np.repeat(np.cumsum(per_doc) - per_doc, per_doc)
    is_first = index_in_doc == 0
    offset = np.where(is_first, 0, row_len + (index_in_doc - 1) * (row_len - 1))
    src_start = first_token[unit_doc] + offset
    doc_end = first_token[unit_doc] + doc_len[unit_doc]
    src_len = np.where(is_first, np.minimum(doc_len[unit_doc], row_len),
                       np.minimum(row_len - 1, doc_end - src_start))
    keep = src_len > 0
    return src_start[keep], src_len[keep], ~is_first[keep]


class PackedLoader:
    """Yields int32[rows / process_count, seq_len + 1] batches, this host's share of `rows`.

    Resume exactly with `PackedLoader.restore(tokens, doc_starts, rows, seq_len, seed,
    process_index, process_count, state=saved)` where saved = loader.state().
    """

    def __init__(self, tokens: np.ndarray, doc_starts: np.ndarray, rows: int, seq_len: int, seed: int,
                 process_index: int = 0, process_count: int = 1, *, bos_id: int | None = None,
                 buffer_units: int = BUFFER_UNITS):
        _check_shape(rows, seq_len, process_index, process_count)
        if len(doc_starts) < 2 or len(tokens) == 0:
            raise UserError("the token split is empty: prepare a dataset with more data")
        self._tokens = tokens
        self._config = {"rows": int(rows), "seq_len": int(seq_len), "seed": int(seed),
                        "process_index": int(process_index), "process_count": int(process_count),
                        "tokens": int(len(tokens)), "documents": int(len(doc_starts) - 1)}
        self.rows_per_process = rows // process_count
        self.row_len = seq_len + 1
        self._bos = int(tokens[int(doc_starts[0])]) if bos_id is None else int(bos_id)
        self._buffer_capacity = buffer_units
        starts, lens, synthetic = document_units(doc_starts, self.row_len)
        share = slice(process_index, None, process_count)
        self._unit_start, self._unit_len, self._unit_synthetic = starts[share], lens[share], synthetic[share]
        if len(self._unit_start) == 0:
            raise UserError(f"{len(starts)} packing units cannot be shared by {process_count} processes: "
                            "prepare a dataset with more documents")
        self._start_epoch(0, 0)
        self._buffer_lens: list[int] = []  # row lengths, sorted ascending
        self._buffer_units: list[tuple[int, bool]] = []  # (src_start, synthetic_bos), parallel to _buffer_lens

    @classmethod
    def restore(cls, *args, state: dict | None = None, **kwargs) -> "PackedLoader":
        """The constructor's arguments, then the state (last positional or state=)."""
        if state is None:
            *args, state = args
        loader = cls(*args, **kwargs)
        loader.load_state(state)
        return loader

    def __iter__(self):
        return self

    def __next__(self) -> np.ndarray:
        return self.next_batch()

    def next_batch(self) -> np.ndarray:
        pieces: tuple[list, list, list] = ([], [], [])
        for _ in range(self.rows_per_process):
            self._pack_row(*pieces)
        return self._gather(*pieces)

    def state(self) -> dict:
        """JSON-able position: resuming from it yields exactly the batches that would follow."""
        buffer = [[start, length, synthetic]
                  for length, (start, synthetic) in zip(self._buffer_lens, self._buffer_units)]
        return {"version": STATE_VERSION, **self._config, "epoch": self._epoch, "position": self._position,
                "buffer": buffer}

    def load_state(self, state: dict) -> None:
        mismatched = {k: (state.get(k), v) for k, v in self._config.items() if state.get(k) != v}
        if state.get("version") != STATE_VERSION or mismatched:
            raise ValueError(f"loader state does not match this loader (saved, now): {mismatched}")
        self._start_epoch(int(state["epoch"]), int(state["position"]))
        self._buffer_lens = [int(length) for _, length, _ in state["buffer"]]
        self._buffer_units = [(int(start), bool(synthetic)) for start, _, synthetic in state["buffer"]]

    @property
    def epoch(self) -> int:
        return self._epoch

    def _start_epoch(self, epoch: int, position: int) -> None:
        self._epoch = epoch
        self._position = position
        rng = np.random.default_rng([self._config["seed"], epoch])
        self._order = rng.permutation(len(self._unit_start))

    def _refill(self) -> None:
        while len(self._buffer_lens) < self._buffer_capacity:
            if self._position == len(self._order):
                self._start_epoch(self._epoch + 1, 0)
            take = self._order[self._position:self._position + self._buffer_capacity - len(self._buffer_lens)]
            self._position += len(take)
            synthetic = self._unit_synthetic[take]
            for start, length, synth in zip(self._unit_start[take].tolist(),
                                            (self._unit_len[take] + synthetic).tolist(), synthetic.tolist()):
                self._insert(length, start, synth)

    def _insert(self, length: int, start: int, synthetic: bool) -> None:
        i = bisect.bisect_right(self._buffer_lens, length)
        self._buffer_lens.insert(i, length)
        self._buffer_units.insert(i, (start, synthetic))

    def _pack_row(self, out_start: list, out_real: list, out_synthetic: list) -> None:
        remaining = self.row_len
        while remaining:
            self._refill()
            best_fit = bisect.bisect_right(self._buffer_lens, remaining) - 1
            if best_fit >= 0:
                length = self._buffer_lens.pop(best_fit)
                start, synthetic = self._buffer_units.pop(best_fit)
                taken = length
            else:  # nothing fits: crop the shortest, its rest waits in the buffer
                length = self._buffer_lens.pop(0)
                start, synthetic = self._buffer_units.pop(0)
                taken = remaining
                self._insert(length - taken + 1, start + taken - synthetic, True)
            out_start.append(start)
            out_real.append(taken - synthetic)
            out_synthetic.append(synthetic)
            remaining -= taken

    def _gather(self, starts: list, reals: list, synthetics: list) -> np.ndarray:
        src_start = np.asarray(starts, dtype=np.int64)
        synthetic = np.asarray(synthetics, dtype=bool)
        width = np.asarray(reals, dtype=np.int64) + synthetic
        out_start = np.cumsum(width) - width
        index = np.repeat(src_start - synthetic - out_start, width) + np.arange(int(width.sum()))
        batch = np.asarray(self._tokens[np.maximum(index, 0)], dtype=np.int32)
        batch[out_start[synthetic]] = self._bos
        return batch.reshape(self.rows_per_process, self.row_len)


def _check_shape(rows: int, seq_len: int, process_index: int, process_count: int) -> None:
    if seq_len < 1:
        raise UserError(f"sequence length {seq_len} must be at least 1")
    if process_count < 1 or not 0 <= process_index < process_count:
        raise UserError(f"process index {process_index} is outside 0..{process_count - 1}")
    if rows < process_count or rows % process_count:
        raise UserError(f"batch of {rows} rows does not divide evenly over {process_count} processes: "
                        f"use a batch size that is a multiple of {process_count}")
