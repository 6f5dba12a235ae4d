"""`minibert agree`: the statistics (against scipy.stats and scikit-learn, and by hand), and the command against
a scores file, an ONNX graph and a live `minibert serve` (TEI and Cohere APIs), its numbers checked by hand."""

import contextlib
import importlib.util
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import ndcg_score

from minibert import CrossEncoder
from minibert.cli import format_score, main
from minibert.oracle import agree

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "tests" / "fixtures" / "goldens" / "tiny-l1"
QUERIES = ("how do I catch an exception", "what does the with statement do", "what is a generator function")
PASSAGES = ("The try statement specifies exception handlers for a group of statements.",
            "The with statement wraps a block with methods defined by a context manager.",
            "A generator function returns an iterator; its body runs on each call of next.",
            "The pass statement is a null operation: nothing happens when it runs.",
            "An except clause names the exceptions it handles.",
            "Lambda expressions create anonymous functions.",
            "The yield expression is used when defining a generator function.",
            "Context managers define __enter__ and __exit__.")
PAIRS = [(q, p) for q in QUERIES for p in PASSAGES]


def run_cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in argv])
    return status, out.getvalue(), err.getvalue()


def agree_json(*argv):
    status, out, err = run_cli("agree", "--model", MODEL, "--json", *argv)
    assert status in (0, 1), err
    return status, json.loads(out)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The pairs file (JSON lines with query_id / doc_id) and minibert's own scores, as `minibert score` prints."""
    tmp = tmp_path_factory.mktemp("agree")
    pairs = tmp / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"query": q, "passage": p, "query_id": f"q{i // len(PASSAGES)}",
                                         "doc_id": f"d{i % len(PASSAGES)}"}) + "\n" for i, (q, p) in enumerate(PAIRS)),
                     encoding="utf-8")
    status, out, err = run_cli("score", "--model", MODEL, pairs)
    assert status == 0, err
    scores = tmp / "scores.txt"
    scores.write_text(out, encoding="utf-8")
    return tmp, pairs, scores


@pytest.fixture(scope="module")
def reference():
    return CrossEncoder(MODEL).predict(PAIRS).astype(np.float64)   # [24] raw logits


# ---------------------------------------------------------------------------------------------
# the statistics


@pytest.mark.parametrize("n", [2, 3, 7, 60, 301])
def test_statistics_match_scipy_and_scikit_learn(n):
    rng = np.random.default_rng(n)
    for x, y in ((rng.normal(size=n), rng.normal(size=n)),                       # no ties
                 (rng.integers(0, 4, n).astype(float), rng.integers(0, 3, n).astype(float)),   # many ties
                 (rng.normal(size=n), rng.normal(size=n) + np.arange(n))):
        np.testing.assert_allclose(agree.ranks(x), stats.rankdata(x), rtol=0, atol=1e-12)
        expected = [stats.kendalltau(x, y).statistic, stats.spearmanr(x, y).statistic]   # tau-b
        got = [agree.kendall_tau_b(x, y, block=5), agree.spearman(x, y)]
        for e, g in zip(expected, got):
            assert (math.isnan(e) and math.isnan(g)) or abs(e - g) <= 1e-12, (x, y, expected, got)
    gains, scores = rng.random(n), rng.normal(size=n)                # distinct scores: no tie-breaking in play
    for k in (1, 3, 10):
        assert abs(agree.ndcg(gains, scores, k) - ndcg_score([gains], [scores], k=k)) <= 1e-12
    assert math.isnan(agree.kendall_tau_b(np.ones(n), rng.normal(size=n)))
    assert math.isnan(agree.spearman(np.ones(n), rng.normal(size=n)))


def test_statistics_by_hand():
    """Four passages, the backend swaps the second and third: 1 discordant pair of 6."""
    r, t = np.array([3.0, 1.0, 2.0, -1.0]), np.array([2.9, 2.1, 1.0, -1.2])
    assert agree.kendall_tau_b(r, t) == pytest.approx((5 - 1) / 6)
    assert agree.spearman(r, t) == pytest.approx(1 - 6 * (0 + 1 + 1 + 0) / (4 * (16 - 1)))
    gains = agree.reference_gains(r)                                  # (r - min) / (max - min)
    np.testing.assert_allclose(gains, [1.0, 0.5, 0.75, 0.0])
    dcg = 1 / math.log2(2) + 0.5 / math.log2(3) + 0.75 / math.log2(4)          # their order: 0, 1, 2, 3
    ideal = 1 / math.log2(2) + 0.75 / math.log2(3) + 0.5 / math.log2(4)        # the reference's: 0, 2, 1, 3
    assert agree.ndcg(gains, t) == pytest.approx(dcg / ideal)
    assert agree.ndcg(gains, t, k=1) == 1.0
    assert agree.top1_agreement(r, t) == 1.0 and agree.top_k_overlap(r, t, 2) == 0.5
    assert agree.mrr(np.array([0, 0, 2, 1])) == pytest.approx(1 / 3) and agree.mrr(np.zeros(11)) == 0.0
    report = agree.agree(r, t, agree.group_pairs(["q"] * 4), "logit")
    assert (report["max_abs_diff"], report["mean_abs_diff"]) == (pytest.approx(1.1), pytest.approx(0.6))
    ties = np.array([1.0, 1.0, 0.0])                                  # ties: input order, as `minibert rank`
    assert list(agree.order(ties)) == [0, 1, 2]


