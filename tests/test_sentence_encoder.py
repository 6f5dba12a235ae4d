"""SentenceEncoder: sentence embeddings as sentence-transformers makes them.

Numbers first: the real all-MiniLM-L6-v2 against SentenceTransformer.encode (both op sets), then
every pooling mode on a tiny random model against sentence-transformers (when installed) and
always against a float64 re-derivation of sentence-transformers' padded formulas. Then what the
directory asks for (Normalize, truncate_dim, max_seq_length, do_lower_case, the defaults of a
plain HuggingFace directory), the API's shapes, errors, and rank.

The live tests need torch + sentence-transformers (skipped without them) and the weights: run
`python tools/get_minilm.py` first. A missing checkpoint FAILS them; it does not skip.
"""

import dataclasses
import functools
import importlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from op_sets import OP_SETS

from minibert import ConfigError, InputError, ModelFormatError, SentenceEncoder
from minibert.formats.sentence_transformers import POOLING_MODES, is_sentence_encoder
from minibert.models import Batch, encoder
from minibert.models.pooling import cos_sim, l2_normalize
from minibert.ops import NUMPY as numpy_ops

# The test texts include ones longer than the tiny models' max_seq_length on purpose: their truncation is expected.
pytestmark = pytest.mark.filterwarnings("ignore::minibert.TruncationWarning")

REPO = Path(__file__).resolve().parent.parent
WEIGHTS = REPO / "weights" / "all-MiniLM-L6-v2"
MAX_ABS_DIFF = 1e-5




@functools.cache
def _sentence_transformers():
    """The sentence_transformers module, or None when it (or torch) is not installed."""
    try:
        return importlib.import_module("sentence_transformers")
    except ImportError:
        return None


def st_encode(model_dir: Path, texts, **kwargs) -> np.ndarray:
    model = _sentence_transformers().SentenceTransformer(str(model_dir), device="cpu")
    return model.encode(texts, convert_to_numpy=True, **kwargs)


def max_diff(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max()) if a.size else 0.0


# ---------------------------------------------------------------------------------------------
# Live: the real all-MiniLM-L6-v2 (mean pooling, Normalize, max_seq_length 256) against
# sentence-transformers, on English text that ships with CPython.


def live_texts() -> list[str]:
    """64 texts from pydoc topics: short ones, ones over 128 tokens, and ones cut at 256."""
    from pydoc_data.topics import topics

    texts = []
    for i, name in enumerate(sorted(topics)[:64]):
        body = " ".join(topics[name].split())               # whitespace collapsed
        texts.append(body[:(160, 700, 1200, 3000)[i % 4]])  # characters
    return texts


@dataclasses.dataclass(frozen=True)
class Live:
    texts: list
    lengths: list             # tokens per text as sentence-transformers feeds them (truncated)
    full_lengths: list        # tokens per text untruncated
    token_ids: list           # sentence-transformers' input_ids per text, unpadded
    reference: np.ndarray     # [n, 384] SentenceTransformer.encode on the real directory
    plain_dir: Path           # the same directory with the Normalize module left out of modules.json
    plain_reference: np.ndarray


@pytest.fixture(scope="session")
def live(tmp_path_factory) -> Live:
    pytest.importorskip("torch")
    st = pytest.importorskip("sentence_transformers")
    if not ((WEIGHTS / "modules.json").is_file() and (WEIGHTS / "model.safetensors").is_file()):
        pytest.fail(f"{WEIGHTS} has no all-MiniLM-L6-v2 checkpoint: run `python tools/get_minilm.py` first")
    texts = live_texts()
    model = st.SentenceTransformer(str(WEIGHTS), device="cpu")
    assert model.max_seq_length == 256, "sentence_bert_config.json's max_seq_length (tokenizer.json says 128)"
    features = model.preprocess(texts)
    mask = features["attention_mask"].numpy().astype(bool)
    ids = features["input_ids"].numpy()
    lengths = mask.sum(axis=1).tolist()
    full_lengths = [len(x) for x in model.tokenizer(texts, truncation=False, verbose=False)["input_ids"]]
    assert sum(n > 128 for n in full_lengths) >= 24, f"too few texts over 128 tokens: {full_lengths}"
    assert sum(n > 256 for n in full_lengths) >= 12, f"too few texts over 256 tokens: {full_lengths}"
    assert max(lengths) == 256
    reference = model.encode(texts, convert_to_numpy=True)

    # The same checkpoint without the Normalize module: larger numbers, a stricter comparison.
    plain_dir = tmp_path_factory.mktemp("minilm-no-normalize")
    for item in WEIGHTS.iterdir():
        if item.name != "modules.json":
            os.symlink(item, plain_dir / item.name)
    modules = json.loads((WEIGHTS / "modules.json").read_text(encoding="utf-8"))
    (plain_dir / "modules.json").write_text(json.dumps(modules[:2]), encoding="utf-8")
    plain_reference = st_encode(plain_dir, texts)
    assert np.abs(np.linalg.norm(plain_reference, axis=1) - 1).max() > 0.1, "expected unnormalized embeddings"
    print(f"\nsentence-transformers: {len(texts)} texts, {min(lengths)}..{max(lengths)} tokens "
          f"({sum(n > 256 for n in full_lengths)} cut at 256)")
    return Live(texts, lengths, full_lengths, [row[m].tolist() for row, m in zip(ids, mask)],
                reference, plain_dir, plain_reference)


