"""One forward pass on several cores: an op set whose work is split between threads, BLAS at one thread.

The runner scores many inputs as streams of whole forward passes, one per core, each with BLAS at one
thread (minibert/runtime/runner.py). A single input, one long pair, is one pass, and handing its matrix
products to BLAS's own threads leaves everything between them (attention's softmax above all: a third of
a long pair's attention) on one core while the other waits. Switching BLAS to one thread for attention
and back for the dense layers does not help either: OpenBLAS's idle threads spin for a while after each
product, on the cores the next op wants. So a pass that has the cores to itself keeps BLAS at one thread
throughout, and this op set splits the work itself, in parts that never write the same rows:

    linear, linear_gelu   the rows of x, `workers` contiguous parts, each its own product into its rows
                          of one output
    layer_norm, add_layer_norm, rms_norm, gelu, geglu, swiglu, gelu_tanh_gate, apply_rotary
                          the same, by rows (each row's numbers depend on that row alone)
    attention             the heads, in groups of whole key/value heads (or of query heads, when all share
                          one key/value head), each group the base op's attention on its own
    each                  the independent blocks of a family's own loop (DeBERTa's attention), round robin

Each part is the base op on a slice, so every number is the base op's: a row of a product does not depend
on the other rows, nor a head of attention on the other heads (tests/test_shared.py checks it bit for bit).
The rest (NumPy's own arithmetic in a family's code: residual sums, a head's pooling) runs on the calling thread.
"""

import dataclasses
import itertools
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from minibert.ops import OpSet

MIN_PART_ROWS = 32            # rows of a product per part at least: a smaller one is not worth a thread's hand-off
MIN_PART_ELEMENTS = 1 << 16   # elements of an elementwise op's part (LayerNorm, GELU, ...) at least, likewise
# Attention's scores per part at least (a pair of about 360 tokens at 16 heads, in two parts). Its parts run Python
# between their kernels, and two threads that both want the GIL hand it over every 5 ms (sys.getswitchinterval):
# split finer, a short pair's attention waited on that more than it computed (MiniLM, one pair of 25 tokens:
# 8.0 ms a score on one core, 13.8 ms with its attention split).
MIN_PART_SCORES = 1 << 20

_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()
_inside = threading.local()   # set while a thread runs a part: a shared op called from a part runs serially


