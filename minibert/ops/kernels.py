"""Numba kernels: the same names and signatures as reference.py, compiled.

This is the only module that imports numba. Each kernel is checked against its reference.py twin
in tests/test_kernels.py. What the compile options are, and why (measured with tools/bench.py
and a per-op timer on the MiniLM workload, 2 cores):
- No blanket fastmath: it lets LLVM assume there are no NaNs or infinities and approximate, and
  the point of minibert is to get the numbers right. The one flag used is "reassoc", on
  LayerNorm's float64 sums only (see there).
- error_model="numpy": a division by zero gives inf/nan instead of raising ZeroDivisionError.
  Without it every division carries a branch and LLVM does not vectorize the loops (the GELU
  loop ran at 5.6 ns per element, with it at 0.7 ns).
- Serial, not parallel=True: these loops run between BLAS calls, and a parallel Numba region
  then fights OpenBLAS's spinning worker threads for the cores; the whole forward pass went from
  ~170 to ~95 pairs/s with parallel kernels. So does attention's softmax on a long pair with BLAS at
  several threads: rows split over the cores measured 1.1x to 3x slower (tools/bench_attention.py). A
  pass on several cores instead keeps BLAS at one thread and gives whole parts of each op to its own
  threads (minibert/ops/shared.py): no one spins on a core another thread wants.
- nogil=True: the kernels release the GIL, so that the streams of forward passes (minibert/runtime/runner.py,
  one per core) and the parts of a shared pass (minibert/ops/shared.py) run them at the same time.
- cache=True writes the compiled code to disk so that a second process does not compile again.
"""

import math

import numba
import numpy as np

# Shared with the reference, on purpose: matrix products stay with NumPy's BLAS (linear, and
# attention's two products per block). A Numba attention that did the products in its own loops ran
# at a quarter of BLAS's rate here (no FMA-blocked kernel without hand tiling), so attention is a loop
# of BLAS products with this module's softmax between them. linear, relu, rotary_tables, Gemma's
# gate (gelu_tanh_gate) and `each`: ops whose NumPy version is already one vectorized pass, runs once
# per batch, or is no arithmetic, are the reference's (the op set takes every op from this module by name).
from minibert.ops import reference
from minibert.ops.reference import (  # noqa: F401
    ERF_P,
    ERF_Q,
    ERF_X_MAX,
    each,
    gelu_tanh_gate,
    linear,
    relu,
    rotary_tables,
)

_SQRT_HALF = np.float32(math.sqrt(0.5))


# fastmath={"reassoc"} and nothing else: LLVM may reorder the float64 sums of the mean and the
# variance (so it vectorizes them: 2.9x faster on MiniLM's [N, 384]), which moves them by float64
# rounding only; every other fastmath assumption (no NaN, no inf, approximate functions) stays off.
@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc"})
def _add_layer_norm_rows(x, residual, weight, bias, eps, out, add):
    # out = LayerNorm(x + residual) (add=True) or LayerNorm(x) (add=False: residual is not read), row by row;
    # x, residual, out: [R, H], contiguous. The sum is float32, as in the reference (x + residual); the statistics
    # are float64, in two passes (mean, then squares). `add` is the same for every element: LLVM takes the test
    # out of the loops and vectorizes each version (a broadcast zero residual instead would be a strided array,
    # which it does not: 2.4x slower).
    rows, width = x.shape
    for r in range(rows):
        mean = 0.0
        for j in range(width):
            mean += x[r, j] + residual[r, j] if add else x[r, j]
        mean /= width
        var = 0.0
        for j in range(width):
            d = (x[r, j] + residual[r, j] if add else x[r, j]) - mean
            var += d * d
        var /= width
        inv_std = 1.0 / math.sqrt(var + eps)
        for j in range(width):
            v = x[r, j] + residual[r, j] if add else x[r, j]
            out[r, j] = np.float32((v - mean) * inv_std) * weight[j] + bias[j]


@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc"})
def _rms_norm_rows(x, weight, eps, out):
    # out = x / sqrt(mean(x^2) + eps) * weight, row by row (x, out: [R, H], contiguous); the sum of squares in
    # float64 (reassoc: in vector lanes, as LayerNorm's), the scaled value rounded to float32 before the weight.
    rows, width = x.shape
    for r in range(rows):
        squares = 0.0
        for j in range(width):
            squares += np.float64(x[r, j]) * x[r, j]
        inv = 1.0 / math.sqrt(squares / width + eps)
        for j in range(width):
            out[r, j] = np.float32(x[r, j] * inv) * weight[j]


