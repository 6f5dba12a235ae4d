"""rank and score with a decoder reranker (the qwen3-reranker golden: a Qwen3ForCausalLM scored by LogitScore
through its chat template): CrossEncoder.rank, `minibert rank` and `minibert score` give predict's scores, in
predict's order. (serve: tests/test_serve_decoder.py; Ray batch: tests/test_batch.py.)"""

import json
from pathlib import Path

import numpy as np
import pytest
from test_explain import run_cli

from minibert import CrossEncoder

GOLDEN = Path(__file__).parent / "fixtures" / "goldens" / "qwen3-reranker"
QUERY = "how do I define a function?"
PASSAGES = ["A function definition defines a user-defined function object.",
            "The for statement is used to iterate over the elements of a sequence.",
            "", "yes", ("Functions are defined with the def keyword. " * 20).strip()]   # the last cut at max_length


@pytest.fixture(scope="module")
def expected():
    scores = CrossEncoder(GOLDEN).predict([(QUERY, p) for p in PASSAGES])
    assert len(set(np.round(scores, 4))) == len(PASSAGES)   # an order to get right, no near ties
    return scores


def test_rank_is_predicts_order_and_scores(expected):
    hits = CrossEncoder(GOLDEN).rank(QUERY, PASSAGES, return_documents=True)
    assert [h["corpus_id"] for h in hits] == np.argsort(-expected, kind="stable").tolist()
    np.testing.assert_allclose([h["score"] for h in hits], np.sort(expected)[::-1], rtol=0, atol=1e-6)
    assert [h["text"] for h in hits] == [PASSAGES[h["corpus_id"]] for h in hits]


def test_rank_and_score_commands(expected, tmp_path):
    passages = tmp_path / "passages.txt"
    passages.write_text("\n".join(PASSAGES) + "\n", encoding="utf-8")
    status, out, err = run_cli("rank", "--model", GOLDEN, "--query", QUERY, passages, "--json")
    assert status == 0, err
    hits = json.loads(out)
    assert [h["corpus_id"] for h in hits] == np.argsort(-expected, kind="stable").tolist()
    np.testing.assert_allclose([h["score"] for h in hits], np.sort(expected)[::-1], rtol=0, atol=1e-5)

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"query": QUERY, "passage": p}) + "\n" for p in PASSAGES), encoding="utf-8")
    status, out, err = run_cli("score", "--model", GOLDEN, pairs)
    assert status == 0, err
    np.testing.assert_allclose([float(line) for line in out.split()], expected, rtol=0, atol=1e-5)
