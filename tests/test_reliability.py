"""Bad input and faults: very long texts, non-finite weights, non-finite outputs."""

import random
import shutil
import time
import warnings

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import minibert.formats.tokenizer
from minibert import (
    CrossEncoder,
    ModelFormatError,
    NumericalError,
    SentenceEncoder,
    TruncationWarning,
)
from minibert.formats.tokenizer import PairTokenizer
from minibert.ops import NUMPY as ops

WORDS = "the cat sat on the mat and a dog ate cheese by the river in paris unaffable zzzzqx".split()


def words(rng, n_chars):
    text = " ".join(rng.choice(WORDS) for _ in range(n_chars // 3 + 1))
    return text[:n_chars]


@pytest.fixture(scope="module")
def long_model(tiny_model_dir):
    return CrossEncoder(tiny_model_dir(max_position_embeddings=512), ops=ops)


@pytest.fixture
def fresh_warning(monkeypatch):
    """The truncation warning, not yet shown in this process."""
    monkeypatch.setattr(minibert.formats.tokenizer, "_warned_truncation", False)


def odd_text(rng):
    """Text shapes that a character cap could get wrong: runs of spaces, words of 100+ characters, CJK."""
    parts = []
    for _ in range(rng.randrange(0, 60)):
        kind = rng.randrange(6)
        parts.append(rng.choice(WORDS) if kind < 3 else " " * rng.randrange(1, 40) if kind == 3
                     else "x" * rng.randrange(95, 130) if kind == 4 else "\u4e2d\u6587\n\t")
    return " ".join(parts)


@pytest.mark.parametrize("max_length", [64, 33, 3])
def test_long_text_path_gives_the_tokenizers_ids(tiny_model_dir, monkeypatch, max_length):
    # With a tiny char_cap every text takes the cut-and-truncate path; it must match the tokenizer exactly.
    ce = CrossEncoder(tiny_model_dir(), max_length=max_length, ops=ops)
    rng = random.Random(max_length)
    pairs = [(odd_text(rng), odd_text(rng)) for _ in range(150)]
    pairs += [("a " * n, "b " * m) for n in range(0, 70, 7) for m in range(0, 70, 5)]  # ties of both lengths
    texts = [q for q, _ in pairs]
    expected_pairs = ce.tokenizer.encode_pairs(pairs)
    expected_texts = ce.tokenizer.encode_texts(texts)
    monkeypatch.setattr(PairTokenizer, "char_cap", property(lambda self: 10))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        got_pairs = ce.tokenizer.encode_pairs(pairs)
        got_texts = ce.tokenizer.encode_texts(texts)
    for i, (got, want) in enumerate(zip(got_pairs + got_texts, expected_pairs + expected_texts)):
        assert got[0].tolist() == want[0].tolist(), i
        assert got[1].tolist() == want[1].tolist(), i


def test_million_character_passage_scores_as_its_first_10000(long_model, fresh_warning):
    rng = random.Random(0)
    passage = words(rng, 1_000_000)
    query = "what is the capital of france"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        long_score = long_model.predict([(query, passage), (passage, query), (passage, passage)])
        elapsed = time.perf_counter() - start
        cut_score = long_model.predict([(query, passage[:10_000]), (passage[:10_000], query),
                                        (passage[:10_000], passage[:10_000])])
    print(f"\n3 pairs with 1,000,000-character sides: {elapsed:.3f} s")   # reported, not asserted
    np.testing.assert_array_equal(long_score, cut_score)
    # Just above the cap, both paths run on the same text: the same ids.
    text = words(rng, long_model.tokenizer.char_cap + 5_000)
    long_ids = long_model.tokenizer.encode_pairs([(query, text)])[0][0]
    assert long_ids.tolist() == long_model.tokenizer.tokenizer.encode(query, text).ids
    assert [w.category for w in caught] == [TruncationWarning]


def test_sentence_encoder_long_text(long_model, tiny_model_dir, fresh_warning):
    enc = SentenceEncoder(tiny_model_dir(max_position_embeddings=512), ops=ops)
    text = words(random.Random(1), 1_000_000)
    with pytest.warns(TruncationWarning, match="truncated"):
        long = enc.encode([text])
    np.testing.assert_array_equal(long, enc.encode([text[:10_000]]))


def test_truncation_warning_can_be_silenced(long_model, fresh_warning):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", category=TruncationWarning)
        long_model.predict([("q", "cat " * 1000)])
    assert caught == []


def test_short_texts_do_not_warn(long_model, fresh_warning):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        long_model.predict([("q", "cat " * 100), ("", "")])
    assert caught == []


def test_long_run_of_spaces_before_the_words(long_model):
    # Nothing but spaces up to far past the cap: the words after them still count.
    query = " " * 200_000 + "cat dog"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        assert long_model.predict([(query, "moon")]) == long_model.predict([("cat dog", "moon")])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_weight_is_refused_at_load(tiny_model_dir, tmp_path, bad):
    model = shutil.copytree(tiny_model_dir(), tmp_path / "model")
    tensors = load_file(str(model / "model.safetensors"))
    tensors["bert.encoder.layer.1.output.dense.weight"][3, 5] = bad
    save_file(tensors, str(model / "model.safetensors"))
    with pytest.raises(ModelFormatError, match=r"model\.safetensors: tensor encoder\.layer\.1\.output\.dense\.weight "
                                               r"has 1 non-finite"):
        CrossEncoder(model)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflow itself
def test_float64_weight_too_large_for_float32_is_refused(tiny_model_dir, tmp_path):
    model = shutil.copytree(tiny_model_dir(), tmp_path / "model")
    tensors = load_file(str(model / "model.safetensors"))
    tensors["classifier.bias"] = np.array([1e300], dtype=np.float64)
    save_file(tensors, str(model / "model.safetensors"))
    with pytest.raises(ModelFormatError, match="tensor classifier.bias has 1 non-finite"):
        CrossEncoder(model)


def with_param(model, path, value):
    """model with the parameter at path (e.g. "classifier.weight") replaced by value."""
    import dataclasses
    *parents, leaf = path.split(".")
    objects = [model.params]
    for name in parents:
        objects.append(getattr(objects[-1], name))
    new = dataclasses.replace(objects[-1], **{leaf: value})
    for obj, name in zip(reversed(objects[:-1]), reversed(parents)):
        new = dataclasses.replace(obj, **{name: new})
    model.params = new
    return model


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflow itself
def test_non_finite_score_raises_naming_the_pairs(tiny_model_dir):
    ce = CrossEncoder(tiny_model_dir(), ops=ops)
    pairs = [("cat", "dog"), ("a", "b"), ("cat", "dog")]
    assert np.isfinite(ce.predict(pairs)).all()   # the test can fail: the same pairs pass before
    with_param(ce, "classifier.weight", ce.params.classifier.weight * np.float32(1e38))
    with pytest.raises(NumericalError, match=r"for pairs 0, 1, 2:"):
        ce.predict(pairs)
    with pytest.raises(NumericalError):
        ce.predict(pairs, activation="sigmoid")   # a sigmoid would hide the inf as 1.0


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflow itself
def test_non_finite_embedding_raises_naming_the_texts(tiny_model_dir):
    enc = SentenceEncoder(tiny_model_dir(), ops=ops)
    texts = ["cat", "dog", "cat"]
    assert np.isfinite(enc.encode(texts)).all()
    import dataclasses
    encoder = enc.params.encoder   # a sentence encoder's params: its encoder, then sentence-transformers' modules
    layer = encoder.layers[-1]
    huge = dataclasses.replace(layer.ffn_norm, weight=layer.ffn_norm.weight * np.float32(1e38),
                               bias=layer.ffn_norm.bias * np.float32(1e38))
    encoder = dataclasses.replace(encoder, layers=encoder.layers[:-1] + (dataclasses.replace(layer, ffn_norm=huge),))
    enc.params = dataclasses.replace(enc.params, encoder=encoder)
    with pytest.raises(NumericalError, match=r"for texts 0, 1, 2:"):
        enc.encode(texts, normalize=True)