@numba.njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _gelu(v):
    # v * Phi(v) with erf as reference.erf computes it: the same rational approximation, in float64
    t = min(max(np.float64(v * _SQRT_HALF), -ERF_X_MAX), ERF_X_MAX)
    u = t * t
    p = ERF_P[8]
    for c in ERF_P[7::-1]:
        p = p * u + c
    q = ERF_Q[8]
    for c in ERF_Q[7::-1]:
        q = q * u + c
    return np.float32(0.5) * v * (np.float32(1.0) + np.float32(t * p / q))


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _gelu_flat(x, out):
    for i in range(x.size):
        out[i] = _gelu(x[i])


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _bias_gelu_rows(h, bias):
    # h = GELU(h + bias), in place, row by row: one pass over the [R, I] product.
    rows, width = h.shape
    for r in range(rows):
        for j in range(width):
            h[r, j] = _gelu(h[r, j] + bias[j])


def _rows(a):
    """View an array as [rows, last axis], contiguous float32."""
    return np.ascontiguousarray(a, dtype=np.float32).reshape(-1, a.shape[-1])


def layer_norm(x, weight, bias, eps, out=None):
    return add_layer_norm(x, None, weight, bias, eps, out)


def add_layer_norm(x, residual, weight, bias, eps, out=None):
    rows = _rows(x)
    out = np.empty(x.shape, np.float32) if out is None else out   # given: contiguous, x's shape
    if residual is None:   # LayerNorm(x): the kernel's add=False, rows given again as a residual it does not read
        _add_layer_norm_rows(rows, rows, weight, bias, float(eps), out.reshape(rows.shape), False)
    else:
        residual = _rows(np.broadcast_to(residual, x.shape))
        _add_layer_norm_rows(rows, residual, weight, bias, float(eps), out.reshape(rows.shape), True)
    return out


def rms_norm(x, weight, eps, out=None):
    rows = _rows(x)
    out = np.empty(x.shape, np.float32) if out is None else out   # given: contiguous, x's shape
    _rms_norm_rows(rows, weight, float(eps), out.reshape(rows.shape))
    return out


def gelu(x, out=None):
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty_like(x) if out is None else out
    _gelu_flat(x.reshape(-1), out.reshape(-1))
    return out


def linear_gelu(x, weight, bias, out=None):
    h = np.matmul(x, weight.T, out=out)  # [N, in] -> [N, out], a fresh array (or out): the bias and GELU go in place
    _bias_gelu_rows(h, bias)
    return h


# ---------------------------------------------------------------------------------------------
# Rotary position embeddings and the gated feed-forward (ModernBERT): the rotation and GeGLU are one
# pass each. (The rotary tables are the reference's, imported at the top.)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _rotate_rows(x, cos, sin, num_heads, out):
    # out[r, head] = (x1 cos - x2 sin, x2 cos + x1 sin) for each head's halves x1, x2 of row r
    rows, width = x.shape
    half = width // num_heads // 2
    for r in range(rows):
        for h in range(num_heads):
            base = h * 2 * half
            for i in range(half):
                x1, x2 = x[r, base + i], x[r, base + half + i]
                out[r, base + i] = x1 * cos[r, i] - x2 * sin[r, i]
                out[r, base + half + i] = x2 * cos[r, i] + x1 * sin[r, i]


def apply_rotary(x, cos, sin, num_heads, out=None):
    out = np.empty(x.shape, np.float32) if out is None else out  # x may be a strided view (q of the fused qkv): no copy
    _rotate_rows(x, np.ascontiguousarray(cos), np.ascontiguousarray(sin), num_heads, out)
    return out


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _geglu_rows(h, out):
    rows, width = out.shape
    for r in range(rows):
        for j in range(width):
            out[r, j] = _gelu(h[r, j]) * h[r, width + j]