def shared(ops: OpSet, workers: int) -> OpSet:
    """ops for one forward pass with `workers` cores to itself, whose caller keeps BLAS at one thread
    (runtime/runner.py does). workers == 1: ops itself."""
    if workers == 1:
        return ops

    def by_rows(name, aligned=1, width=lambda x, *rest: x.shape[-1], elementwise=True):
        """ops.<name> split by rows (_split_rows): its first `aligned` arguments are cut alike where they are
        [N, .] (a one-row residual, or None, is passed whole); width(*args): the output's columns."""
        op = getattr(ops, name)

        def split(*args, out=None):
            x = args[0]

            def call(a, b, into):
                cut = [arg[a:b] if i < aligned and arg is not None and arg.ndim == 2 and len(arg) == len(x) else arg
                       for i, arg in enumerate(args)]
                return op(*cut, out=into)
            return _split_rows(call, x, width(*args), out, workers, elementwise)
        return split

    def attention(q, k, v, offsets, num_heads, window=None, first_only=False, *, kv_heads=None, **mask):
        return _split_heads(ops.attention, q, k, v, offsets, num_heads, kv_heads or num_heads, workers,
                            window=window, first_only=first_only, **mask)

    def each(fn, items):
        items = list(items)
        if len(items) < 2 or getattr(_inside, "part", False):
            return ops.each(fn, items)
        _run([(lambda part=items[w::workers]: ops.each(fn, part)) for w in range(min(workers, len(items)))], workers)

    products = {"width": lambda x, weight, *rest: len(weight), "elementwise": False}
    split = {"linear": by_rows("linear", **products), "linear_gelu": by_rows("linear_gelu", **products),
             "layer_norm": by_rows("layer_norm"), "add_layer_norm": by_rows("add_layer_norm", aligned=2),
             "rms_norm": by_rows("rms_norm"), "gelu": by_rows("gelu"),
             "geglu": by_rows("geglu", width=lambda h: h.shape[-1] // 2), "swiglu": by_rows("swiglu", aligned=2),
             "gelu_tanh_gate": by_rows("gelu_tanh_gate", aligned=2), "apply_rotary": by_rows("apply_rotary", aligned=3),
             "attention": attention, "each": each}
    return dataclasses.replace(ops, name=f"{ops.name} x{workers} threads", **split)


def ranges(n: int, parts: int) -> list[tuple[int, int]]:
    """0 .. n split into `parts` contiguous ranges as even as can be (none empty when parts <= n)."""
    bounds = [n * i // parts for i in range(parts + 1)]
    return [(a, b) for a, b in itertools.pairwise(bounds) if b > a]


def _split_rows(call, x, width, out, workers, elementwise=False):
    """call(a, b, into) for `workers` parts a .. b - 1 of x's rows, into: those rows of out [N, width] (made when
    None); a part has MIN_PART_ROWS rows at least, or for an elementwise op MIN_PART_ELEMENTS. Not split (x not
    [N, .], too few rows, or called from a part): call(0, N, out), which makes its own array when out is None."""
    least = max(MIN_PART_ROWS, MIN_PART_ELEMENTS // max(1, x.shape[-1])) if elementwise else MIN_PART_ROWS
    parts = min(workers, len(x) // least) if x.ndim == 2 else 1
    if parts < 2 or getattr(_inside, "part", False):
        return call(0, len(x), out)
    out = np.empty((len(x), width), np.float32) if out is None else out
    _run([(lambda a=a, b=b: call(a, b, out[a:b])) for a, b in ranges(len(x), parts)], workers)
    return out


def _split_heads(attention, q, k, v, offsets, NH, NKV, workers, **mask):
    """attention over groups of heads, each group on its own part, into one context [N or B, NH * HD]."""
    HD = q.shape[1] // NH
    G = NH // NKV
    if NKV > 1:   # whole key/value heads, with their G query heads each
        groups = [(a * G, b * G, a, b) for a, b in ranges(NKV, min(workers, NKV))]
    else:         # one key/value head: groups of query heads against it, two at least (one query head's
        # product with a single query row is a matrix-vector product, which BLAS sums in another order)
        groups = [(a, b, 0, 1) for a, b in ranges(NH, min(workers, NH // 2))]
    scores = len(q) * len(k) * NH   # a pair's, at most (the shared pass is one pair)
    if len(groups) < 2 or scores < 2 * MIN_PART_SCORES or getattr(_inside, "part", False):
        return attention(q, k, v, offsets, NH, kv_heads=NKV, **mask)
    context = np.empty((len(q), NH * HD), np.float32)

    def group(h0, h1, g0, g1):
        qs, kv = slice(h0 * HD, h1 * HD), slice(g0 * HD, g1 * HD)
        context[:, qs] = attention(q[:, qs], k[:, kv], v[:, kv], offsets, h1 - h0, kv_heads=g1 - g0, **mask)
    _run([(lambda g=g: group(*g)) for g in groups], workers)
    return context


def _run(parts, workers):
    """Call every part: the first on this thread, the others on the pool's; return when all are done."""
    pool = _pool(workers)
    pending = [pool.submit(_as_part, part) for part in parts[1:]]
    try:
        _as_part(parts[0])
    finally:
        for done in pending:
            done.result()


def _as_part(part):
    _inside.part = True
    try:
        part()
    finally:
        _inside.part = False


def _pool(workers):
    """The threads that run parts beside the caller: workers - 1 of them, made once per process."""
    with _pools_lock:
        if workers not in _pools:
            _pools[workers] = ThreadPoolExecutor(workers - 1, thread_name_prefix="minibert-part")
        return _pools[workers]
