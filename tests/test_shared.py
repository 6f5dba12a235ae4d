"""One pass on several cores (minibert/ops/shared.py): every shared op gives the base op's numbers, bit for
bit (a row of a product does not depend on the rows beside it, nor a head of attention on the other heads),
for both op sets; and a single pair scored on two cores is the pair scored on one."""

import threading
from pathlib import Path

import numpy as np
import pytest
from op_sets import OP_SETS
from threadpoolctl import threadpool_limits

from minibert import CrossEncoder
from minibert.ops import op_set
from minibert.ops import shared as shared_module
from minibert.ops.shared import MIN_PART_ELEMENTS, MIN_PART_ROWS, ranges, shared
from minibert.runtime import runner as runner_module
from minibert.runtime.runner import SHARED_MIN_TOKENS, Runner, blas_libraries

GOLDENS = Path(__file__).parent / "fixtures" / "goldens"


def test_ranges_cover_every_row_once():
    for n in (1, 2, 7, 64, 1000):
        for parts in (1, 2, 3, 8):
            got = ranges(n, parts)
            assert [i for a, b in got for i in range(a, b)] == list(range(n))
            assert len(got) == min(n, parts) and max(b - a for a, b in got) - min(b - a for a, b in got) <= 1


@pytest.mark.parametrize("ops", OP_SETS)
@pytest.mark.parametrize("rows", [1, 2 * MIN_PART_ROWS - 1, 2 * MIN_PART_ROWS, 301])
def test_products_split_by_rows_are_the_whole_product(ops, rows):
    base = op_set(ops)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((rows, 48), dtype=np.float32)
    w, b = rng.standard_normal((80, 48), dtype=np.float32), rng.standard_normal(80, dtype=np.float32)
    with threadpool_limits(1, user_api="blas"):
        for workers in (2, 3):
            split = shared(base, workers)
            np.testing.assert_array_equal(split.linear(x, w, b), base.linear(x, w, b))
            np.testing.assert_array_equal(split.linear(x, w, None), base.linear(x, w, None))
            np.testing.assert_array_equal(split.linear_gelu(x, w, b), base.linear_gelu(x, w, b))
            out = np.full((rows, 80), np.nan, np.float32)
            assert split.linear(x, w, b, out=out) is out
            np.testing.assert_array_equal(out, base.linear(x, w, b))


