"""Streaming: CrossEncoder.predict_iter, SentenceEncoder.encode_iter and the windows they read.

A stream is read a window at a time and each window is scored as predict / encode scores it
alone; windows are cut by content (a count and a character budget), so the numbers never
depend on how fast the input arrives. The CLI's streaming is tested in test_cli.py.
"""

import itertools
import json
import shutil

import numpy as np
import pytest

from minibert import ConfigError, InputError, SentenceEncoder
from minibert.runtime import runner as batching
from minibert.runtime.runner import WINDOW_ITEMS, windows

# The streamed pairs include ones longer than max_length on purpose: their truncation is expected here.
pytestmark = pytest.mark.filterwarnings("ignore::minibert.TruncationWarning")



def many_pairs(n, seed=0):
    rng = np.random.default_rng(seed)
    words = np.array("the cat sat on a mat paris is capital of france rome fish river blue".split())
    return [(" ".join(rng.choice(words, 4)), " ".join(rng.choice(words, rng.integers(0, 30)))) for _ in range(n)]


class Counting:
    """An iterable that counts how many items have been taken from it."""

    def __init__(self, items):
        self.items, self.taken = items, 0

    def __iter__(self):
        for item in self.items:
            self.taken += 1
            yield item


# ---------------------------------------------------------------------------------------------
# windows


def test_windows_cut_by_count_and_by_characters():
    items = ["ab", "cde", "", "f", "ghij", "k"]
    assert list(windows(items, len, max_items=4, max_chars=100)) == [["ab", "cde", "", "f"], ["ghij", "k"]]
    # A window ends as soon as it holds max_chars characters; a longer item is a window alone.
    assert list(windows(items, len, max_items=10, max_chars=4)) == [["ab", "cde"], ["", "f", "ghij"], ["k"]]
    assert list(windows(["x" * 50, "y"], len, max_items=10, max_chars=4)) == [["x" * 50], ["y"]]
    assert list(windows([], len)) == []


def test_windows_read_no_further_than_the_window():
    source = Counting(range(10))
    stream = windows(source, lambda item: 1, max_items=3, max_chars=100)
    assert next(stream) == [0, 1, 2] and source.taken == 3
    assert next(stream) == [3, 4, 5] and source.taken == 6


# ---------------------------------------------------------------------------------------------
# predict_iter


@pytest.mark.filterwarnings("ignore::minibert.TruncationWarning")
def test_predict_iter_equals_predict_within_a_window(ce, ce3):
    pairs = many_pairs(300) + many_pairs(5)    # duplicates too
    assert WINDOW_ITEMS >= len(pairs)
    np.testing.assert_array_equal(np.array(list(ce.predict_iter(pairs))), ce.predict(pairs))
    multi = list(ce3.predict_iter(iter(pairs), activation="softmax"))
    assert all(row.shape == (3,) and row.dtype == np.float32 for row in multi)
    np.testing.assert_array_equal(np.array(multi), ce3.predict(pairs, activation="softmax"))


def test_predict_iter_scores_each_window_as_predict_does(ce):
    pairs = many_pairs(2 * WINDOW_ITEMS + 77, seed=1)
    source = Counting(pairs)
    stream = ce.predict_iter(source, batch_size=16)
    first = next(stream)
    assert source.taken == WINDOW_ITEMS              # one window read ahead, not the whole input
    got = np.array([first, *stream])
    expected = np.concatenate([ce.predict(pairs[i:i + WINDOW_ITEMS], batch_size=16)
                               for i in range(0, len(pairs), WINDOW_ITEMS)])
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_allclose(got, ce.predict(pairs, batch_size=16), rtol=1e-5, atol=1e-5)