def test_live_token_ids(live):
    """max_seq_length 256 from sentence_bert_config.json, not tokenizer.json's 128 or 512."""
    enc = SentenceEncoder(WEIGHTS, ops=numpy_ops)
    assert enc.max_seq_length == 256
    encoded = enc.tokenizer.encode_texts(live.texts)
    bad = [i for i, ((ids, types), want) in enumerate(zip(encoded, live.token_ids))
           if ids.tolist() != want or types.any()]
    assert not bad, (f"token ids differ from sentence-transformers for {len(bad)} of {len(live.texts)} texts, "
                     f"first text {bad[0]}: {len(encoded[bad[0]][0])} tokens vs {len(live.token_ids[bad[0]])}")


@pytest.mark.parametrize("op_set", OP_SETS)
def test_live_parity(live, op_set):
    enc = SentenceEncoder(WEIGHTS, ops=op_set)
    got = enc.encode(live.texts)
    assert got.dtype == np.float32 and got.shape == (len(live.texts), 384)
    diff = np.abs(got.astype(np.float64) - live.reference).max(axis=1)   # [n]
    worst = int(np.argmax(diff))
    line = (f"all-MiniLM-L6-v2 [{op_set}]: max |minibert - sentence-transformers| = {diff.max():.3e} over "
            f"{len(live.texts)} texts (worst: text {worst}, {live.lengths[worst]} tokens)")
    print("\n" + line)
    assert diff.max() <= MAX_ABS_DIFF, line
    # Long texts are where a wrong max length would show: they must agree as well as the rest.
    assert max(d for d, n in zip(diff, live.full_lengths) if n > 256) <= MAX_ABS_DIFF


def test_live_parity_without_normalize(live):
    """Mean-pooled vectors before normalization (entries up to ~0.5 instead of ~0.2)."""
    got = SentenceEncoder(live.plain_dir).encode(live.texts)   # the default op set (MINIBERT_NO_NUMBA)
    line = f"all-MiniLM-L6-v2 without Normalize: max |minibert - sentence-transformers| = {max_diff(got, live.plain_reference):.3e}"
    print("\n" + line)
    assert max_diff(got, live.plain_reference) <= MAX_ABS_DIFF, line


def test_live_single_text_and_empty_list(live):
    enc = SentenceEncoder(WEIGHTS)
    single = enc.encode(live.texts[1])
    assert single.shape == (384,) and single.dtype == np.float32
    assert max_diff(single, live.reference[1]) <= MAX_ABS_DIFF
    # sentence-transformers returns np.array([]) (float64, shape (0,)); minibert keeps the dimension.
    empty = enc.encode([])
    assert empty.shape == (0, 384) and empty.dtype == np.float32


# ---------------------------------------------------------------------------------------------
# Tiny random models: every pooling mode, and what the directory asks for