@pytest.mark.parametrize("ops", OP_SETS)
def test_row_ops_split_by_rows_are_the_whole_op(ops, monkeypatch):
    """LayerNorm (with a residual of every row, of one row, or none), GELU, the gates, rotary: split when a part has
    MIN_PART_ELEMENTS, each row the base op's."""
    base = op_set(ops)
    rng = np.random.default_rng(2)
    width, NH = 48, 4
    rows = 2 * MIN_PART_ELEMENTS // width + 5
    x, residual = (rng.standard_normal((rows, width), dtype=np.float32) for _ in range(2))
    w, b = rng.standard_normal(width, dtype=np.float32), rng.standard_normal(width, dtype=np.float32)
    h = rng.standard_normal((rows, 2 * width), dtype=np.float32)
    angles = rng.standard_normal((rows, width // NH // 2), dtype=np.float32)
    cos, sin = np.cos(angles), np.sin(angles)
    calls = {
        "layer_norm": lambda o: o.layer_norm(x, w, b, 1e-5),
        "add_layer_norm": lambda o: o.add_layer_norm(x, residual, w, b, 1e-5),
        "add_layer_norm, one row": lambda o: o.add_layer_norm(x, residual[:1], w, b, 1e-12),
        "rms_norm": lambda o: o.rms_norm(x, w, 1e-6),
        "gelu": lambda o: o.gelu(x),
        "geglu": lambda o: o.geglu(h),
        "swiglu": lambda o: o.swiglu(x, residual),
        "gelu_tanh_gate": lambda o: o.gelu_tanh_gate(x, residual),
        "apply_rotary": lambda o: o.apply_rotary(x, cos, sin, NH),
        "apply_rotary, strided": lambda o: o.apply_rotary(h[:, :width], cos, sin, NH),
    }
    parts = []
    monkeypatch.setattr(shared_module, "_run", lambda work, workers, run=shared_module._run: (
        parts.append(len(work)), run(work, workers))[1])
    for name, call in calls.items():
        np.testing.assert_array_equal(call(shared(base, 2)), call(base), err_msg=name)
    assert parts == [2] * len(calls)


@pytest.mark.parametrize("ops", OP_SETS)
@pytest.mark.parametrize("window, causal, kv_heads", [
    (None, False, None), (None, True, 2), (None, True, 1), (5, False, None), (200, True, None),
])
def test_attention_split_by_heads_is_the_whole_attention(ops, window, causal, kv_heads, monkeypatch):
    """Groups of whole key/value heads (or of query heads around a single key/value head), every mask, every
    query set (all, first, last): bit for bit the base op's context. (These pairs are far below
    MIN_PART_SCORES, under which attention is not split: lowered to split them.)"""
    monkeypatch.setattr(shared_module, "MIN_PART_SCORES", 0)
    base = op_set(ops)
    rng = np.random.default_rng(12)
    lengths, NH, HD = [150, 1, 67], 4, 8
    NKV = kv_heads or NH
    N = sum(lengths)
    q = rng.standard_normal((N, NH * HD), dtype=np.float32)
    k, v = (rng.standard_normal((N, NKV * HD), dtype=np.float32) for _ in range(2))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    mask = {"window": window, "causal": causal, "kv_heads": kv_heads}
    firsts, lasts = offsets[:-1], offsets[1:] - 1
    with threadpool_limits(1, user_api="blas"):
        for queries, which in ((q, {}), (q[firsts], {"first_only": True}), (q[lasts], {"last_only": True})):
            whole = base.attention(queries, k, v, offsets, NH, **mask, **which)
            for workers in (2, 3, 8):
                got = shared(base, workers).attention(queries, k, v, offsets, NH, **mask, **which)
                np.testing.assert_array_equal(got, whole, err_msg=f"workers={workers} {mask} {which}")


def test_a_short_pairs_attention_is_not_split(monkeypatch):
    parts = []
    monkeypatch.setattr(shared_module, "_run", lambda work, workers: parts.append(len(work)))
    rng = np.random.default_rng(3)
    q = k = v = rng.standard_normal((100, 4 * 8), dtype=np.float32)
    shared(op_set("numpy"), 2).attention(q, k, v, np.array([0, 100]), 4)   # 40,000 scores
    assert parts == []


def test_each_runs_every_item_once_on_the_threads_and_a_part_does_not_split_again():
    split = shared(op_set("numpy"), 2)
    seen, threads = [], set()
    inner = np.ones((4 * MIN_PART_ROWS, 8), np.float32)

    def item(i):
        seen.append(i)
        threads.add(threading.current_thread().name)
        split.linear(inner, np.eye(8, dtype=np.float32), None)   # within a part: serial, no deadlock
    split.each(item, range(9))
    assert sorted(seen) == list(range(9))
    assert len(threads) == 2
    split.each(item, [])
    assert shared(op_set("numpy"), 1) is op_set("numpy")


@pytest.mark.filterwarnings("ignore::minibert.TruncationWarning")
@pytest.mark.parametrize("ops", OP_SETS)
@pytest.mark.parametrize("model", ["tiny-l1", "deberta-v3", "modernbert-mean", "qwen3-reranker", "gemma-reranker"])
def test_one_pair_on_two_cores_is_the_pair_on_one(ops, model, monkeypatch):
    """A single pair is one pass shared between the cores (the runner's one stream): its score is the one-core
    score, bit for bit; the same pair in a batch too (every pass of a batch is serial, a core each)."""
    monkeypatch.setattr(shared_module, "MIN_PART_SCORES", 0)   # tiny models: attention split all the same
    monkeypatch.setattr(runner_module, "SHARED_MIN_TOKENS", 1)   # and a short pair's pass shared
    ce = CrossEncoder(GOLDENS / model, ops=ops)
    pair = [("what is the capital of france " * 6, "paris is the capital and largest city of france " * 12)]
    one = CrossEncoder(GOLDENS / model, ops=ops, threads=1).predict(pair)
    parts = []
    monkeypatch.setattr(shared_module, "_run", lambda work, workers, run=shared_module._run: (
        parts.append(len(work)), run(work, workers))[1])
    two = CrossEncoder(GOLDENS / model, ops=ops, threads=2).predict(pair)
    assert parts and set(parts) == {2}, "the pass was not shared"
    np.testing.assert_array_equal(two, one)
    batch = ce.predict(pair * 3)
    np.testing.assert_array_equal(batch[:1], one)


def test_a_single_long_pass_keeps_blas_at_one_thread_and_shares_its_ops():
    """One input from SHARED_MIN_TOKENS tokens: the shared op set, BLAS at one thread; a shorter one: the runner's
    op set, BLAS at `threads` (2); several inputs: streams, each with BLAS at one thread. Afterwards BLAS is as
    it was."""
    runner = Runner("numpy", threads=2)
    seen = []

    def work(batch, ops):
        seen.append((ops.name, [lib.num_threads for lib in blas_libraries().lib_controllers]))   # NumPy's among them

    def encode(n):
        return lambda items, first: [(np.arange(n), np.zeros(n, np.int64)) for _ in items]

    before = [lib.num_threads for lib in blas_libraries().lib_controllers]
    list(runner.run([1], encode(SHARED_MIN_TOKENS), work, 8))
    list(runner.run([1], encode(SHARED_MIN_TOKENS - 1), work, 8))
    list(runner.run([1, 2, 3], encode(3), work, 1))
    (long, blas_long), (short, blas_short), *streams = seen
    assert long == "numpy x2 threads" and set(blas_long) == {1}
    assert short == "numpy" and set(blas_short) == {2}
    assert len(streams) == 3 and all(name == "numpy" and set(blas) == {1} for name, blas in streams)
    assert [lib.num_threads for lib in blas_libraries().lib_controllers] == before
