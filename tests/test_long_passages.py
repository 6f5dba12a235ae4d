"""Long passages scored whole: CrossEncoder's long_passages ("max", "first", "mean") and stride, the CLI's
--long-passages / --stride, CrossEncoderScorer's options (the server's are in test_long_passages_serve.py,
Ray's in test_batch.py).

The models are golden fixtures written by transformers (tests/fixtures/goldens): tiny-l1 (BERT, 48 tokens,
1 label), roberta-bpe (<s> q </s></s> p </s>, no token types) and tiny-l3 (3 labels).
"""

import io
import json
import pickle
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from op_sets import OP_SETS

from minibert import ConfigError, CrossEncoder, TruncationWarning
from minibert.batch import CrossEncoderScorer
from minibert.cli import main
from minibert.runtime import runner
from minibert.runtime.load import load_config, load_tokenizer
from minibert.runtime.long_passages import Windows, aggregate, bounds, cut_windows

GOLDENS = Path(__file__).parent / "fixtures" / "goldens"
TINY = GOLDENS / "tiny-l1"
MINILM = Path(__file__).resolve().parent.parent / "weights" / "all-MiniLM-L6-v2"
WORDS = ["the", "a", "of", "and", "to", "in", "is", "what", "how", "city", "capital", "paris", "france",
         "berlin", "germany", "cat", "dog", "sat", "on", "mat", "cheese", "moon", "sun", "river", "fish",
         "bird", "tree", "water", "blue", "green", "red", "big", "small", "fast", "slow"]
QUERY = "what is the capital of france"