def test_predict_iter_window_character_budget(ce, monkeypatch):
    # With a budget of 100 characters each window holds a few pairs; the numbers stay those of predict.
    monkeypatch.setattr(batching, "WINDOW_CHARS", 100)
    pairs = many_pairs(40, seed=2)
    source = Counting(pairs)
    stream = ce.predict_iter(source)
    next(stream)
    assert 1 <= source.taken < 40
    got = np.array([*ce.predict_iter(pairs)])
    np.testing.assert_allclose(got, ce.predict(pairs), rtol=1e-5, atol=1e-5)


def test_predict_iter_is_lazy_but_checks_its_arguments_at_once(ce):
    with pytest.raises(ConfigError, match="softmax"):
        ce.predict_iter(many_pairs(3), activation="softmax")
    with pytest.raises(ConfigError, match="batch_size"):
        ce.predict_iter(many_pairs(3), batch_size=0)
    for not_pairs in ("a str", b"bytes", 7, None):
        with pytest.raises(InputError, match="iterable of"):
            ce.predict_iter(not_pairs)
    assert list(ce.predict_iter([])) == []
    assert list(ce.predict_iter(iter(()))) == []


def test_predict_iter_bad_pair_names_its_index_in_the_stream(ce):
    pairs = itertools.chain(many_pairs(WINDOW_ITEMS + 10), [("q", None)], many_pairs(5))
    stream = ce.predict_iter(pairs)
    scores = [next(stream) for _ in range(WINDOW_ITEMS)]    # the first window is fine
    assert len(scores) == WINDOW_ITEMS
    with pytest.raises(InputError, match=rf"pair {WINDOW_ITEMS + 10}: the passage must be a str"):
        next(stream)


# ---------------------------------------------------------------------------------------------
# encode_iter


@pytest.fixture(scope="module")
def sentence_encoder(tiny_model_dir, tmp_path_factory):
    model = shutil.copytree(tiny_model_dir(seed=3), tmp_path_factory.mktemp("st") / "model")
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
               {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]
    (model / "modules.json").write_text(json.dumps(modules), encoding="utf-8")
    (model / "1_Pooling").mkdir()
    (model / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True}), encoding="utf-8")
    return SentenceEncoder(model)


def test_encode_iter_scores_each_window_as_encode_does(sentence_encoder):
    texts = [p for _, p in many_pairs(WINDOW_ITEMS + 200, seed=4)]
    source = Counting(texts)
    stream = sentence_encoder.encode_iter(source, normalize=True)
    first = next(stream)
    assert source.taken == WINDOW_ITEMS and first.shape == (32,)
    got = np.array([first, *stream])
    expected = np.concatenate([sentence_encoder.encode(texts[:WINDOW_ITEMS], normalize=True),
                               sentence_encoder.encode(texts[WINDOW_ITEMS:], normalize=True)])
    np.testing.assert_array_equal(got, expected)


def test_encode_iter_checks_arguments_at_once_and_names_bad_texts(sentence_encoder):
    with pytest.raises(ConfigError, match="normalize"):
        sentence_encoder.encode_iter(["a"], normalize="yes")
    with pytest.raises(InputError, match="iterable of str"):
        sentence_encoder.encode_iter("one text")
    with pytest.raises(InputError, match="text 2: expected a str"):
        list(sentence_encoder.encode_iter(["a", "b", 3]))


# ---------------------------------------------------------------------------------------------
# The truncation warning points at the caller's line, whichever way in


def test_truncation_warning_points_at_the_callers_line(ce, sentence_encoder, monkeypatch):
    import warnings

    import minibert.formats.tokenizer
    long_pair = ("query", "word " * 500)
    calls = {"predict": lambda: ce.predict([long_pair]),
             "predict_iter": lambda: next(ce.predict_iter([long_pair])),
             "encode": lambda: sentence_encoder.encode(["word " * 500]),
             "encode_iter": lambda: next(sentence_encoder.encode_iter(["word " * 500]))}
    for name, call in calls.items():
        monkeypatch.setattr(minibert.formats.tokenizer, "_warned_truncation", False)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            call()
        assert [w.filename for w in caught] == [__file__], name