TEXTS = [
    "paris is the capital of france",
    "the cat sat on the mat",
    "",                                                  # [CLS] [SEP] only
    "a",
    "Where is Berlin? In Germany!",
    " ".join(["the big blue river and the green tree"] * 8),   # longer than max_seq_length
    "paris is the capital of france",                    # a duplicate
]
MAX_SEQ_LENGTH = 24  # of the tiny sentence directories; the tiny model has 64 positions
TRANSFORMER = {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}
POOLING = {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}
NORMALIZE = {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
LEGACY_KEYS = {"cls": "pooling_mode_cls_token", "max": "pooling_mode_max_tokens", "mean": "pooling_mode_mean_tokens",
               "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens",
               "weightedmean": "pooling_mode_weightedmean_tokens", "lasttoken": "pooling_mode_lasttoken"}


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return tiny_model_dir(num_labels=1, seed=7)


def make_sentence_dir(base: Path, where: Path, pooling=None, normalize=False, bert_config=None,
                      model_config=None, modules=None, tokenizer_config=None) -> Path:
    """A copy of `base` laid out as sentence-transformers saves a model (modules.json, 1_Pooling/)."""
    shutil.copytree(base, where)
    if modules is None:
        modules = [TRANSFORMER, POOLING] + ([NORMALIZE] if normalize else [])  # no 2_Normalize folder, as MiniLM
    (where / "modules.json").write_text(json.dumps(modules, indent=2), encoding="utf-8")
    if pooling is not None:
        (where / "1_Pooling").mkdir()
        (where / "1_Pooling" / "config.json").write_text(
            json.dumps({"word_embedding_dimension": 32, **pooling}, indent=2), encoding="utf-8")
    bert_config = {"max_seq_length": MAX_SEQ_LENGTH, "do_lower_case": False} if bert_config is None else bert_config
    (where / "sentence_bert_config.json").write_text(json.dumps(bert_config), encoding="utf-8")
    if model_config is not None:
        (where / "config_sentence_transformers.json").write_text(json.dumps(model_config), encoding="utf-8")
    if tokenizer_config is not None:
        path = where / "tokenizer_config.json"
        merged = {**json.loads(path.read_text(encoding="utf-8")), **tokenizer_config}
        path.write_text(json.dumps(merged), encoding="utf-8")
    return where


def reference_embeddings(enc: SentenceEncoder, texts, modes) -> np.ndarray:
    """sentence-transformers' padded pooling formulas (Pooling._forward_padded), in float64.

    The hidden states come from minibert's encoder, one text at a time; everything after them is
    computed here on a padded [B, T, H] batch with an attention mask, independently of the
    packed reduceat code under test.
    """
    hidden = [encoder(enc.params, enc.config, Batch.pack([e]), numpy_ops).astype(np.float64)
              for e in enc.tokenizer.encode_texts(texts)]               # [T_b, H] each
    B, T, H = len(hidden), max(len(h) for h in hidden), enc.config.hidden_size
    x = np.zeros((B, T, H))
    mask = np.zeros((B, T))
    for b, h in enumerate(hidden):
        x[b, :len(h)], mask[b, :len(h)] = h, 1
    counts = np.clip(mask.sum(axis=1, keepdims=True), 1e-9, None)           # [B, 1]
    out = []
    for mode in modes:
        if mode == "cls":
            out.append(x[np.arange(B), mask.argmax(axis=1)])
        elif mode == "max":
            out.append(np.where(mask[:, :, None] == 0, -np.inf, x).max(axis=1))
        elif mode == "mean":
            out.append((x * mask[:, :, None]).sum(axis=1) / counts)
        elif mode == "mean_sqrt_len_tokens":
            out.append((x * mask[:, :, None]).sum(axis=1) / np.sqrt(counts))
        elif mode == "weightedmean":
            weights = mask * (np.arange(1, T + 1)[None, :] - mask.argmax(axis=1)[:, None])   # [B, T]
            out.append((x * weights[:, :, None]).sum(axis=1) / np.clip(weights.sum(axis=1, keepdims=True), 1e-9, None))
        elif mode == "lasttoken":
            last = T - 1 - mask[:, ::-1].argmax(axis=1)
            out.append(x[np.arange(B), last])
    out = np.concatenate(out, axis=1)                                         # [B, P * H]
    if enc.pipeline.normalize:
        out = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return out


POOLING_CASES = [
    pytest.param({LEGACY_KEYS[mode]: True}, (mode,), id=f"legacy-{mode}") for mode in POOLING_MODES
] + [
    # Several booleans: concatenated in sentence-transformers' fixed order, not the file's.
    pytest.param({"pooling_mode_lasttoken": True, "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": True,
                  "pooling_mode_cls_token": True, "pooling_mode_mean_sqrt_len_tokens": False},
                 ("cls", "max", "mean", "lasttoken"), id="legacy-several"),
    pytest.param({key: False for key in LEGACY_KEYS.values()}, ("mean",), id="legacy-none-is-mean"),
    # The newer format: a list, concatenated in the listed order; it wins over the booleans.
    pytest.param({"pooling_mode": ["weightedmean", "cls", "mean_sqrt_len_tokens"], "pooling_mode_max_tokens": True},
                 ("weightedmean", "cls", "mean_sqrt_len_tokens"), id="new-list"),
    pytest.param({"pooling_mode": "max", "include_prompt": True}, ("max",), id="new-single"),
]


@pytest.mark.parametrize("pooling, modes", POOLING_CASES)
def test_pooling_modes(tiny, tmp_path, pooling, modes):
    model_dir = make_sentence_dir(tiny, tmp_path / "model", pooling=pooling)
    enc = SentenceEncoder(model_dir, ops=numpy_ops)
    assert enc.pipeline.pooling_modes == modes
    got = enc.encode(TEXTS)
    assert got.dtype == np.float32 and got.shape == (len(TEXTS), 32 * len(modes))
    assert max_diff(got, reference_embeddings(enc, TEXTS, modes)) <= MAX_ABS_DIFF
    if _sentence_transformers() is not None:
        assert max_diff(got, st_encode(model_dir, TEXTS)) <= MAX_ABS_DIFF
    # Different texts give clearly different vectors, so the comparisons above mean something.
    assert np.abs(got[0] - got[1]).max() > 0.01


def test_concatenation_is_the_single_modes_side_by_side(tiny, tmp_path):
    single = {mode: SentenceEncoder(make_sentence_dir(tiny, tmp_path / mode, pooling={"pooling_mode": mode})).encode(TEXTS)
              for mode in ("cls", "max", "mean")}
    both = SentenceEncoder(make_sentence_dir(tiny, tmp_path / "both", pooling={
        "pooling_mode_mean_tokens": True, "pooling_mode_cls_token": True, "pooling_mode_max_tokens": True})).encode(TEXTS)
    H = single["cls"].shape[1]
    assert max_diff(both[:, H:], np.concatenate([single["max"], single["mean"]], axis=1)) == 0
    # cls pooling alone computes the last layer at the first token only (the first-token shortcut): the same
    # math, rounded otherwise in float32
    assert max_diff(both[:, :H], single["cls"]) <= 2e-6


def test_plain_directory_is_mean_pooling_like_sentence_transformers(tiny, tmp_path):
    """No modules.json: mean pooling, no normalization, the tokenizer's max length (64 here)."""
    enc = SentenceEncoder(tiny, ops=numpy_ops)
    assert enc.pipeline.pooling_modes == ("mean",) and not enc.pipeline.normalize
    assert enc.max_seq_length == 64
    assert not is_sentence_encoder(tiny)
    got = enc.encode(TEXTS)
    assert max_diff(got, reference_embeddings(enc, TEXTS, ("mean",))) <= MAX_ABS_DIFF
    if _sentence_transformers() is not None:
        assert max_diff(got, st_encode(tiny, TEXTS)) <= MAX_ABS_DIFF
    # The same model as a sentence-transformers directory with max_seq_length 24 truncates the long text only.
    truncated = SentenceEncoder(make_sentence_dir(tiny, tmp_path / "st", pooling={}), ops=numpy_ops).encode(TEXTS)
    assert max_diff(truncated[:5], got[:5]) <= 1e-6 and max_diff(truncated[5], got[5]) > 1e-3


def test_normalize_module_and_option(tiny, tmp_path):
    plain_dir = make_sentence_dir(tiny, tmp_path / "plain", pooling={"pooling_mode": ["mean", "max"]})
    normalized_dir = make_sentence_dir(tiny, tmp_path / "normalized", pooling={"pooling_mode": ["mean", "max"]},
                                       normalize=True)
    plain = SentenceEncoder(plain_dir).encode(TEXTS)                 # [n, 64]
    assert np.abs(np.linalg.norm(plain, axis=1) - 1).min() > 0.1
    expected = plain / np.linalg.norm(plain.astype(np.float64), axis=1, keepdims=True)

    listed = SentenceEncoder(normalized_dir)
    assert is_sentence_encoder(normalized_dir) and listed.pipeline.normalize
    for got in (listed.encode(TEXTS), listed.encode(TEXTS, normalize=True),
                SentenceEncoder(plain_dir).encode(TEXTS, normalize=True)):
        assert got.dtype == np.float32
        assert max_diff(got, expected) <= 1e-6
        assert np.abs(np.linalg.norm(got.astype(np.float64), axis=1) - 1).max() <= 1e-6
    assert max_diff(listed.encode(TEXTS), reference_embeddings(listed, TEXTS, ("mean", "max"))) <= MAX_ABS_DIFF
    if _sentence_transformers() is not None:
        assert max_diff(listed.encode(TEXTS), st_encode(normalized_dir, TEXTS)) <= 1e-6
        assert max_diff(SentenceEncoder(plain_dir).encode(TEXTS, normalize=True),
                        st_encode(plain_dir, TEXTS, normalize_embeddings=True)) <= 1e-6


def test_l2_normalize_of_a_zero_vector_is_zero():
    # F.normalize divides by max(norm, 1e-12): a zero vector stays zero instead of becoming NaN.
    x = np.array([[0, 0, 0], [3, 4, 0]], dtype=np.float32)
    np.testing.assert_array_equal(l2_normalize(x), np.array([[0, 0, 0], [0.6, 0.8, 0]], dtype=np.float32))
    assert l2_normalize(x).dtype == np.float32


def test_truncate_dim_comes_after_the_normalize_module(tiny, tmp_path):
    full = SentenceEncoder(make_sentence_dir(tiny, tmp_path / "full", pooling={}, normalize=True)).encode(TEXTS)
    cut_dir = make_sentence_dir(tiny, tmp_path / "cut", pooling={}, normalize=True, model_config={"truncate_dim": 8})
    enc = SentenceEncoder(cut_dir)
    assert enc.get_embedding_dimension() == 8
    cut = enc.encode(TEXTS)
    assert cut.shape == (len(TEXTS), 8) and enc.encode("a").shape == (8,) and enc.encode([]).shape == (0, 8)
    assert max_diff(cut, full[:, :8]) == 0              # the first 8 of the normalized vectors ...
    assert np.linalg.norm(cut, axis=1).max() < 0.99     # ... so no longer of unit length
    again = enc.encode(TEXTS, normalize=True)           # normalize=True comes last
    assert np.abs(np.linalg.norm(again.astype(np.float64), axis=1) - 1).max() <= 1e-6
    if _sentence_transformers() is not None:
        assert max_diff(cut, st_encode(cut_dir, TEXTS)) <= MAX_ABS_DIFF
        assert max_diff(again, st_encode(cut_dir, TEXTS, normalize_embeddings=True)) <= MAX_ABS_DIFF


def test_max_seq_length(tiny, tmp_path):
    enc = SentenceEncoder(make_sentence_dir(tiny, tmp_path / "m24", pooling={}))
    assert enc.max_seq_length == MAX_SEQ_LENGTH
    assert [len(ids) for ids, _ in enc.tokenizer.encode_texts(TEXTS)][5] == MAX_SEQ_LENGTH
    assert SentenceEncoder(make_sentence_dir(tiny, tmp_path / "m24b", pooling={}), max_length=10).max_seq_length == 10
    # Capped by the 64 positions. (sentence-transformers 6.2 keeps 1000 and fails on a text over 64 tokens.)
    capped = SentenceEncoder(make_sentence_dir(tiny, tmp_path / "m1000", pooling={},
                                               bert_config={"max_seq_length": 1000}))
    assert capped.max_seq_length == 64
    assert capped.encode(" ".join(["paris"] * 200)).shape == (32,)
    # No max_seq_length: the tokenizer's model_max_length (64), capped the same way.
    assert SentenceEncoder(make_sentence_dir(tiny, tmp_path / "none", pooling={}, bert_config={})).max_seq_length == 64


def test_do_lower_case_lowercases_before_a_cased_tokenizer(tiny, tmp_path):
    texts = ["Paris is the Capital of FRANCE", "BERLIN", "Café au lait", "paris is the capital of france"]
    cased = make_sentence_dir(tiny, tmp_path / "cased", pooling={}, tokenizer_config={"do_lower_case": False})
    lowered = make_sentence_dir(tiny, tmp_path / "lowered", pooling={}, tokenizer_config={"do_lower_case": False},
                                bert_config={"max_seq_length": MAX_SEQ_LENGTH, "do_lower_case": True})
    as_cased, as_lowered = SentenceEncoder(cased).encode(texts), SentenceEncoder(lowered).encode(texts)
    assert np.abs(as_cased[0] - as_cased[3]).max() > 0.01       # cased: upper case letters are [UNK]
    assert max_diff(as_lowered[0], as_lowered[3]) <= 1e-6       # lowercased first
    assert max_diff(as_lowered[3], as_cased[3]) <= 1e-6
    if _sentence_transformers() is not None:
        assert max_diff(as_cased, st_encode(cased, texts)) <= MAX_ABS_DIFF
        assert max_diff(as_lowered, st_encode(lowered, texts)) <= MAX_ABS_DIFF


# ---------------------------------------------------------------------------------------------
# The API


@pytest.fixture(scope="module")
def enc(tiny, tmp_path_factory):
    return SentenceEncoder(make_sentence_dir(tiny, tmp_path_factory.mktemp("api") / "model",
                                             pooling={"pooling_mode": ["cls", "mean"]}))


def test_shapes_order_and_duplicates(enc):
    got = enc.encode(TEXTS)
    assert got.shape == (len(TEXTS), 64) and got.dtype == np.float32 and enc.get_embedding_dimension() == 64
    np.testing.assert_array_equal(got[0], got[6])               # a duplicate is embedded once
    for i, text in enumerate(TEXTS):                            # input order, whatever the batching
        assert max_diff(enc.encode([text])[0], got[i]) <= 1e-5
    for batch_size in (1, 2, 100):
        assert max_diff(enc.encode(TEXTS, batch_size=batch_size), got) <= 1e-5
    small_batches = SentenceEncoder(enc.path, max_batch_tokens=MAX_SEQ_LENGTH)
    assert max_diff(small_batches.encode(TEXTS), got) <= 1e-5


def test_single_text_empty_list_and_other_sequences(enc):
    single = enc.encode(TEXTS[1])
    assert single.shape == (64,) and single.dtype == np.float32
    np.testing.assert_array_equal(single, enc.encode([TEXTS[1]])[0])
    empty = enc.encode([])
    assert empty.shape == (0, 64) and empty.dtype == np.float32
    np.testing.assert_array_equal(enc.encode(np.array(TEXTS[:3])), enc.encode(TEXTS[:3]))
    np.testing.assert_array_equal(enc.encode(iter(TEXTS[:3])), enc.encode(tuple(TEXTS[:3])))


@pytest.mark.parametrize("bad, index, fragment", [
    (None, 2, "found NoneType"),
    (b"bytes", 2, "found bytes"),
    ("lone \ud800 surrogate", 2, "not valid Unicode"),
    (3.5, 0, "found float"),
])
def test_bad_text_names_its_index(enc, bad, index, fragment):
    texts = ["fine", "also fine", "more"]
    texts[index] = bad
    with pytest.raises(InputError, match=rf"text {index}: .*{fragment}"):
        enc.encode(texts)


@pytest.mark.parametrize("texts", [b"bytes", 42, None])
def test_not_a_list_of_texts(enc, texts):
    with pytest.raises(InputError, match="expected a str or a list of str"):
        enc.encode(texts)


@pytest.mark.parametrize("kwargs, fragment", [
    ({"batch_size": 0}, "batch_size"),
    ({"batch_size": True}, "batch_size"),
    ({"normalize": "yes"}, "normalize"),
])
def test_bad_options(enc, kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        enc.encode(TEXTS, **kwargs)


def test_bad_constructor_options(enc):
    with pytest.raises(ConfigError, match="max_length"):
        SentenceEncoder(enc.path, max_length=65)
    with pytest.raises(ConfigError, match="max_batch_tokens"):
        SentenceEncoder(enc.path, max_batch_tokens=MAX_SEQ_LENGTH - 1)


# ---------------------------------------------------------------------------------------------
# Directory errors: each names its file (and field)


def _write(path: Path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(value if isinstance(value, str) else json.dumps(value), encoding="utf-8")


@pytest.mark.parametrize("change, error, fragments", [
    (lambda d: (d / "1_Pooling" / "config.json").unlink(), ModelFormatError, ["1_Pooling/config.json", "not found"]),
    (lambda d: _write(d / "1_Pooling" / "config.json", "{not json"), ModelFormatError, ["1_Pooling/config.json", "JSON"]),
    (lambda d: _write(d / "1_Pooling" / "config.json", {"pooling_mode": "attention"}), ConfigError,
     ["1_Pooling/config.json", "'pooling_mode'", "'attention'"]),
    (lambda d: _write(d / "1_Pooling" / "config.json", {"pooling_mode": []}), ConfigError, ["'pooling_mode'"]),
    (lambda d: _write(d / "1_Pooling" / "config.json", {"pooling_mode_attention_tokens": True}), ConfigError,
     ["1_Pooling/config.json", "'pooling_mode_attention_tokens'"]),
    (lambda d: _write(d / "1_Pooling" / "config.json", {"pooling_mode_cls_token": "yes"}), ConfigError,
     ["'pooling_mode_cls_token'", "true or false"]),
    (lambda d: _write(d / "1_Pooling" / "config.json", {"word_embedding_dimension": 384}), ConfigError,
     ["1_Pooling/config.json", "'word_embedding_dimension'", "384", "hidden_size 32"]),
    (lambda d: _write(d / "modules.json", [TRANSFORMER, POOLING, {**NORMALIZE, "type": "sentence_transformers.models.Dense",
                                                                 "path": "2_Dense"}]),
     ModelFormatError, ["2_Dense/config.json", "not found", "Dense"]),
    (lambda d: _write(d / "modules.json", [TRANSFORMER, POOLING, {**NORMALIZE, "type": "sentence_transformers.models.Router",
                                                                 "path": "2_Router"}]),
     ModelFormatError, ["modules.json", "'2_Router' (Router)", "Transformer, Pooling, Dense"]),
    (lambda d: _write(d / "modules.json", [TRANSFORMER, {**POOLING, "type": "my_package.MyPooling"}]),
     ModelFormatError, ["modules.json", "my_package.MyPooling"]),
    (lambda d: _write(d / "modules.json", [POOLING, TRANSFORMER]), ModelFormatError,
     ["modules.json", "first module must be a sentence-transformers Transformer"]),
    (lambda d: _write(d / "modules.json", [TRANSFORMER, NORMALIZE, POOLING]), ModelFormatError,
     ["modules.json", "'2_Normalize'", "no Pooling comes before it"]),
    (lambda d: _write(d / "modules.json", [TRANSFORMER, {**POOLING, "path": "../elsewhere"}]), ModelFormatError,
     ["modules.json", "'../elsewhere'"]),
    (lambda d: _write(d / "modules.json", {"0": TRANSFORMER}), ModelFormatError, ["modules.json", "JSON list"]),
    (lambda d: _write(d / "2_Normalize" / "config.json", {"module_input_name": "token_embeddings"}), ConfigError,
     ["2_Normalize/config.json", "'module_input_name'"]),
    (lambda d: _write(d / "sentence_bert_config.json", {"max_seq_length": "256"}), ConfigError,
     ["sentence_bert_config.json", "'max_seq_length'"]),
    (lambda d: _write(d / "sentence_bert_config.json", {"do_lower_case": 1}), ConfigError,
     ["sentence_bert_config.json", "'do_lower_case'"]),
    (lambda d: _write(d / "sentence_bert_config.json", {"processor_kwargs": {"model_max_length": 8}}), ConfigError,
     ["sentence_bert_config.json", "'processor_kwargs'", "model_max_length"]),
    (lambda d: _write(d / "sentence_bert_config.json", {"transformer_task": "sequence-classification"}),
     ModelFormatError, ["sentence_bert_config.json", "transformer_task"]),
    (lambda d: _write(d / "config_sentence_transformers.json", {"prompts": {"query": "query: "},
                                                               "default_prompt_name": "passage"}),
     ConfigError, ["config_sentence_transformers.json", "'default_prompt_name'", "'passage'", "'query'"]),
    (lambda d: _write(d / "config_sentence_transformers.json", {"truncate_dim": 0}), ConfigError,
     ["config_sentence_transformers.json", "'truncate_dim'"]),
    (lambda d: _write(d / "config_sentence_transformers.json", {"model_type": "CrossEncoder"}), ModelFormatError,
     ["config_sentence_transformers.json", "'CrossEncoder'"]),
    (lambda d: (d / "config.json").unlink(), ModelFormatError, ["no config.json"]),
], ids=["no-pooling-config", "pooling-config-not-json", "unknown-mode", "empty-mode-list", "unknown-legacy-key",
        "legacy-not-bool", "dimension-mismatch", "dense-without-files", "router-module", "custom-module",
        "wrong-order", "normalize-before-pooling", "path-outside",
        "modules-not-a-list", "normalize-token-embeddings", "max-seq-length-type", "do-lower-case-type",
        "processor-kwargs", "transformer-task", "default-prompt", "truncate-dim", "cross-encoder-type",
        "no-config-json"])
def test_directory_errors_name_the_file(tiny, tmp_path, change, error, fragments):
    model_dir = make_sentence_dir(tiny, tmp_path / "model", pooling={"pooling_mode_mean_tokens": True}, normalize=True)
    change(model_dir)
    with pytest.raises(error) as caught:
        SentenceEncoder(model_dir)
    for fragment in fragments:
        assert fragment in str(caught.value), (fragment, str(caught.value))


def test_transformer_in_a_subfolder(tiny, tmp_path):
    """Older sentence-transformers saves keep the encoder (and sentence_bert_config.json) in 0_Transformer/."""
    flat = make_sentence_dir(tiny, tmp_path / "flat", pooling={})
    nested = make_sentence_dir(tiny, tmp_path / "nested", pooling={},
                               modules=[{**TRANSFORMER, "path": "0_Transformer"}, POOLING])
    (nested / "0_Transformer").mkdir()
    for item in list(nested.iterdir()):
        if item.is_file() and item.name != "modules.json":
            item.rename(nested / "0_Transformer" / item.name)
    enc = SentenceEncoder(nested)
    assert enc.pipeline.encoder_dir == nested / "0_Transformer" and enc.max_seq_length == MAX_SEQ_LENGTH
    np.testing.assert_array_equal(enc.encode(TEXTS), SentenceEncoder(flat).encode(TEXTS))
    if _sentence_transformers() is not None:
        assert max_diff(enc.encode(TEXTS), st_encode(nested, TEXTS)) <= MAX_ABS_DIFF


def test_empty_default_prompt_is_no_prompt(tiny, tmp_path):
    # sentence-transformers prepends nothing for an empty (or unset) default prompt.
    model_dir = make_sentence_dir(tiny, tmp_path / "model", pooling={},
                                  model_config={"prompts": {"query": ""}, "default_prompt_name": "query"})
    assert SentenceEncoder(model_dir).encode("a").shape == (32,)


def test_prompts_are_put_before_each_text_as_sentence_transformers_does(tiny, tmp_path):
    """The default prompt (config_sentence_transformers.json), a named one, an explicit one, or none."""
    model_dir = make_sentence_dir(tiny, tmp_path / "model", pooling={},
                                  model_config={"prompts": {"query": "query: ", "doc": "passage: "},
                                                "default_prompt_name": "query"})
    enc, plain = SentenceEncoder(model_dir), SentenceEncoder(make_sentence_dir(tiny, tmp_path / "plain", pooling={}))
    np.testing.assert_array_equal(enc.encode(TEXTS), plain.encode(["query: " + t for t in TEXTS]))
    np.testing.assert_array_equal(enc.encode(TEXTS, prompt_name="doc"), plain.encode(["passage: " + t for t in TEXTS]))
    np.testing.assert_array_equal(enc.encode(TEXTS, prompt=""), plain.encode(TEXTS))
    np.testing.assert_array_equal(np.stack(list(enc.encode_iter(TEXTS))), enc.encode(TEXTS))
    with pytest.raises(ConfigError, match="'title' is not one of this model's prompts"):
        enc.encode(TEXTS, prompt_name="title")
    if _sentence_transformers() is not None:
        assert max_diff(enc.encode(TEXTS), st_encode(model_dir, TEXTS)) <= MAX_ABS_DIFF


def test_missing_directory(tmp_path):
    with pytest.raises(ModelFormatError, match="no such model directory"):
        SentenceEncoder(tmp_path / "nowhere")
    assert not is_sentence_encoder(tmp_path / "nowhere")


def test_is_sentence_encoder(tiny, tmp_path):
    assert is_sentence_encoder(make_sentence_dir(tiny, tmp_path / "st", pooling={}))
    assert not is_sentence_encoder(tiny)                                     # no modules.json
    # A modules.json without a model_type is a SentenceTransformer, as sentence-transformers reads it (even
    # without a Pooling module: SentenceEncoder then says its modules end with token embeddings)
    assert is_sentence_encoder(make_sentence_dir(tiny, tmp_path / "no-pooling", modules=[TRANSFORMER]))
    cross_encoder = make_sentence_dir(tiny, tmp_path / "ce", pooling={}, model_config={"model_type": "CrossEncoder"})
    assert not is_sentence_encoder(cross_encoder)
    broken = make_sentence_dir(tiny, tmp_path / "broken", pooling={})
    _write(broken / "modules.json", "[{")
    with pytest.raises(ModelFormatError, match="modules.json"):
        is_sentence_encoder(broken)


# ---------------------------------------------------------------------------------------------
# rank: cosine similarity, best first


QUERY = "what is the capital of france"
DOCUMENTS = ["paris is the capital of france", "the cat sat on the mat", "berlin is the capital of germany",
             "the cat sat on the mat", "fish swim in the blue river", "what is the capital of france"]


def test_rank_scores_are_cosine_similarities(enc):
    hits = enc.rank(QUERY, DOCUMENTS, return_documents=True)
    embeddings = enc.encode([QUERY] + DOCUMENTS).astype(np.float64)
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    expected = unit[1:] @ unit[0]                                            # [n], float64
    assert sorted(h["corpus_id"] for h in hits) == list(range(len(DOCUMENTS)))
    for hit in hits:
        assert abs(hit["score"] - expected[hit["corpus_id"]]) <= 1e-6
        assert hit["text"] == DOCUMENTS[hit["corpus_id"]]
    # Decisions: best first, the same order as the float64 scores; ties (duplicates) by corpus_id.
    assert [h["corpus_id"] for h in hits] == sorted(range(len(DOCUMENTS)), key=lambda i: (-round(expected[i], 5), i))
    assert hits[0]["corpus_id"] == 5 and abs(hits[0]["score"] - 1) <= 1e-6  # the query itself
    tie = [h for h in hits if h["corpus_id"] in (1, 3)]
    assert tie[0]["score"] == tie[1]["score"] and tie[0]["corpus_id"] == 1
    np.testing.assert_allclose(enc.similarity(enc.encode(QUERY), enc.encode(DOCUMENTS))[0],
                               [expected[i] for i in range(len(DOCUMENTS))], atol=1e-6)


def test_rank_options_and_errors(enc):
    full = enc.rank(QUERY, DOCUMENTS)
    assert set(full[0]) == {"corpus_id", "score"}
    assert enc.rank(QUERY, DOCUMENTS, top_k=2) == full[:2]
    assert enc.rank(QUERY, []) == []
    with pytest.raises(InputError, match="the query must be a str"):
        enc.rank(None, DOCUMENTS)
    with pytest.raises(InputError, match="the query is not valid Unicode"):
        enc.rank("\udfff", DOCUMENTS)
    with pytest.raises(InputError, match="a single str"):
        enc.rank(QUERY, "one document")
    with pytest.raises(InputError, match="document 1"):
        enc.rank(QUERY, ["fine", None])
    with pytest.raises(ConfigError, match="top_k"):
        enc.rank(QUERY, DOCUMENTS, top_k=0)


def test_cos_sim_matches_float64():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 16)).astype(np.float32), rng.normal(size=(5, 16)).astype(np.float32)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    want = (a64 / np.linalg.norm(a64, axis=1, keepdims=True)) @ (b64 / np.linalg.norm(b64, axis=1, keepdims=True)).T
    got = cos_sim(a, b)
    assert got.dtype == np.float32 and got.shape == (3, 5) and max_diff(got, want) <= 1e-6


def test_progress_bar_counts_the_texts_the_caller_gave(enc, capsys):
    enc.encode(["a text"] * 99 + ["another"], batch_size=1, show_progress_bar=True)
    bar = capsys.readouterr().err.rstrip("\n").rpartition("\r")[2]
    assert "100/100" in bar and "texts/s" in bar   # 2 distinct texts, 100 given
    enc.rank("a query", ["b", "b", "c"], show_progress_bar=True)
    assert "3/3" in capsys.readouterr().err.rstrip("\n").rpartition("\r")[2]
    list(enc.encode_iter(iter(["x", "y", "x"]), show_progress_bar=True))
    assert "3 texts" in capsys.readouterr().err.rstrip("\n").rpartition("\r")[2]
    enc.encode(["a"])
    assert capsys.readouterr().err == ""
