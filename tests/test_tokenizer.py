"""Exact bytes: for any text, the token-byte table summed over its ids is its UTF-8 length,
and decoding gives the text back."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.data.cache import load_token_bytes, tokenizer_path
from engine.data.tokenizer import BOS_ID, SPACE_MARK, Tokenizer, train_tokenizer, training_pieces

WHITESPACE = [" ", "  ", "    ", "\t", "\n", "\r\n", "\r", "\n\n\n", "\u00a0", "\u3000", "\u2028", "\x0b", "\x0c"]
ZERO_WIDTH = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff"]
COMBINING = ["e\u0301", "a\u0308\u0323", "\u0301", "\u0915\u094d\u0937", "\u05e9\u05c1"]
EMOJI = ["\U0001F469\u200d\U0001F469\u200d\U0001F467", "\U0001F3F3\ufe0f\u200d\U0001F308", "\U0001F1EF\U0001F1F5",
         "\U0001F44D\U0001F3FD", "\u2764\ufe0f", "\U0001F600"]
AWKWARD = [SPACE_MARK, SPACE_MARK * 3, "<|bos|>", "<unk>", "<0x41>", "\x00", "\ufffd", "\U0010ffff", "\u0085"]

fragments = st.one_of(
    st.text(max_size=12),
    st.sampled_from(WHITESPACE + ZERO_WIDTH + COMBINING + EMOJI + AWKWARD),
    st.lists(st.sampled_from(WHITESPACE), max_size=8).map("".join),
    st.from_regex(r"[a-z_]{1,8}(\.[a-z]{1,5})?\(", fullmatch=True),
)
texts = st.one_of(st.text(), st.lists(fragments, max_size=24).map("".join))

MIXED_CORPUS = ["def héllo_wörld(x):\n    return x * 2  # 日本語のテキスト\n",
                "Grüße, naïve café — \U0001F469\u200d\U0001F469\u200d\U0001F467 \U0001F44D\U0001F3FD\r\n",
                "Съешь же ещё этих мягких французских булок\tи выпей чаю\n",
                "\u0915\u094d\u0937 \u05e9\u05c1 e\u0301 ▁▁ spaced   out\u200b text\n\n"] * 300


@pytest.fixture(scope="module")
def tokenizers(prepared_data):
    mixed = Tokenizer(train_tokenizer(MIXED_CORPUS, vocab_size=420, num_threads=1))
    stdlib = Tokenizer(tokenizer_path(prepared_data))
    return {"mixed": (mixed, mixed.token_bytes()), "stdlib": (stdlib, load_token_bytes(prepared_data))}


def assert_exact(tokenizer, token_bytes, text):
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    assert int(np.sum(token_bytes[ids])) == len(text.encode("utf-8"))
    assert BOS_ID not in ids


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=texts)
def test_bytes_are_exact_and_decoding_round_trips(tokenizers, text):
    for tokenizer, token_bytes in tokenizers.values():
        assert_exact(tokenizer, token_bytes, text)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(texts, max_size=6))
def test_batch_encoding_matches_one_at_a_time(tokenizers, batch):
    tokenizer, _ = tokenizers["mixed"]
    assert tokenizer.encode_batch(batch, num_threads=2) == [tokenizer.encode(text) for text in batch]


@pytest.mark.parametrize("text", WHITESPACE + ZERO_WIDTH + COMBINING + EMOJI + AWKWARD + MIXED_CORPUS[:4])
def test_known_hard_cases(tokenizers, text):
    for tokenizer, token_bytes in tokenizers.values():
        assert_exact(tokenizer, token_bytes, text)
        assert_exact(tokenizer, token_bytes, text * 3 + " " + text)


def test_table_counts_specials_zero_bytes_one_and_merges_several(tokenizers):
    tokenizer, token_bytes = tokenizers["mixed"]
    assert token_bytes[BOS_ID] == 0 and token_bytes[0] == 0  # BOS and <unk>
    assert tokenizer.id_to_piece(BOS_ID) == "<|bos|>"
    byte_ids = [i for i in range(tokenizer.vocab_size) if tokenizer.id_to_piece(i).startswith("<0x")]
    assert len(byte_ids) == 256 and (token_bytes[byte_ids] == 1).all()
    assert token_bytes.max() > 3  # merges of multi-byte characters exist
    assert tokenizer.encode("<|bos|>") != [BOS_ID]  # special tokens never come from text


@settings(max_examples=200, deadline=None)
@given(text=texts, limit=st.integers(8, 64))
def test_training_pieces_rejoin_to_the_document_within_the_limit(text, limit):
    pieces = list(training_pieces(text, limit))
    assert "".join(pieces) == text
    assert all(0 < len(piece.encode("utf-8")) <= limit for piece in pieces)
