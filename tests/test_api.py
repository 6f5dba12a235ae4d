"""The public CrossEncoder API: shapes, order, activations, rank, errors, op-set selection."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import minibert
from minibert import (
    ConfigError,
    CrossEncoder,
    InputError,
    MinibertError,
    ModelFormatError,
    UnsafeCheckpointError,
)
from minibert.runtime.runner import blas_libraries, limit_threads

GOLDENS = Path(__file__).parent / "fixtures" / "goldens"
PAIRS = [
    ("what is the capital of france", "paris is the capital of france"),
    ("what is the capital of france", "the cat sat on the mat"),
    ("how fast is a fish", ""),
    ("how fast is a fish", "   "),
    ("why is the sky blue", "the big blue river and the green tree " * 20),
    ("what is the capital of france", "paris is the capital of france"),  # a duplicate
]
# PAIRS[4] is longer than tiny-l1's max_length on purpose: its truncation is expected here.
pytestmark = pytest.mark.filterwarnings("ignore::minibert.TruncationWarning")


def test_error_hierarchy_is_importable_from_the_root():
    for cls in (ConfigError, ModelFormatError, InputError, UnsafeCheckpointError):
        assert issubclass(cls, MinibertError)
    assert issubclass(UnsafeCheckpointError, ModelFormatError)
    assert set(minibert.__all__) >= {"CrossEncoder", "MinibertError", "ConfigError", "ModelFormatError",
                                     "UnsafeCheckpointError", "InputError"}


def test_predict_shape_dtype_and_order(ce):
    scores = ce.predict(PAIRS)
    assert scores.shape == (len(PAIRS),) and scores.dtype == np.float32
    # Input order is kept whatever the batching: each pair alone gives its own score.
    for i, pair in enumerate(PAIRS):
        assert abs(ce.predict([pair])[0] - scores[i]) <= 1e-5
    # Duplicates are kept and score alike (BLAS may round a row differently by its place in the batch).
    assert abs(scores[0] - scores[5]) <= 1e-6
    for batch_size in (1, 2, 5):
        np.testing.assert_allclose(ce.predict(PAIRS, batch_size=batch_size), scores, atol=1e-5, rtol=0)


def test_predict_single_pair_returns_one_score(ce):
    single = ce.predict(PAIRS[0])
    assert np.ndim(single) == 0 and abs(single - ce.predict(PAIRS[:1])[0]) == 0
    assert np.ndim(ce.predict(list(PAIRS[1]))) == 0


def test_predict_empty(ce, ce3):
    assert ce.predict([]).shape == (0,) and ce.predict([]).dtype == np.float32
    assert ce3.predict([]).shape == (0, 3)


def test_multilabel_shape_and_softmax(ce3):
    logits = ce3.predict(PAIRS)
    assert logits.shape == (len(PAIRS), 3) and logits.dtype == np.float32
    probs = ce3.predict(PAIRS, activation="softmax")
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-6)
    e = np.exp(logits.astype(np.float64) - logits.max(1, keepdims=True))
    np.testing.assert_allclose(probs, e / e.sum(1, keepdims=True), rtol=1e-5, atol=1e-7)
    assert ce3.num_labels == 3 and len(ce3.id2label) == 3


def test_raw_logits_by_default_and_sigmoid_when_asked(ce):
    logits = ce.predict(PAIRS)
    probs = ce.predict(PAIRS, activation="sigmoid")
    np.testing.assert_allclose(probs, 1 / (1 + np.exp(-logits.astype(np.float64))), rtol=1e-6)
    assert probs.dtype == np.float32
    assert np.any((logits < 0) | (logits > 1)), "the fixture should have logits outside [0, 1]"


def test_softmax_over_a_single_logit_is_refused(ce):
    with pytest.raises(ConfigError, match="always 1.0"):
        ce.predict(PAIRS, activation="softmax")


@pytest.mark.parametrize("kwargs", [{"activation": "relu"}, {"batch_size": 0}, {"batch_size": 2.5}])
def test_bad_options(ce, kwargs):
    with pytest.raises(ConfigError):
        ce.predict(PAIRS, **kwargs)


@pytest.mark.parametrize("bad, what", [
    (("q", None), "passage must be a str, found NoneType"),
    ((b"q", "p"), "query must be a str, found bytes"),
    (("q", "p", "x"), "a tuple of length 3"),
    (("q", "bad \ud800 surrogate"), "not valid Unicode"),
    ("just a string", "found str"),
    (("q", 3), "found int"),
])
def test_bad_pair_is_an_input_error_naming_its_index(ce, bad, what):
    with pytest.raises(InputError, match=f"pair 2: .*{what}"):
        ce.predict([PAIRS[0], PAIRS[1], bad, PAIRS[2]])


def test_not_a_list_of_pairs(ce):
    with pytest.raises(InputError):
        ce.predict(42)


def test_rank(ce):
    query = "what is the capital of france"
    passages = ["the cat sat on the mat", "paris is the capital of france", "", "paris is the capital of france"]
    scores = ce.predict([(query, p) for p in passages])
    hits = ce.rank(query, passages)
    assert [h["corpus_id"] for h in hits] == sorted(range(4), key=lambda i: (-scores[i], i))
    assert all(set(h) == {"corpus_id", "score"} for h in hits)
    for h in hits:
        assert h["score"] == pytest.approx(float(scores[h["corpus_id"]]), abs=1e-6)
    # ties (the duplicate) are broken by corpus_id
    ids = [h["corpus_id"] for h in hits]
    assert ids.index(1) < ids.index(3)
    top = ce.rank(query, passages, top_k=2, return_documents=True)
    assert len(top) == 2 and top[0]["text"] == passages[top[0]["corpus_id"]]
    assert ce.rank(query, []) == []


def test_rank_errors(ce, ce3):
    with pytest.raises(ConfigError, match="num_labels=3"):
        ce3.rank("q", ["p"])
    with pytest.raises(ConfigError, match="top_k"):
        ce.rank("q", ["p"], top_k=0)
    with pytest.raises(InputError, match="single str"):
        ce.rank("q", "p")
    with pytest.raises(InputError, match="pair 1: the passage must be a str"):
        ce.rank("q", ["p", None])


def test_max_length_bounds(ce):
    assert ce.max_length == 48  # tokenizer_config's model_max_length, below max_position_embeddings (64)
    assert CrossEncoder(GOLDENS / "tiny-l1", max_length=64).max_length == 64
    assert CrossEncoder(GOLDENS / "tiny-l1", max_length=3).predict(PAIRS).shape == (len(PAIRS),)
    for bad in (2, 65, 10.0, "32", True):
        with pytest.raises(ConfigError, match=r"max_length must be an integer in \[3, 64\]"):
            CrossEncoder(GOLDENS / "tiny-l1", max_length=bad)


def test_truncation_is_longest_first_to_max_length(ce):
    short = "the tree"
    n_short = len(ce.tokenizer.tokenizer.encode(short, add_special_tokens=False).ids)
    (ids, type_ids), = ce.tokenizer.encode_pairs([("fish " * 100, short)])
    assert len(ids) == ce.max_length == 48
    assert list(type_ids).count(1) == n_short + 1  # the short passage survives whole, with its [SEP]
    (ids, type_ids), = ce.tokenizer.encode_pairs([("fish " * 100, "fish " * 100)])
    assert list(type_ids).count(1) in (23, 24)  # both long: each side keeps about half


def test_padding_stored_in_tokenizer_json_is_ignored(tmp_path):
    # tiny-l1's tokenizer.json carries fixed padding and truncation, as all-MiniLM-L6-v2's does.
    stored = json.loads((GOLDENS / "tiny-l1" / "tokenizer.json").read_text())
    assert stored["padding"] is not None and stored["truncation"] is not None
    ce = CrossEncoder(GOLDENS / "tiny-l1")
    (ids, _), = ce.tokenizer.encode_pairs([("a", "b")])
    assert len(ids) == 5  # [CLS] a [SEP] b [SEP], no pad tokens


def test_model_max_length_placeholder_falls_back_to_positions(tmp_path):
    directory = tmp_path / "m"
    shutil.copytree(GOLDENS / "tiny-l1", directory)
    path = directory / "tokenizer_config.json"
    tc = json.loads(path.read_text())
    tc["model_max_length"] = 1000000000000000019884624838656  # transformers' "no limit"
    path.write_text(json.dumps(tc))
    assert CrossEncoder(directory).max_length == 64


def test_numpy_and_numba_paths_agree(ce):
    pytest.importorskip("numba")
    a = CrossEncoder(GOLDENS / "tiny-l1", ops="numpy").predict(PAIRS)
    b = CrossEncoder(GOLDENS / "tiny-l1", ops="numba").predict(PAIRS)
    # the kernels' softmax has its own exp (within 1.2 ulp, NumPy's within 2.3): float32 rounding apart
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5)


def test_minibert_no_numba_selects_the_numpy_ops():
    code = "from minibert.ops import default_ops; print(default_ops().name)"
    env = dict(os.environ, MINIBERT_NO_NUMBA="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "numpy"


def test_runtime_never_imports_torch():
    code = ("import sys, minibert; ce = minibert.CrossEncoder(sys.argv[1]); ce.predict([('a', 'b')]); "
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(GOLDENS / "tiny-l1")],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


def test_threads_option_gives_the_same_scores_and_restores_settings(ce):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    def blas():  # {library: threads}; importing Numba may load another BLAS (scipy's), which minibert never calls
        return {i["filepath"]: i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"}

    before = blas()
    one = CrossEncoder(GOLDENS / "tiny-l1", threads=1)
    # other batch cuts (one stream or two) round the matrix products differently: float32 rounding only
    np.testing.assert_allclose(one.predict(PAIRS), ce.predict(PAIRS), atol=1e-6, rtol=1e-5)
    controlled = {lib.filepath for lib in blas_libraries().lib_controllers}   # found once, NumPy's among them
    assert controlled
    with limit_threads(1):
        inside = blas()
    assert all(inside[lib] == 1 for lib in controlled)
    after = blas()
    assert {lib: after[lib] for lib in before} == before


def test_streams_run_at_once_in_order_with_blas_at_one_thread(monkeypatch):
    """threads=3: three streams of forward passes at once, each with BLAS at one thread; the scores
    are a single stream's, in input order, and an error inside a stream reaches the caller."""
    import threading

    threadpoolctl = pytest.importorskip("threadpoolctl")
    from minibert.runtime import cross_encoder

    pairs = [(f"query {i}", "passage " * (i % 7)) for i in range(40)]
    want = CrossEncoder(GOLDENS / "tiny-l1", threads=1).predict(pairs, batch_size=4)
    ce = CrossEncoder(GOLDENS / "tiny-l1", threads=3)
    seen, barrier = [], threading.Barrier(3, timeout=30)   # the three first passes must run at the same time
    real = cross_encoder.forward

    def watched(*args, **kwargs):
        blas = {i["filepath"]: i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"}
        seen.append((threading.current_thread().name, blas))
        if len(seen) <= 3:
            barrier.wait()
        return real(*args, **kwargs)

    monkeypatch.setattr(cross_encoder, "forward", watched)
    got = ce.predict(pairs, batch_size=4)
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=1e-5)   # other batch cuts: float32 rounding only
    assert len(seen) == 20 and len({name for name, _ in seen}) == 3   # passes of ceil(4 / 3) = 2 pairs
    controlled = {lib.filepath for lib in blas_libraries().lib_controllers}   # NumPy's BLAS among them
    assert controlled and all(blas[lib] == 1 for _, blas in seen for lib in controlled)

    def broken(*args, **kwargs):
        raise InputError("planted in a stream")

    monkeypatch.setattr(cross_encoder, "forward", broken)
    with pytest.raises(InputError, match="planted in a stream"):
        ce.predict(pairs, batch_size=4)