def geglu(h, out=None):
    rows = _rows(h)
    out = np.empty((*h.shape[:-1], rows.shape[1] // 2), np.float32) if out is None else out
    _geglu_rows(rows, out.reshape(rows.shape[0], -1))
    return out


# ---------------------------------------------------------------------------------------------
# Softmax, and attention with it. NumPy's float32 exp is vectorized but the softmax around it is
# five passes over the scores (max, subtract, exp, sum, divide) with a temporary each; here it is
# one kernel, in place, with attention's scale folded in. Numba's own exp is a scalar call per
# element, so exp is computed here the textbook way, in float32 lanes LLVM vectorizes:
#     exp(t) = 2^k e^f,  k = round(t / ln 2),  f = t - k ln 2 in [-ln 2 / 2, ln 2 / 2]
# with ln 2 in two parts (Cody-Waite: k ln2_hi is exact in float32), e^f its Taylor polynomial to
# f^7 (truncation < 6e-9 relative, below float32's 6e-8), and 2^k written as the float32 bit
# pattern (k + 127) << 23. Measured over 1e6 arguments in [-100, 0]: within 0.91 ulp of the true exp
# with FMA (1.2 without; NumPy's float32 exp: 2.3 ulp). Arguments below -87 (2^k not a normal float) give 0, as they
# would in a float32 sum next to the row's maximum, exp(0) = 1; -inf gives exactly 0 (a masked key).
# The row's sum is in float64; a NaN or infinity among the scores makes the row NaN, as in NumPy
# (-inf beside finite scores is a masked key, weight 0).

_LOG2E = np.float32(1.4426950408889634)
_LN2_HI = np.float32(0.693359375)
_LN2_LO = np.float32(-2.12194440e-4)
_INV_FACTORIAL = tuple(np.float32(1.0 / math.factorial(i)) for i in range(8))


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _exp_nonpositive(t):
    # exp(t) for float32 t <= 0 (see above); in float32 lanes when inlined in a loop. Compiled with its caller's
    # flags: fastmath "contract" alone lets LLVM fuse a multiply and an add into one FMA (one rounding instead of
    # two: the polynomial is as accurate or more, and half the instructions); it may not reorder anything, so
    # the Cody-Waite split stays exact.
    c2, c3, c4, c5, c6, c7 = _INV_FACTORIAL[2:]
    t = max(t, np.float32(-104.0))                       # -inf (a masked key) becomes -104
    k = np.floor(t * _LOG2E + np.float32(0.5))
    f = (t - k * _LN2_HI) - k * _LN2_LO
    e_f = ((((((c7 * f + c6) * f + c5) * f + c4) * f + c3) * f + c2) * f + np.float32(1.0)) * f + np.float32(1.0)
    two_k = np.int32((np.int32(max(k, np.float32(-127.0))) + 127) << 23).view(np.float32)   # 2^k; -127 gives 0.0
    return e_f * two_k


@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def _exp_shifted(row, scale, top):
    # row[j] = exp(row[j] * scale - top), in place, in float32 lanes (see above); top is the row's maximum.
    for j in range(row.shape[0]):
        row[j] = _exp_nonpositive(row[j] * scale - top)


@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def _swiglu_flat(gate, up, out):
    # out = SiLU(gate) * up = gate * sigmoid(gate) * up, as reference.swiglu: sigmoid from e = exp(-|gate|) (which
    # cannot overflow), 1 / (1 + e) or e / (1 + e) by the sign, with this module's vectorized exp.
    for j in range(gate.shape[0]):
        g = gate[j]
        e = _exp_nonpositive(-abs(g))
        sigmoid = (np.float32(1.0) if g >= 0 else e) / (np.float32(1.0) + e)
        out[j] = g * sigmoid * up[j]


def swiglu(gate, up, out=None):
    gate, up = np.ascontiguousarray(gate, dtype=np.float32), np.ascontiguousarray(up, dtype=np.float32)
    out = np.empty_like(gate) if out is None else out
    _swiglu_flat(gate.reshape(-1), up.reshape(-1), out.reshape(-1))
    return out


@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc"})
def _float64_sum(row):
    # The sum of a row of float32 in float64. fastmath "reassoc" lets LLVM split it into vector lanes (in any
    # order: the float64 sum of n <= 2^24 terms in (0, 1] differs from the sequential one far below float32's
    # rounding), without which each add would wait for the one before.
    total = 0.0
    for j in range(row.shape[0]):
        total += row[j]
    return total


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _ordered(bits):
    # A float32's bits, read as an int32, mapped to an int32 that orders as the floats do: a negative float's
    # magnitude bits are flipped (the larger its magnitude, the smaller the integer). The map is its own inverse.
    return np.int32(bits ^ np.int32(np.int32(bits >> 31) & np.int32(0x7FFFFFFF)))


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _row_max(row):
    # The largest of a float32 row (n >= 1), taken over the integers _ordered gives: LLVM vectorizes a maximum
    # of integers (8 lanes a step), not one of floats, whose NaN rules keep it one element at a time (2.5x
    # slower on attention's scores). A positive NaN orders above +inf and is the result; a negative one is
    # passed over, and the row still becomes NaN in the exp that follows.
    bits = row.view(np.int32)
    top = _ordered(bits[0])
    for j in range(1, bits.shape[0]):
        top = np.int32(max(top, _ordered(bits[j])))
    return _ordered(top).view(np.float32)


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _exp_row(row, scale):
    # row = exp(row * scale - max(row * scale)), in place; returns their sum (in float64, rounded to float32).
    # NaN propagates as in NumPy without a test of its own: a NaN score (or inf - inf, from an infinite
    # maximum) gives t = NaN, so its weight and the row's sum are NaN.
    _exp_shifted(row, scale, _row_max(row) * scale)
    return np.float32(_float64_sum(row))


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _softmax_row(row, scale):
    # row = softmax(row * scale), in place: exp (_exp_row), then each weight divided by the row's sum.
    total32 = _exp_row(row, scale)
    for j in range(row.shape[0]):
        row[j] = row[j] / total32


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _softmax_rows(x, scale):
    # x[r] = softmax(x[r] * scale) for each row r of x [R, n], in place.
    for r in range(x.shape[0]):
        _softmax_row(x[r], scale)


def scaled_softmax(scores, scale):
    scores = np.ascontiguousarray(scores, dtype=np.float32)   # attention's scores already are: then in place
    rows = scores.reshape(-1, scores.shape[-1])
    if rows.shape[1]:
        _softmax_rows(rows, np.float32(scale))
    return scores


def softmax(x):
    return scaled_softmax(np.array(x, dtype=np.float32), 1.0)   # a copy, then in place


# ---------------------------------------------------------------------------------------------
# Attention: reference.attention's numbers, in blocks sized for the cache. The reference computes the
# scores of a block of queries against all keys for all heads at once (up to 64 MiB, far beyond the
# caches) and masks with boolean arrays; here a block is a few heads x a few queries x its keys, held
# in one scratch array reused block after block, so that the scores the first product writes are still
# in the cache when the softmax and the second product read them. The keys a block cannot see (causal,
# sliding window) are not computed at all, and the mask is a range of keys per query row given to the
# softmax (lo, hi), so no boolean array is built. A row's weights are those of the whole row at once, as
# in the reference (no online softmax), but left unnormalized: exp(s - max) goes into the second product,
# and its result is divided by the row's sum, HD divisions a row instead of one a key (flash attention's
# order; a fifth of the softmax's time at 8,192 keys). The results agree with the reference's to float32
# rounding (tests/test_kernels.py measures both against float64).

# Scores of one block: 16 MiB of float32. Measured at 8,192 tokens (16 heads of 64, tools/bench_attention.py):
# 2^22 elements 10.8 s, 2^20 11.6 s, 2^18 12.7 s, the reference's 2^24 with boolean masks 15.8 s.
ATTENTION_BLOCK_ELEMENTS = 1 << 22
MIN_BLOCK_ROWS = 64                 # queries per block at least: fewer rows leave BLAS's kernel underused


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _exp_band(x, scale, lo, hi, sums):
    # x[r] = exp(x[r] * scale - its maximum) over the keys lo .. hi - 1, 0 elsewhere, sums[r] their sum, for
    # each row r of x [R, Tk]; lo, hi: [Tq], row r is query r % Tq.
    for r in range(x.shape[0]):
        a, b = lo[r % lo.shape[0]], hi[r % lo.shape[0]]
        sums[r] = _exp_row(x[r, a:b], scale)
        x[r, :a] = 0
        x[r, b:] = 0


def band_exp(scores, scale, lo, hi):
    """scores [R, Tk] = exp(scores * scale - the row's maximum) over keys lo[r % Tq] .. hi[r % Tq] - 1 of each
    row, exactly 0 elsewhere, in place; returns each row's sum, [R] float32 (softmax = scores / sums).
    lo, hi: [Tq] int64."""
    sums = np.empty(len(scores), np.float32)
    _exp_band(scores, np.float32(scale), lo, hi, sums)
    return sums


def block_shape(queries, keys, G, NKV, elements=ATTENTION_BLOCK_ELEMENTS):
    """(query rows, key/value heads) of one block: as many as keep its G x rows x keys scores per head within
    `elements`, with at least MIN_BLOCK_ROWS rows (or all the queries) and one head."""
    rows = min(queries, max(MIN_BLOCK_ROWS, elements // (G * keys)))
    return rows, min(NKV, max(1, elements // (G * rows * keys)))


def attention(q, k, v, offsets, num_heads, window=None, first_only=False, *, kv_heads=None, causal=False,
              last_only=False, block_elements=ATTENTION_BLOCK_ELEMENTS):
    """reference.attention, in cache-sized blocks (see above); the same arguments and result. block_elements:
    the scores one block holds."""
    q, k, v, G, HD = reference.head_views(q, k, v, num_heads, kv_heads)   # [NH, N or B, HD], [NKV, N, HD] x 2
    context = np.empty_like(q)
    scratch = np.empty(0, np.float32)                                       # the scores of a block, reused
    for block in attention_blocks(offsets, len(k), G, window, first_only, last_only, causal, block_elements):
        scratch = attention_block(q, k, v, context, block, G, HD, scratch)
    return context.transpose(1, 0, 2).reshape(len(context[0]), -1)  # [NH, N or B, HD] -> [N or B, NH * HD]


def attention_blocks(offsets, NKV, G, window, first_only, last_only, causal, block_elements):
    """The blocks of a packed batch's attention: (start, rows, q0, q1, k0, k1, lo, hi, h0, hb) for the queries
    q0 .. q1 - 1 of the pair at `start` (q's row of position i: rows + i), against its keys k0 .. k1 - 1 (all
    that any of them sees), for key/value heads h0 .. h0 + hb - 1; row i sees keys k0 + lo[i] .. k0 + hi[i] - 1."""
    for start, T, first, last, rows in reference.pair_queries(offsets, first_only, last_only):
        if window is None:
            Tq, hb = block_shape(last - first, T, G, NKV, block_elements)
        else:  # a block of queries about as wide as the window sees its rows and w keys on either side
            Tq = min(last - first, max(MIN_BLOCK_ROWS, 2 * window + 1))
            hb = block_shape(Tq, min(T, Tq + 2 * window), G, NKV, block_elements)[1]
        for q0 in range(first, last, Tq):
            q1 = min(last, q0 + Tq)
            k0 = 0 if window is None else max(0, q0 - window)
            k1 = q1 if causal else T if window is None else min(T, q1 + window)
            position = np.arange(q0, q1)                                                   # [n]
            lo = np.maximum(position - window, k0) if window is not None else np.full(q1 - q0, k0)
            hi = np.minimum(position + window + 1, T) if window is not None else np.full(q1 - q0, T)
            if causal:
                hi = np.minimum(hi, position + 1)
            for h0 in range(0, NKV, hb):
                yield start, rows, q0, q1, k0, k1, lo - k0, hi - k0, h0, min(hb, NKV - h0)


def attention_block(q, k, v, context, block, G, HD, scratch):
    """One block's softmax(q k^T / sqrt(HD)) v into context (q, context [NH, ., HD]; k, v [NKV, N, HD]); its
    scores in `scratch` (grown when too small: returned)."""
    start, rows, q0, q1, k0, k1, lo, hi, h0, hb = block
    n, Tk, h1 = q1 - q0, k1 - k0, h0 + hb
    if scratch.size < hb * G * n * Tk:
        scratch = np.empty(hb * G * n * Tk, np.float32)
    scores = scratch[:hb * G * n * Tk].reshape(hb, G * n, Tk)                                # [hb, G n, Tk]
    grouped = q[h0 * G:h1 * G, rows + q0:rows + q1].reshape(hb, G * n, HD)                   # [hb, G n, HD]
    np.matmul(grouped, k[h0:h1, start + k0:start + k1].transpose(0, 2, 1), out=scores)
    sums = band_exp(scores.reshape(-1, Tk), np.float32(HD ** -0.5), lo, hi).reshape(hb, G * n, 1)   # [hb, G n, 1]
    values = v[h0:h1, start + k0:start + k1]                                                 # [hb, Tk, HD]
    if G == 1:  # written in place
        out = context[h0:h1, rows + q0:rows + q1]                                            # [hb, n, HD]
        np.matmul(scores, values, out=out)
        out /= sums
    else:
        weighted = scores @ values                                                           # [hb, G n, HD]
        weighted /= sums
        context[h0 * G:h1 * G, rows + q0:rows + q1] = weighted.reshape(hb * G, n, HD)
    return scratch


# ---------------------------------------------------------------------------------------------
# Half-precision weights: bfloat16 widened in one pass (float16: the reference's cast, already one
# vectorized pass). Serial like every kernel here: the runner already widens on every core, one stream each.


@numba.njit(cache=True, nogil=True)
def _bfloat16_rows(bits, out):
    # out[r, j] = bits[r, j] << 16: the float32 whose top half is the bfloat16 (out is the float32's uint32 view)
    rows, width = bits.shape
    for r in range(rows):
        for j in range(width):
            out[r, j] = np.uint32(bits[r, j]) << np.uint32(16)


def widen(stored):
    if stored.dtype != np.uint16 or stored.ndim != 2:  # float16, a foreign byte order, or not a matrix
        return reference.widen(stored)
    out = np.empty(stored.shape, np.float32)
    _bfloat16_rows(stored, out.view(np.uint32))
    return out
