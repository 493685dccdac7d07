"""PackedLoader: BOS-aligned best-fit packing, determinism, exact resume, per-host shares."""
import json

import numpy as np
import pytest

from engine.data.cache import load_manifest, load_split
from engine.errors import UserError
from engine.data.loader import PackedLoader, document_units

BOS = 1


def corpus(doc_lengths):
    """A flat stream whose token at position p is p + 2 (so every token names its place), BOS at doc starts."""
    doc_starts = np.concatenate([[0], np.cumsum(doc_lengths)]).astype(np.int64)
    tokens = np.arange(doc_starts[-1], dtype=np.int64) + 2
    tokens[doc_starts[:-1]] = BOS
    return tokens, doc_starts


def random_corpus(seed, documents, longest):
    rng = np.random.default_rng(seed)
    return corpus(rng.integers(2, longest + 1, size=documents))


def pieces_of(row):
    """Split a row at its BOS tokens: [(first position, last position) of the tokens after each BOS]."""
    bos_at = np.flatnonzero(row == BOS).tolist() + [len(row)]
    return [(int(row[a + 1]) - 2, int(row[b - 1]) - 2) if b > a + 1 else None
            for a, b in zip(bos_at[:-1], bos_at[1:])]


def test_rows_start_with_bos_are_full_and_hold_only_corpus_tokens():
    tokens, doc_starts = random_corpus(0, 400, 150)
    loader = PackedLoader(tokens, doc_starts, rows=8, seq_len=63, seed=0)
    for _ in range(30):
        batch = next(loader)
        assert batch.shape == (8, 64) and batch.dtype == np.int32
        assert (batch[:, 0] == BOS).all()
        real = batch[batch != BOS] - 2
        assert (real >= 0).all() and (real < len(tokens)).all()
        assert (tokens[real] != BOS).all()  # never a document's BOS position read as text


def test_documents_stay_whole_and_contiguous_where_they_fit():
    tokens, doc_starts = random_corpus(1, 600, 40)
    doc_end = dict(zip(doc_starts[:-1].tolist(), doc_starts[1:].tolist()))
    loader = PackedLoader(tokens, doc_starts, rows=16, seq_len=127, seed=3)
    whole = pieces = 0
    for _ in range(20):
        for row in next(loader):
            row_pieces = pieces_of(row)
            for i, piece in enumerate(row_pieces):
                is_last = i == len(row_pieces) - 1
                if piece is None:  # a lone BOS: the start of a unit cropped to one token
                    assert is_last
                    continue
                first, last = piece
                bos_at = np.flatnonzero(row == BOS)[i]
                assert np.array_equal(row[bos_at + 1:bos_at + 2 + last - first] - 2, np.arange(first, last + 1))
                if not is_last:  # only the row's last piece may be cut short
                    assert last + 1 in doc_end.values()
                if first - 1 in doc_end:
                    pieces += 1
                    whole += doc_end[first - 1] == last + 1
    assert whole / pieces > 0.9


def test_long_documents_are_cut_into_row_sized_units_that_cover_them():
    tokens, doc_starts = corpus([5, 300, 64, 65, 2])
    row_len = 64
    start, length, synthetic = document_units(doc_starts, row_len)
    assert ((length + synthetic) <= row_len).all()
    covered = np.concatenate([np.arange(s, s + n) for s, n in zip(start, length)])
    assert np.array_equal(np.sort(covered), np.arange(len(tokens)))
    assert not synthetic[np.isin(start, doc_starts)].any()


def test_same_seed_same_batches_other_seed_other_batches():
    tokens, doc_starts = random_corpus(2, 300, 200)

    def first_batches(seed):
        loader = PackedLoader(tokens, doc_starts, rows=4, seq_len=31, seed=seed)
        return np.stack([next(loader) for _ in range(10)])

    assert np.array_equal(first_batches(7), first_batches(7))
    assert not np.array_equal(first_batches(7), first_batches(8))


@pytest.mark.parametrize("resume_after", [0, 3, 40])  # 40 batches runs over several epochs
def test_resume_from_state_continues_exactly(resume_after):
    tokens, doc_starts = random_corpus(3, 60, 90)
    args = (tokens, doc_starts, 6, 47, 11)
    loader = PackedLoader(*args)
    for _ in range(resume_after):
        next(loader)
    saved = json.loads(json.dumps(loader.state()))
    expected = [next(loader) for _ in range(12)]
    resumed = PackedLoader.restore(*args, state=saved)
    assert all(np.array_equal(want, next(resumed)) for want in expected)
    assert loader.epoch >= 1 or resume_after < 40


def test_restore_refuses_a_state_from_another_configuration():
    tokens, doc_starts = random_corpus(4, 50, 50)
    saved = PackedLoader(tokens, doc_starts, 4, 31, seed=1).state()
    with pytest.raises(ValueError, match="seed"):
        PackedLoader.restore(tokens, doc_starts, 4, 31, 2, state=saved)


def test_per_host_shares_are_disjoint_and_cover_the_data():
    tokens, doc_starts = random_corpus(5, 200, 120)
    hosts = 4
    seen = []
    for index in range(hosts):
        loader = PackedLoader(tokens, doc_starts, rows=8, seq_len=63, seed=0, process_index=index,
                              process_count=hosts, buffer_units=8)
        values = set()
        while loader.epoch < 3:
            batch = next(loader)
            assert batch.shape == (2, 64)
            values.update((batch[batch != BOS] - 2).tolist())
        seen.append(values)
    for i in range(hosts):
        for j in range(i + 1, hosts):
            assert not seen[i] & seen[j]
    text_positions = set(np.flatnonzero(tokens != BOS).tolist())
    assert set().union(*seen) == text_positions


def test_rows_that_do_not_divide_over_processes_are_refused():
    tokens, doc_starts = random_corpus(6, 20, 20)
    with pytest.raises(UserError, match="multiple of 4"):
        PackedLoader(tokens, doc_starts, rows=6, seq_len=15, seed=0, process_count=4)


def test_loads_a_prepared_split(prepared_data):
    manifest = load_manifest(prepared_data)
    tokens, doc_starts = load_split(prepared_data, "train")
    assert isinstance(tokens, np.memmap)
    loader = PackedLoader(tokens, doc_starts, rows=4, seq_len=manifest["constants"]["sequence_length"], seed=0)
    batch = next(loader)
    assert batch.shape == (4, 65)
    assert (batch[:, 0] == manifest["bos_id"]).all()
    assert batch.max() < manifest["vocab_size"]
