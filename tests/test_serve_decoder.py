"""minibert serve with a decoder reranker (the qwen3-reranker golden: a Qwen3ForCausalLM scored by LogitScore
through its chat template): what TEI cannot serve. The routes answer predict's scores; TEI's left truncation,
which would cut the template's head, is refused in one line."""

import httpx
import numpy as np
import pytest
from test_serve import GOLDENS, ThreadServer

from minibert import CrossEncoder
from minibert.serve import create_app

PASSAGES = ["A function definition defines a user-defined function object.",
            "The for statement is used to iterate over the elements of a sequence.",
            "Functions are defined with the def keyword. " * 20]   # cut at max_length, the template's tail kept
QUERY = "how do I define a function?"


@pytest.fixture(scope="module")
def served():
    ce = CrossEncoder(GOLDENS / "qwen3-reranker", ops="numpy")
    with ThreadServer(create_app(ce)) as server:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            yield ce, client


def test_rerank_and_cohere_answer_predicts_scores(served):
    ce, client = served
    raw = ce.predict([(QUERY, p) for p in PASSAGES])
    tei = client.post("/rerank", json={"query": QUERY, "texts": PASSAGES, "raw_scores": True})
    assert tei.status_code == 200, tei.text
    got = {r["index"]: r["score"] for r in tei.json()}
    np.testing.assert_allclose([got[i] for i in range(len(PASSAGES))], raw, atol=1e-6, rtol=1e-6)
    cohere = client.post("/v2/rerank", json={"model": "m", "query": QUERY, "documents": PASSAGES})
    assert cohere.status_code == 200, cohere.text
    scores = {r["index"]: r["relevance_score"] for r in cohere.json()["results"]}
    np.testing.assert_allclose([scores[i] for i in range(len(PASSAGES))], 1 / (1 + np.exp(-raw)), atol=1e-6)


def test_truncate_false_counts_the_whole_conversation(served):
    _, client = served
    short = client.post("/rerank", json={"query": QUERY, "texts": PASSAGES[:2], "truncate": False})
    assert short.status_code == 200, short.text
    long = client.post("/rerank", json={"query": QUERY, "texts": PASSAGES, "truncate": False})
    assert long.status_code == 413 and "texts[2]" in long.json()["error"], long.text


def test_left_truncation_is_refused(served):
    _, client = served
    r = client.post("/rerank", json={"query": QUERY, "texts": PASSAGES, "truncation_direction": "left"})
    assert r.status_code == 422 and "decoder reranker" in r.json()["error"], r.text


def test_long_passage_windows_are_refused_for_a_decoder():
    from minibert import ConfigError

    ce = CrossEncoder(GOLDENS / "qwen3-reranker", ops="numpy")
    with pytest.raises(ConfigError, match="not implemented for a decoder reranker"):
        ce.predict([(QUERY, PASSAGES[2])], long_passages="max")
    with pytest.raises(ConfigError, match="not implemented for a decoder reranker"):
        ce.passage_windows(QUERY, PASSAGES[2])
