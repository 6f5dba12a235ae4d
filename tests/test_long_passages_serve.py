"""The server with a window policy (create_app's long_passages / stride, `minibert serve --long-passages`): the
rerank routes score long passages whole, as CrossEncoder.predict does. In-process, through Starlette's
TestClient (the HTTP server itself is tests/test_serve.py's)."""

import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("httpx")   # the serve-test extra; CI installs it
pytest.importorskip("starlette")

from starlette.testclient import TestClient

import minibert.serve
from minibert import ConfigError, CrossEncoder, SentenceEncoder, TruncationWarning
from minibert.cli import main
from minibert.serve import create_app

GOLDENS = Path(__file__).parent / "fixtures" / "goldens"
MINILM = Path(__file__).resolve().parent.parent / "weights" / "all-MiniLM-L6-v2"
QUERY = "what is the capital of france"
WORDS = ["the", "capital", "of", "france", "is", "paris", "and", "berlin", "is", "in", "germany", "the", "cat", "sat",
         "on", "the", "mat"]
LONG = " ".join(WORDS[i % len(WORDS)] for i in range(300))   # about 10 windows of tiny-l1's 48 tokens
DOCUMENTS = [LONG, "paris is the capital of france", LONG[:400], ""]


@pytest.fixture(scope="module")
def ce():
    return CrossEncoder(GOLDENS / "tiny-l1")


@pytest.fixture(scope="module")
def client(ce):
    with TestClient(create_app(ce, long_passages="max", stride=8)) as client:
        yield client


def sigmoid(x):
    return 1 / (1 + np.exp(-np.asarray(x, dtype=np.float64)))


def test_rerank_routes_score_long_passages_whole(client, ce):
    pairs = [(QUERY, d) for d in DOCUMENTS]
    logits = ce.predict(pairs, long_passages="max", stride=8)
    assert not np.allclose(logits, ce.predict(pairs))   # the windows change the scores here
    tei = client.post("/rerank", json={"query": QUERY, "texts": DOCUMENTS, "raw_scores": True}).json()
    assert max(abs(hit["score"] - logits[hit["index"]]) for hit in tei) <= 1e-5
    tei = client.post("/rerank", json={"query": QUERY, "texts": DOCUMENTS}).json()
    assert max(abs(hit["score"] - sigmoid(logits)[hit["index"]]) for hit in tei) <= 1e-5
    tokens = sum(w["tokens"] for d in DOCUMENTS for w in ce.passage_windows(QUERY, d, stride=8))
    for route in ("/v1/rerank", "/v2/rerank"):
        r = client.post(route, json={"query": QUERY, "documents": DOCUMENTS}).json()
        assert max(abs(hit["relevance_score"] - sigmoid(logits)[hit["index"]]) for hit in r["results"]) <= 1e-5
        assert r["usage"]["total_tokens"] == tokens   # every window's tokens


def test_truncate_false_refuses_only_a_query_that_is_cut(client):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        r = client.post("/rerank", json={"query": QUERY, "texts": [LONG], "truncate": False})
        assert r.status_code == 200, r.text                # the passage is scored whole: nothing is cut
        r = client.post("/rerank", json={"query": LONG, "texts": ["paris", LONG], "truncate": False})
    assert r.status_code == 413 and "`texts[0]` is longer" in r.json()["error"]


def test_a_window_policy_needs_a_reranker():
    with pytest.raises(ConfigError, match="num_labels=3"):
        create_app(GOLDENS / "tiny-l3", long_passages="max")
    with pytest.raises(ConfigError, match="sentence encoder"):
        create_app(SentenceEncoder(MINILM), long_passages="first")
    with pytest.raises(ConfigError, match="stride must be"):
        create_app(GOLDENS / "tiny-l1", long_passages="max", stride=-1)


def test_serve_command_passes_the_options(monkeypatch):
    got = {}
    monkeypatch.setattr(minibert.serve, "serve", lambda model, **options: got.update(options))
    assert main(["serve", "-m", str(GOLDENS / "tiny-l1"), "--long-passages", "mean", "--stride", "16"]) == 0
    assert (got["long_passages"], got["stride"]) == ("mean", 16)
    assert main(["serve", "-m", str(GOLDENS / "tiny-l1")]) == 0
    assert (got["long_passages"], got["stride"]) == ("truncate", 128)