# ---------------------------------------------------------------------------------------------
# the command against a scores file


def test_minibert_against_its_own_scores_agrees_exactly(files):
    _, pairs, scores = files
    status, report = agree_json("--pairs", pairs, "--scores", scores, "--min-tau", "0.99", "--min-ndcg", "0.99")
    assert status == 0 and report["ok"] and report["verdict"].startswith("verdict: PASS")
    assert (report["pairs"], report["queries"], report["space"]) == (24, 3, "logit")
    assert report["max_abs_diff"] <= 1e-6    # the same model: float32 rounding (score streams, predict batches)
    for key in ("kendall_tau", "spearman", "top1_agreement", "top_k_overlap", "ndcg_at_10"):
        assert report[key] == 1.0, key
    assert [q["pairs"] for q in report["per_query"]] == [8, 8, 8] and report["rankings_identical"] == 3


def test_a_swap_and_a_shift_give_the_hand_computed_numbers(files, reference):
    """Query 0: its best and second-best passages trade scores; query 2: every score + 0.5 (order kept)."""
    tmp, pairs, _ = files
    theirs = reference.copy()
    q0 = np.arange(8)
    best, second = q0[np.argsort(-reference[q0], kind="stable")[:2]]
    theirs[[best, second]] = reference[[second, best]]
    theirs[16:] += 0.5
    path = tmp / "swapped.txt"
    path.write_text("".join(f"{format_score(np.float32(s))}\n" for s in theirs), encoding="utf-8")
    theirs = np.array([float(line) for line in path.read_text().split()])    # as the command reads them
    status, report = agree_json("--pairs", pairs, "--scores", path, "--min-tau", "0.99")
    assert status == 1 and not report["ok"] and "FAIL: mean Kendall tau" in report["verdict"]
    q = report["per_query"]
    n0 = 8 * 7 / 2
    assert q[0]["kendall_tau"] == pytest.approx((n0 - 2) / n0)              # one discordant pair of 28
    assert q[0]["spearman"] == pytest.approx(1 - 6 * 2 / (8 * 63))          # two ranks off by one
    assert q[0]["top1_agreement"] == 0.0 and q[0]["top_k_overlap"] == 1.0 and not q[0]["ranking_identical"]
    gains = (reference[q0] - reference[q0].min()) / (reference[q0].max() - reference[q0].min())
    by_rank = np.sort(gains)[::-1]
    swapped = by_rank.copy()
    swapped[[0, 1]] = swapped[[1, 0]]
    discount = np.log2(np.arange(2, 10))
    assert q[0]["ndcg_at_10"] == pytest.approx((swapped / discount).sum() / (by_rank / discount).sum())
    assert q[0]["max_abs_diff"] == pytest.approx(abs(reference[best] - reference[second]), abs=1e-6)
    assert q[2]["max_abs_diff"] == pytest.approx(0.5, abs=1e-6) and q[2]["kendall_tau"] == 1.0
    assert q[1]["max_abs_diff"] <= 1e-6 and q[1]["ranking_identical"]
    assert report["kendall_tau"] == pytest.approx((q[0]["kendall_tau"] + 2) / 3)
    assert report["top1_agreement"] == pytest.approx(2 / 3)
    assert report["max_abs_diff"] == pytest.approx(np.abs(theirs - reference).max(), abs=1e-6)
    assert report["mean_abs_diff"] == pytest.approx(np.abs(theirs - reference).mean(), abs=1e-6)


def test_sigmoid_scores_are_compared_in_sigmoid_space(files, reference):
    tmp, pairs, _ = files
    path = tmp / "sigmoid.txt"
    status, out, _ = run_cli("score", "--model", MODEL, "--activation", "sigmoid", pairs)
    path.write_text(out, encoding="utf-8")
    status, report = agree_json("--pairs", pairs, "--scores", path)
    assert status == 0 and report["space"] == "sigmoid" and report["max_abs_diff"] <= 1e-6
    assert report["kendall_tau"] == 1.0
    status, report = agree_json("--pairs", pairs, "--scores", path, "--activation", "none")
    assert report["space"] == "logit" and report["max_abs_diff"] > 0.1          # forced: raw logits against sigmoids
    status, out, _ = run_cli("agree", "--model", MODEL, "--pairs", pairs, "--scores", path)
    assert "compared as sigmoid" in out and out.splitlines()[-1].startswith("verdict: ") and status == 0


