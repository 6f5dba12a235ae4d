"""The long-text fast path for RoBERTa's byte-level BPE and XLM-R's / CamemBERT's Unigram tokenizers.

A side longer than char_cap characters is cut before tokenizing (minibert.formats.tokenizer._encode_long);
for these pipelines the cut is before a space that follows an ASCII letter or digit, where the
tokens before the cut are provably those of the whole text (see tokenize._cutter). Checked here
on random texts, token by token, and end to end against the same tokenizer without the fast path.
No torch needed: the tokenizers are the committed golden fixtures' (their ids equal transformers').
"""

import string
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minibert.formats.tokenizer import PairTokenizer, _cut_before_space, _cutter
from minibert.runtime.load import load_config, load_tokenizer

GOLDENS = Path(__file__).parent / "fixtures" / "goldens"
NAMES = ["roberta-bpe", "xlmr-unigram", "camembert-tok", "roberta-tok-files"]
# Letters, digits, punctuation, every kind of whitespace, combining marks, CJK, emoji, full-width and
# ligature characters (the Precompiled normalizer's), apostrophes (GPT-2's contractions), special tokens.
PIECES = list(string.ascii_letters + string.digits + string.punctuation) + [
    " ", " ", " ", "  ", "\t", "\n", "\r\n", "\u3000", "\u00a0", "\u0301", "\u030a", "é", "日本", "🙂", "👍🏽",
    "ＡＢ", "ﬁ", "①", "'s", "'ll", "<pad>", "<mask>", "<s>", "</s>", "word", "the ", " import", "A\u030a"]


def load(name: str, max_length: int | None = None) -> PairTokenizer:
    return load_tokenizer(GOLDENS / name, load_config(GOLDENS / name), max_length)


@pytest.mark.parametrize("name", NAMES)
def test_these_pipelines_take_the_fast_path(name):
    assert _cutter(load(name).tokenizer) is _cut_before_space


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=150, deadline=None)
@given(pieces=st.lists(st.sampled_from(PIECES), min_size=1, max_size=80), limit=st.integers(0, 200))
def test_a_cut_keeps_a_prefix_of_the_tokens(name, pieces, limit):
    tokenizer = load(name).tokenizer
    tokenizer.no_truncation()
    text = "".join(pieces)
    prefix = _cut_before_space(text, limit)
    assert text.startswith(prefix) and (prefix == text or len(prefix) >= limit)
    whole = tokenizer.encode(text, add_special_tokens=False).ids
    cut = tokenizer.encode(prefix, add_special_tokens=False).ids
    assert whole[:len(cut)] == cut, (text, prefix)


def long_text(seed: int, n_pieces: int) -> str:
    rng = np.random.default_rng(seed)
    return "".join(PIECES[i] for i in rng.integers(0, len(PIECES), size=n_pieces))


@pytest.mark.parametrize("name", NAMES)
def test_long_pairs_match_the_tokenizer_without_the_fast_path(name):
    fast = load(name, max_length=12)
    slow = PairTokenizer(load(name, max_length=12).tokenizer, 12, fast.source, fast.token_types, cuttable=False)
    assert fast.char_cap < 1500
    pairs = [(long_text(1, 900), "short query"), ("short", long_text(2, 900)), (long_text(3, 700), long_text(4, 600)),
             (long_text(5, 700), long_text(5, 700)), ("word " * 400, "word " * 400), ("日本" * 900, "x")]
    for got, want in zip(fast.encode_pairs(pairs), slow.encode_pairs(pairs)):
        assert got[0].tolist() == want[0].tolist() and got[1].tolist() == want[1].tolist()
    texts = [long_text(6, 900), "word " * 500]
    for got, want in zip(fast.encode_texts(texts), slow.encode_texts(texts)):
        assert got[0].tolist() == want[0].tolist()


def test_max_length_below_the_template_is_not_truncated_as_the_tokenizer_does():
    """max_length 3 < RoBERTa's 4 special tokens of a pair: the tokenizer does not truncate (nor does transformers)."""
    fast = load("roberta-bpe", max_length=3)
    slow = PairTokenizer(load("roberta-bpe", max_length=3).tokenizer, 3, fast.source, fast.token_types, cuttable=False)
    pairs = [("word " * 100, "a b"), ("word " * 100, "word " * 90)]
    for got, want in zip(fast.encode_pairs(pairs), slow.encode_pairs(pairs)):
        assert got[0].tolist() == want[0].tolist() and len(got[0]) > 100
