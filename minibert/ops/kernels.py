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
  ~170 to ~95 pairs/s with parallel kernels. BLAS keeps the cores for the matrix products.
- nogil=True: the kernels release the GIL, so that the streams of forward passes (minibert/runtime/runner.py,
  one per core) run them at the same time.
- cache=True writes the compiled code to disk so that a second process does not compile again.
"""

import math

import numba
import numpy as np

# Shared with the reference, on purpose: matrix products stay with NumPy's BLAS (linear, and
# attention's two products per pair, batched over heads). A Numba attention that did the products
# in its own loops ran at a quarter of BLAS's rate here (no FMA-blocked kernel without hand
# tiling), so attention is the reference's loop with this module's softmax between the products.
import minibert.ops.reference as reference
from minibert.ops.reference import ERF_P, ERF_Q, ERF_X_MAX

# Ops whose NumPy version is already one vectorized pass, or runs once per batch: the reference's.
# (The op set takes every op from this module by name.)
from minibert.ops.reference import linear, relu, rotary_tables, swiglu  # noqa: F401

_SQRT_HALF = np.float32(math.sqrt(0.5))


# fastmath={"reassoc"} and nothing else: LLVM may reorder the float64 sums of the mean and the
# variance (so it vectorizes them: 2.9x faster on MiniLM's [N, 384]), which moves them by float64
# rounding only; every other fastmath assumption (no NaN, no inf, approximate functions) stays off.
@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc"})
def _add_layer_norm_rows(x, residual, weight, bias, eps, out):
    # out = LayerNorm(x + residual), row by row; x, residual, out: [R, H]. The sum is float32, as
    # in the reference (x + residual); the statistics are float64, in two passes (mean, then squares).
    rows, width = x.shape
    for r in range(rows):
        mean = 0.0
        for j in range(width):
            mean += x[r, j] + residual[r, j]
        mean /= width
        var = 0.0
        for j in range(width):
            d = (x[r, j] + residual[r, j]) - mean
            var += d * d
        var /= width
        inv_std = 1.0 / math.sqrt(var + eps)
        for j in range(width):
            out[r, j] = np.float32(((x[r, j] + residual[r, j]) - mean) * inv_std) * weight[j] + bias[j]


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


def layer_norm(x, weight, bias, eps):
    return add_layer_norm(x, np.zeros((1, x.shape[-1]), np.float32), weight, bias, eps)


def add_layer_norm(x, residual, weight, bias, eps):
    rows = _rows(x)
    residual = np.broadcast_to(residual, x.shape).reshape(rows.shape)  # a zero row broadcasts, no copy
    out = np.empty(x.shape, np.float32)
    _add_layer_norm_rows(rows, residual, weight, bias, float(eps), out.reshape(rows.shape))
    return out


def gelu(x):
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty_like(x)
    _gelu_flat(x.reshape(-1), out.reshape(-1))
    return out


def linear_gelu(x, weight, bias):
    h = x @ weight.T  # [N, in] -> [N, out], a fresh array: the bias and GELU go in place
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


def apply_rotary(x, cos, sin, num_heads):
    out = np.empty(x.shape, np.float32)  # x may be a strided view (q of the fused qkv): no copy
    _rotate_rows(x, np.ascontiguousarray(cos), np.ascontiguousarray(sin), num_heads, out)
    return out


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _geglu_rows(h, out):
    rows, width = out.shape
    for r in range(rows):
        for j in range(width):
            out[r, j] = _gelu(h[r, j]) * h[r, width + j]


def geglu(h):
    rows = _rows(h)
    out = np.empty((rows.shape[0], rows.shape[1] // 2), np.float32)
    _geglu_rows(rows, out)
    return out.reshape(*h.shape[:-1], out.shape[1])


# ---------------------------------------------------------------------------------------------
# Softmax, and attention with it. NumPy's float32 exp is vectorized but the softmax around it is
# five passes over the scores (max, subtract, exp, sum, divide) with a temporary each; here it is
# one kernel, in place, with attention's scale folded in. Numba's own exp is a scalar call per
# element, so exp is computed here the textbook way, in float32 lanes LLVM vectorizes:
#     exp(t) = 2^k e^f,  k = round(t / ln 2),  f = t - k ln 2 in [-ln 2 / 2, ln 2 / 2]
# with ln 2 in two parts (Cody-Waite: k ln2_hi is exact in float32), e^f its Taylor polynomial to
# f^7 (truncation < 6e-9 relative, below float32's 6e-8), and 2^k written as the float32 bit
# pattern (k + 127) << 23. Measured over 1e6 arguments in [-100, 0]: within 1.2 ulp of the true exp
# (NumPy's float32 exp: 2.3 ulp). Arguments below -87 (2^k not a normal float) give 0, as they
# would in a float32 sum next to the row's maximum, exp(0) = 1; -inf gives exactly 0 (a masked key).
# The row's sum is in float64; a NaN or infinity among the scores makes the row NaN, as in NumPy
# (-inf beside finite scores is a masked key, weight 0).

_LOG2E = np.float32(1.4426950408889634)
_LN2_HI = np.float32(0.693359375)
_LN2_LO = np.float32(-2.12194440e-4)
_INV_FACTORIAL = tuple(np.float32(1.0 / math.factorial(i)) for i in range(8))


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _softmax_rows(x, scale, powers, frac):
    # x[r] = softmax(x[r] * scale) for each row r of x [R, n], in place; powers (int32), frac: [n] scratch.
    # NaN propagates as in NumPy without a test of its own: max(NaN, c) is NaN, so a NaN score (or
    # inf - inf, from an infinite score or a row of -inf) makes the row's sum, and so the row, NaN.
    rows, n = x.shape
    c2, c3, c4, c5, c6, c7 = _INV_FACTORIAL[2:]
    two_k = powers.view(np.float32)
    for r in range(rows):
        row = x[r]
        top = row[0]
        for j in range(n):
            top = max(top, row[j])
        top *= scale
        for j in range(n):
            t = max(row[j] * scale - top, np.float32(-104.0))   # <= 0; -inf (a masked key) becomes -104
            k = np.floor(t * _LOG2E + np.float32(0.5))
            f = (t - k * _LN2_HI) - k * _LN2_LO
            frac[j] = ((((((c7 * f + c6) * f + c5) * f + c4) * f + c3) * f + c2) * f + np.float32(1.0)) * f + np.float32(1.0)
            powers[j] = (np.int32(max(k, np.float32(-127.0))) + 127) << 23   # 2^k; k = -127 gives 0.0
        for j in range(n):
            row[j] = frac[j] * two_k[j]
        total = 0.0
        for j in range(n):
            total += row[j]
        total32 = np.float32(total)
        for j in range(n):
            row[j] = row[j] / total32


def scaled_softmax(scores, scale):
    scores = np.ascontiguousarray(scores, dtype=np.float32)   # attention's scores already are: then in place
    rows = scores.reshape(-1, scores.shape[-1])
    n = rows.shape[1]
    if n:
        _softmax_rows(rows, np.float32(scale), np.empty(n, np.int32), np.empty(n, np.float32))
    return scores


def softmax(x):
    return scaled_softmax(np.array(x, dtype=np.float32), 1.0)   # a copy, then in place


def attention(q, k, v, offsets, num_heads, window=None, first_only=False, *, kv_heads=None, causal=False,
              last_only=False):
    return reference.attention(q, k, v, offsets, num_heads, window, first_only, weights=scaled_softmax,
                               kv_heads=kv_heads, causal=causal, last_only=last_only)