def text(n_words: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    words = list(rng.choice(WORDS, n_words))
    for i in range(7, n_words, 11):
        words[i] += "."   # some punctuation: tokens that are not whole words
    return " ".join(words)


# Passages of 1 to about 10 windows of tiny-l1 (48 tokens: 37 beside QUERY), a duplicate, an empty one,
# and a query of more than half of max_length (longest_first then cuts the query too).
PAIRS = [(QUERY, text(n, seed)) for seed, n in enumerate((5, 30, 60, 120, 200, 300, 20))] + [
    (QUERY, text(120, 3)), (QUERY, ""), (text(40, 50), text(90, 51)), (text(40, 52), "paris")]

_models = {}


def model(ops="numpy", name="tiny-l1") -> CrossEncoder:
    if (ops, name) not in _models:
        _models[ops, name] = CrossEncoder(GOLDENS / name, ops=ops)
    return _models[ops, name]


@pytest.fixture(autouse=True)
def _quiet_truncation():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        yield


# ---------------------------------------------------------------------------------------------
# Where windows are


def test_windows_start_at_zero_share_the_stride_and_reach_the_end():
    assert bounds(10, 37, 8).tolist() == [[0, 10]]                       # fits: one window
    assert bounds(37, 37, 8).tolist() == [[0, 37]]
    assert bounds(38, 37, 8).tolist() == [[0, 37], [29, 38]]            # the last one may be shorter
    assert bounds(100, 37, 8).tolist() == [[0, 37], [29, 66], [58, 95], [87, 100]]
    assert bounds(100, 37, 0).tolist() == [[0, 37], [37, 74], [74, 100]]
    assert bounds(100, 37, 30).tolist() == bounds(100, 37, 18).tolist()  # the overlap is at most room // 2
    assert bounds(5, 0, 8).tolist() == [[0, 0]]                         # no room beside the query
    for n, room, stride in [(1000, 37, 8), (999, 40, 19), (123, 7, 3)]:
        found = bounds(n, room, stride)
        assert found[0, 0] == 0 and found[-1, 1] == n and (found[:, 1] - found[:, 0] <= room).all()
        assert (found[1:, 0] == found[:-1, 1] - min(stride, room // 2)).all()
        assert len(found) <= 2 * n / room + 1


def test_aggregate_takes_the_best_the_first_or_the_mean_of_each_passages_windows():
    logits = np.array([1, 3, 3, 2, 5, -1, -2], dtype=np.float32)     # windows of 3 passages: 4, 1, 2
    counts = np.array([4, 1, 2])
    scores, best = aggregate(logits, counts, "max")
    assert scores.tolist() == [3, 5, -1] and best.tolist() == [1, 0, 0]   # the first of equals
    scores, best = aggregate(logits, counts, "first")
    assert scores.tolist() == [1, 5, -1] and best.tolist() == [0, 0, 0]
    scores, best = aggregate(logits, counts, "mean")
    assert scores.dtype == np.float32 and scores.tolist() == [2.25, 5, -1.5] and best.tolist() == [1, 0, 0]


@pytest.mark.parametrize("name, max_length", [("tiny-l1", 48), ("roberta-bpe", 40), ("xlmr-unigram", 40),
                                              ("deberta-v3", 40), ("modernbert-cls", 40), ("distilbert-gelu", 30)])
def test_window_zero_is_the_truncated_pair_and_the_windows_tile_the_passage(name, max_length):
    """For each tokenizer family: window 0's ids and type ids are encode_pairs' (truncation) exactly, every
    window pair fits max_length, the windows' passage tokens are the passage's untruncated tokens, and each
    window's span is where its tokens are in the passage."""
    tokenizer = load_tokenizer(GOLDENS / name, load_config(GOLDENS / name), max_length)
    whole = tokenizer._untruncated()
    after = len(tokenizer._template(2)[0][-1][0])   # the special tokens after the passage
    longer = [(QUERY, "Paris, the CAPITAL of  France!\n" * 20), (QUERY, text(1000, 60)),  # past char_cap:
              (text(1000, 61), text(1000, 62)), (text(1200, 63), "paris")]               # sides cut first
    for query, passage in PAIRS + longer:
        windows = cut_windows(tokenizer, query, passage, 8)
        ids, type_ids = windows.tokens(tokenizer, 0)
        want_ids, want_types = tokenizer.encode_pairs([(query, passage)])[0]
        assert ids.tolist() == want_ids.tolist() and type_ids.tolist() == want_types.tolist(), (name, query, passage)
        passage_tokens = whole.encode(passage, add_special_tokens=False)
        assert windows.passage_ids.tolist() == passage_tokens.ids
        for w, (start, end) in enumerate(windows.bounds):
            ids, type_ids = windows.tokens(tokenizer, w)
            assert len(ids) == len(type_ids) <= max_length
            assert ids[len(ids) - (end - start) - after:len(ids) - after].tolist() == passage_tokens.ids[start:end]
            if end > start:
                assert windows.spans[w].tolist() == [passage_tokens.offsets[start][0], passage_tokens.offsets[end - 1][1]]
        assert windows.bounds[0, 0] == 0 and windows.bounds[-1, 1] == len(passage_tokens.ids)


def test_passage_windows_are_the_windows_characters_and_lengths():
    """Each window's span holds exactly its tokens' characters (WordPiece's '##' aside), and overlaps the next."""
    ce = model()
    passage = text(200, 4)
    found = ce.passage_windows(QUERY, passage, stride=8)
    windows = cut_windows(ce.tokenizer, QUERY, passage, 8)
    assert len(found) == len(windows) >= 3
    assert all(w["tokens"] == 48 for w in found[:-1]) and found[-1]["tokens"] <= 48
    assert found[0]["span"][0] == 0 and found[-1]["span"][1] == len(passage)
    for w, (start, end) in enumerate(windows.bounds):
        first, last = found[w]["span"]
        pieces = [ce.tokenizer.tokenizer.id_to_token(int(i)) for i in windows.passage_ids[start:end]]
        assert "".join(piece.removeprefix("##") for piece in pieces) == passage[first:last].replace(" ", "")
        if w + 1 < len(found):
            assert found[w + 1]["span"][0] < last
    short = ce.passage_windows(QUERY, "the moon")
    assert short == [{"span": (0, 8), "tokens": len(ce.tokenizer.encode_pairs([(QUERY, "the moon")])[0][0])}]


# ---------------------------------------------------------------------------------------------
# Scores


@pytest.mark.parametrize("ops", OP_SETS)
def test_first_is_truncate_bit_for_bit_and_max_is_never_below(ops):
    ce = model(ops)
    truncate = ce.predict(PAIRS)
    first = ce.predict(PAIRS, long_passages="first", stride=8)
    assert first.dtype == np.float32 and first.tobytes() == truncate.tobytes()
    best = ce.predict(PAIRS, long_passages="max", stride=8)
    assert (best >= truncate).all()
    assert (best > truncate).sum() >= 3            # later windows do score higher: the test can tell
    mean = ce.predict(PAIRS, long_passages="mean", stride=8)
    single = [i for i, (q, p) in enumerate(PAIRS) if len(ce.passage_windows(q, p, stride=8)) == 1]
    assert {0, 8, 10} <= set(single)
    for scores in (best, mean):
        assert scores[single].tobytes() == truncate[single].tobytes()
    assert best[3] == best[7] and mean[3] == mean[7]   # a repeated pair: the same score
    sigmoid = ce.predict(PAIRS, long_passages="max", stride=8, activation="sigmoid")
    np.testing.assert_allclose(sigmoid, 1 / (1 + np.exp(-best.astype(np.float64))), rtol=1e-6)


@pytest.mark.parametrize("name", ["tiny-l1", "roberta-bpe"])
def test_each_window_scores_as_transformers_scores_its_ids(name):
    """transformers' model on each window's token ids: max, first and mean of those logits are minibert's scores,
    and rank names the best window and its characters."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(GOLDENS / name, dtype=torch.float32).eval()
    ce = CrossEncoder(GOLDENS / name, max_length=40)
    documents = [text(n, 100 + n) for n in (150, 70, 12)]
    expected = {"max": [], "first": [], "mean": [], "window": []}
    for document in documents:
        windows = cut_windows(ce.tokenizer, QUERY, document, 8)
        logits = []
        for w in range(len(windows)):
            ids, type_ids = windows.tokens(ce.tokenizer, w)
            inputs = {"input_ids": torch.tensor(ids[None])}
            if ce.tokenizer.token_types:
                inputs["token_type_ids"] = torch.tensor(type_ids[None])
            with torch.no_grad():
                logits.append(float(hf(**inputs).logits[0, 0]))
        expected["max"].append(max(logits))
        expected["first"].append(logits[0])
        expected["mean"].append(np.mean(logits))
        expected["window"].append(int(np.argmax(logits)))
    assert len(cut_windows(ce.tokenizer, QUERY, documents[0], 8)) >= 4
    for policy in ("max", "first", "mean"):
        got = ce.predict([(QUERY, d) for d in documents], long_passages=policy, stride=8)
        np.testing.assert_allclose(got, expected[policy], atol=2e-5, rtol=1e-5, err_msg=policy)
    for hit in ce.rank(QUERY, documents, long_passages="max", stride=8, return_documents=True):
        i = hit["corpus_id"]
        windows = cut_windows(ce.tokenizer, QUERY, documents[i], 8)
        assert hit["window"] == expected["window"][i] and hit["windows"] == len(windows)
        assert hit["span"] == tuple(windows.spans[hit["window"]])
        assert hit["text"] == documents[i]


def test_rank_with_first_names_window_zero():
    ce = model()
    documents = [text(200, 7), "the moon"]
    hits = ce.rank(QUERY, documents, long_passages="first", stride=8)
    assert [set(hit) for hit in hits] == [{"corpus_id", "score", "window", "span", "windows"}] * 2
    for hit in hits:
        found = ce.passage_windows(QUERY, documents[hit["corpus_id"]], stride=8)
        assert hit["window"] == 0 and hit["span"] == found[0]["span"] and hit["windows"] == len(found)
    assert min(hit["windows"] for hit in hits) == 1 and max(hit["windows"] for hit in hits) >= 10
    assert set(ce.rank(QUERY, documents)[0]) == {"corpus_id", "score"}   # truncate: sentence-transformers' keys


def test_windows_are_cut_the_same_whatever_the_batch():
    ce = model()
    document = text(300, 9)
    alone = ce.rank(QUERY, [document], long_passages="max", stride=8)[0]
    others = [text(n, 200 + n) for n in range(5, 400, 37)]
    for batch_size, max_batch_tokens in [(1, 48), (7, 200), (64, 16384)]:
        ce2 = CrossEncoder(TINY, max_batch_tokens=max_batch_tokens)
        hits = ce2.rank(QUERY, others[:3] + [document] + others[3:], long_passages="max", stride=8,
                        batch_size=batch_size)
        hit = next(h for h in hits if h["corpus_id"] == 3)
        assert (hit["window"], hit["span"], hit["windows"]) == (alone["window"], alone["span"], alone["windows"])
        assert abs(hit["score"] - alone["score"]) <= 1e-5


def test_predict_iter_streams_windows_as_predict_scores_them():
    ce = model()
    got = np.array(list(ce.predict_iter((pair for pair in PAIRS), long_passages="mean", stride=5)))
    assert got.tobytes() == ce.predict(PAIRS, long_passages="mean", stride=5).tobytes()
    got = list(ce.predict_iter(iter(PAIRS), long_passages="max", stride=8))
    assert np.array_equal(got, ce.predict(PAIRS, long_passages="max", stride=8))


def test_a_1mb_document_streams_in_bounded_passes(monkeypatch):
    """A 1 MB passage through predict_iter: every pass within max_batch_tokens, and a window's ids built only
    when its chunk is tokenized (at most TOKENIZE_CHUNK windows wait for their pass). The model's forward pass
    is replaced by a cheap function of the ids (the numbers are tested above; here, the flow of ~10,000 windows)."""
    ce = CrossEncoder(TINY, max_length=64, max_batch_tokens=4096, threads=1)   # one stream: each pass is scored
    # before the next chunk is tokenized
    document = (text(2000, 11) + " ") * 103
    assert len(document) >= 1_000_000
    built, scored, waiting, passes, cut = [0], [0], [0], [], {}
    tokens = Windows.tokens

    def counting_tokens(self, tokenizer, window):
        built[0] += 1
        waiting[0] = max(waiting[0], built[0] - scored[0])
        if len(self.passage_ids) > 100_000:
            cut["document"] = self
        return tokens(self, tokenizer, window)

    def counting_forward(batch, ops):   # [B, 1]: each sequence's mean token id
        passes.append(len(batch.input_ids))
        scored[0] += len(batch.offsets) - 1
        sums = np.add.reduceat(batch.input_ids.astype(np.float64), batch.offsets[:-1])
        return (sums / np.diff(batch.offsets)).astype(np.float32)[:, None]

    monkeypatch.setattr(Windows, "tokens", counting_tokens)
    monkeypatch.setattr(ce, "_forward", counting_forward)
    pairs = [(QUERY, "short"), (QUERY, document), (QUERY, "paris")]
    got = list(ce.predict_iter(iter(pairs), long_passages="max", stride=0, batch_size=128))
    windows = cut["document"]
    assert len(windows) > 5000 and windows.bounds[-1, 1] == len(windows.passage_ids) > 200_000
    assert built[0] == scored[0] == len(windows) + 2
    assert max(passes) <= 4096
    assert waiting[0] <= runner.TOKENIZE_CHUNK
    truncate = ce.predict(pairs)   # the first windows ran in truncate's passes
    assert got[0] == truncate[0] and got[1] > truncate[1] and got[2] == truncate[2]


# ---------------------------------------------------------------------------------------------
# Errors


def test_a_multi_label_model_is_refused_with_a_window_policy():
    ce3 = model(name="tiny-l3")
    with pytest.raises(ConfigError, match="long_passages='max' needs a single-logit relevance model; this one has "
                                          "num_labels=3"):
        ce3.predict([("a", "b")], long_passages="max")
    assert ce3.predict([("a", "b")], long_passages="truncate").shape == (1, 3)


@pytest.mark.parametrize("options, message", [
    ({"long_passages": "longest"}, "long_passages must be one of"),
    ({"long_passages": None}, "long_passages must be one of"),
    ({"long_passages": "max", "stride": -1}, "stride must be an integer >= 0"),
    ({"long_passages": "max", "stride": 2.5}, "stride must be an integer >= 0"),
    ({"long_passages": "max", "stride": True}, "stride must be an integer >= 0"),
])
def test_bad_options(options, message):
    ce = model()
    for call in (lambda: ce.predict(PAIRS[:1], **options), lambda: ce.predict_iter(PAIRS[:1], **options),
                 lambda: ce.rank(QUERY, ["a"], **options)):
        with pytest.raises(ConfigError, match=message):
            call()


# ---------------------------------------------------------------------------------------------
# The command line and the batch scorer


def test_cli_score_and_rank_take_the_options(tmp_path, capsys):
    ce = CrossEncoder(TINY)   # the default op set, as the command's
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("".join(f"{q}\t{p}\n" for q, p in PAIRS[:6]), encoding="utf-8")
    assert main(["score", "-m", str(TINY), str(pairs), "--long-passages", "max", "--stride", "5"]) == 0
    out = capsys.readouterr().out.split()
    np.testing.assert_allclose(np.array(out, dtype=np.float32), ce.predict(PAIRS[:6], long_passages="max", stride=5),
                               rtol=0, atol=1e-6)

    passages = tmp_path / "passages.txt"
    passages.write_text("".join(p + "\n" for _, p in PAIRS[1:6]), encoding="utf-8")
    assert main(["rank", "-m", str(TINY), "-q", QUERY, str(passages), "--json", "--long-passages", "max"]) == 0
    hits = json.loads(capsys.readouterr().out)
    want = ce.rank(QUERY, [p for _, p in PAIRS[1:6]], long_passages="max")
    assert [h["corpus_id"] for h in hits] == [w["corpus_id"] for w in want]
    assert [(h["window"], tuple(h["span"]), h["windows"]) for h in hits] == [
        (w["window"], w["span"], w["windows"]) for w in want]
    assert max(h["windows"] for h in hits) >= 3


@pytest.mark.parametrize("argv, message", [
    (["score", "-m", GOLDENS / "tiny-l3", "--long-passages", "max"], "needs a single-logit relevance model"),
    (["rank", "-m", MINILM, "-q", "q", "--long-passages", "max"], "is a sentence encoder"),
    (["score", "-m", TINY, "--long-passages", "max", "--stride", "-3"], "expected an integer >= 0"),
    (["score", "-m", TINY, "--long-passages", "longest"], "invalid choice"),
])
def test_cli_errors_are_one_line_and_exit_2(argv, message, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"a passage\n"), encoding="utf-8"))
    status = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert status == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_batch_scorer_takes_the_options_and_pickles_them(tmp_path):
    pytest.importorskip("pyarrow")
    batch = {"query": np.array([q for q, _ in PAIRS]), "passage": np.array([p for _, p in PAIRS])}
    scorer = CrossEncoderScorer(str(TINY), long_passages="max", stride=8)
    want = CrossEncoder(TINY).predict(PAIRS, long_passages="max", stride=8)   # the default op set, as the scorer's
    truncate = CrossEncoder(TINY).predict(PAIRS)
    assert (np.abs(want - truncate) > 1e-3).sum() >= 3
    np.testing.assert_allclose(scorer(batch)["score"], want, rtol=0, atol=1e-6)
    np.testing.assert_allclose(pickle.loads(pickle.dumps(scorer))(batch)["score"], want, rtol=0, atol=1e-6)
    with pytest.raises(ConfigError, match="num_labels=3"):
        CrossEncoderScorer(str(GOLDENS / "tiny-l3"), long_passages="mean")

    rows = tmp_path / "in.jsonl"
    rows.write_text("".join(json.dumps({"query": q, "passage": p}) + "\n" for q, p in PAIRS), encoding="utf-8")
    assert main(["batch", "-m", str(TINY), "-i", str(rows), "-o", str(tmp_path / "out"), "--long-passages", "max",
                 "--stride", "8"]) == 0
    import pyarrow.parquet as pq
    np.testing.assert_allclose(pq.read_table(tmp_path / "out").column("score").to_numpy(), want, rtol=0, atol=1e-6)