def test_qrels_give_each_sides_ndcg_and_mrr(files, reference):
    tmp, pairs, scores = files
    qrels = tmp / "qrels.txt"
    # q0: d3 relevant (2), d5 (1), d9 judged but not among the pairs (1); q1: nothing relevant; q2: d0 (1)
    qrels.write_text("q0 0 d3 2\nq0 0 d5 1\nq0 0 d9 1\nq1 0 d1 0\nq2 0 d0 1\n", encoding="utf-8")
    status, report = agree_json("--pairs", pairs, "--scores", scores, "--qrels", qrels)
    assert status == 0 and report["qrels"]["queries"] == 2
    q0 = reference[:8]
    rank = {d: int(np.flatnonzero(np.argsort(-q0, kind="stable") == d)[0]) + 1 for d in (3, 5)}
    dcg = 2 / math.log2(rank[3] + 1) + 1 / math.log2(rank[5] + 1)
    ideal = 2 + 1 / math.log2(3) + 1 / math.log2(4)
    first = report["per_query"][0]
    assert first["reference_ndcg_at_10"] == pytest.approx(dcg / ideal) == first["backend_ndcg_at_10"]
    assert first["reference_mrr_at_10"] == pytest.approx(1 / min(rank.values()))
    assert report["per_query"][1]["judged"] is False
    plain = tmp / "plain.tsv"
    plain.write_text("".join(f"{q}\t{p}\n" for q, p in PAIRS), encoding="utf-8")
    status, _, err = run_cli("agree", "--model", MODEL, "--pairs", plain, "--scores", scores, "--qrels", qrels)
    assert status == 2 and '--qrels needs JSON lines with "query_id" and "doc_id"' in err


def test_bad_scores_files_are_one_line_errors(files):
    tmp, pairs, scores = files
    short = tmp / "short.txt"
    short.write_text("".join(scores.read_text().splitlines(keepends=True)[:-1]))
    word = tmp / "word.txt"
    word.write_text("1.5\nhigh\n")
    for path, words in ((short, "23 scores for 24 pairs"), (word, "line 2: expected a number")):
        status, out, err = run_cli("agree", "--model", MODEL, "--pairs", pairs, "--scores", path)
        assert status == 2 and out == "" and words in err and len(err.splitlines()) == 1, err
    status, _, err = run_cli("agree", "--model", MODEL, "--pairs", pairs, "--scores", scores, "--onnx", "x.onnx")
    assert status == 2 and "not allowed with argument" in err
    status, _, err = run_cli("agree", "--model", MODEL.parent / "tiny-l3", "--pairs", pairs, "--scores", scores)
    assert status == 2 and "3 labels" in err


# ---------------------------------------------------------------------------------------------
# against an ONNX graph and a live server


def test_against_an_onnx_graph(files, tmp_path):
    spec = importlib.util.spec_from_file_location("export_onnx", ROOT / "tools" / "export_onnx.py")
    export_onnx = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(export_onnx)
    graph = export_onnx.export_model(MODEL, tmp_path / "model.onnx")
    _, pairs, _ = files
    status, report = agree_json("--pairs", pairs, "--onnx", graph, "--min-tau", "0.999", "--max-diff", "1e-5")
    assert status == 0, report
    assert report["space"] == "logit" and report["max_abs_diff"] <= 1e-5 and report["kendall_tau"] == 1.0
    assert report["ndcg_at_10"] == 1.0 and report["backend"] == f"ONNX graph {graph}"


@pytest.mark.parametrize("api,space", [("tei", "logit"), ("cohere", "sigmoid")])
def test_against_a_live_minibert_serve(files, tmp_path, api, space):
    pytest.importorskip("starlette")      # the serve extra; CI installs it
    from test_serve import Server

    _, pairs, _ = files
    server = Server(MODEL, "--max-client-batch-size", "3", tmp_path=tmp_path)
    try:
        status, report = agree_json("--pairs", pairs, "--url", server.url, "--api", api, "--min-tau", "0.999")
    finally:
        server.stop()
    assert " 413 " not in server.log()          # /info's limit was read, not found by trial
    assert status == 0, report
    assert report["space"] == space and report["max_abs_diff"] <= 1e-5 and report["kendall_tau"] == 1.0
    assert "9 requests of at most 3 texts, limit 3" in report["backend"]       # 3 queries x 8 passages, 3 at a time