def test_streams_share_the_batch_budget():
    """Two streams: passes of batch_size / 2 sequences and max_tokens / 2 tokens, so that the two passes
    held at once are no bigger than one pass of the whole budget; a longer sequence still gets its own."""
    from minibert.runtime.runner import forward_batches

    def encode(items, first):
        return [(np.arange(n), np.zeros(n, np.int64)) for n in items]

    cut = lambda lengths, *budget: [(s, e) for s, e, _ in forward_batches(lengths, encode, *budget)]  # noqa: E731
    assert cut([3] * 10, 4, 1000, 2) == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 10)]
    assert cut([3] * 10, 4, 1000, 1) == [(0, 4), (4, 8), (8, 10)]
    assert cut([3] * 10, 32, 12, 2) == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 10)]
    assert cut([3, 20, 3], 32, 12, 2) == [(0, 1), (1, 2), (2, 3)]


@pytest.mark.parametrize("threads", [0, -1, 1.5, True])
def test_bad_threads(threads):
    with pytest.raises(ConfigError, match="threads must be a positive integer"):
        CrossEncoder(GOLDENS / "tiny-l1", threads=threads)


def test_memory_is_bounded_by_the_token_budget(ce):
    # max_batch_tokens bounds each forward pass: the batches the budget allows never exceed it.
    from minibert.runtime.runner import batches
    lengths = [40, 40, 40, 5, 48, 48, 1]
    cut = list(batches(lengths, max_sequences=32, max_tokens=96))
    assert cut == [(0, 2), (2, 5), (5, 7)]
    assert all(sum(lengths[a:b]) <= 96 for a, b in cut)
    assert list(batches(lengths, max_sequences=2, max_tokens=10_000)) == [(0, 2), (2, 4), (4, 6), (6, 7)]
    small = CrossEncoder(GOLDENS / "tiny-l1", max_batch_tokens=48)
    np.testing.assert_allclose(small.predict(PAIRS), ce.predict(PAIRS), atol=1e-5, rtol=0)
    with pytest.raises(ConfigError, match="max_batch_tokens"):
        CrossEncoder(GOLDENS / "tiny-l1", max_batch_tokens=10)


def final_bar(err: str) -> str:
    """The last state of a tqdm bar on stderr (it redraws with \\r)."""
    return err.rstrip("\n").rpartition("\r")[2]


def test_progress_bar_counts_the_inputs_the_caller_gave(ce, capsys):
    ce.predict([("a", "b")] * 98 + [("c", "d")] * 2, batch_size=1, show_progress_bar=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "100/100" in final_bar(captured.err) and "pairs/s" in final_bar(captured.err)  # 2 distinct, 100 given
    ce.rank("a", ["b", "b", "d"], show_progress_bar=True)
    assert "3/3" in final_bar(capsys.readouterr().err)
    list(ce.predict_iter([("a", "b")] * 5, show_progress_bar=True))       # a list: its length is the total
    assert "5/5" in final_bar(capsys.readouterr().err)
    list(ce.predict_iter((("a", str(i)) for i in range(7)), show_progress_bar=True))  # a generator: a count
    bar = final_bar(capsys.readouterr().err)
    assert "7 pairs" in bar and "/7" not in bar
    ce.predict([("a", "b")])
    list(ce.predict_iter([("a", "b")]))
    assert capsys.readouterr().err == ""


