"""Numba kernels: the same names and signatures as `ops.py`, compiled.

This is the only module that imports numba. Each kernel is checked against its ops.py twin
in tests/test_kernels.py. No fastmath: it lets LLVM assume there are no NaNs or infinities
and reorder sums, and the point of minibert is to get the numbers right. `cache=True` writes
the compiled code to disk so that a second process does not compile again.
"""

import math

import numba
import numpy as np

from minibert.ops import linear  # matrix products stay with NumPy's BLAS

__all__ = ["linear", "layer_norm", "add_layer_norm", "gelu", "softmax", "attention"]

_SQRT_HALF = np.float32(math.sqrt(0.5))


@numba.njit(cache=True)  # serial: per-row work is too small to pay for threads
def _layer_norm_rows(x, weight, bias, eps, out):
    # x, out: [R, H]; statistics accumulated in float64, in two passes (mean, then squares).
    rows, width = x.shape
    for r in range(rows):
        mean = 0.0
        for j in range(width):
            mean += x[r, j]
        mean /= width
        var = 0.0
        for j in range(width):
            d = x[r, j] - mean
            var += d * d
        var /= width
        inv_std = 1.0 / math.sqrt(var + eps)
        for j in range(width):
            out[r, j] = np.float32((x[r, j] - mean) * inv_std) * weight[j] + bias[j]


@numba.njit(cache=True, parallel=True)
def _gelu_flat(x, out):
    for i in numba.prange(x.size):
        v = x[i]
        e = np.float32(math.erf(np.float64(v * _SQRT_HALF)))
        out[i] = np.float32(0.5) * v * (np.float32(1.0) + e)


@numba.njit(cache=True, parallel=True)
def _softmax_rows(x, out):
    rows, width = x.shape
    for r in numba.prange(rows):
        m = x[r, 0]
        for j in range(1, width):
            m = max(m, x[r, j])
        total = 0.0
        for j in range(width):
            e = np.exp(x[r, j] - m)
            out[r, j] = e
            total += e
        inv = np.float32(1.0 / total)
        for j in range(width):
            out[r, j] *= inv


def _rows(a):
    """View an array as [rows, last axis], contiguous float32."""
    return np.ascontiguousarray(a, dtype=np.float32).reshape(-1, a.shape[-1])


def layer_norm(x, weight, bias, eps):
    out = np.empty(x.shape, np.float32)
    _layer_norm_rows(_rows(x), weight, bias, float(eps), out.reshape(-1, x.shape[-1]))
    return out


def add_layer_norm(x, residual, weight, bias, eps):
    return layer_norm(x + residual, weight, bias, eps)


def gelu(x):
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty_like(x)
    _gelu_flat(x.reshape(-1), out.reshape(-1))
    return out


def softmax(x):
    out = np.empty(x.shape, np.float32)
    _softmax_rows(_rows(x), out.reshape(-1, x.shape[-1]))
    return out


@numba.njit(cache=True, parallel=True)
def _attention_packed(q, k, v, offsets, num_heads, out):
    # One task per (pair, head), spread over the threads. q, k, v, out: [N, H].
    n_pairs = offsets.shape[0] - 1
    HD = q.shape[1] // num_heads
    scale = np.float32(HD ** -0.5)
    for task in numba.prange(n_pairs * num_heads):
        b, h = task // num_heads, task % num_heads
        start, T, col = offsets[b], offsets[b + 1] - offsets[b], h * HD
        k_t = np.ascontiguousarray(k[start:start + T, col:col + HD].T)  # [HD, T]
        dots = np.empty(T, np.float64)
        scores = np.empty(T, np.float32)
        acc = np.empty(HD, np.float64)
        for i in range(T):
            # scores = q_i k^T, accumulated over d so the inner loop runs along j
            dots[:] = 0
            for d in range(HD):
                q_id = np.float64(q[start + i, col + d])
                for j in range(T):
                    dots[j] += q_id * k_t[d, j]
            m = np.float32(dots[0]) * scale
            for j in range(T):
                scores[j] = np.float32(dots[j]) * scale
                m = max(m, scores[j])
            total = 0.0
            for j in range(T):
                scores[j] = np.exp(scores[j] - m)
                total += scores[j]
            inv = np.float32(1.0 / total)
            # context_i = softmax(scores) v
            acc[:] = 0
            for j in range(T):
                p = np.float64(scores[j] * inv)
                for d in range(HD):
                    acc[d] += p * v[start + j, col + d]
            for d in range(HD):
                out[start + i, col + d] = acc[d]


def attention(q, k, v, offsets, num_heads):
    out = np.empty(q.shape, np.float32)
    _attention_packed(np.ascontiguousarray(q), np.ascontiguousarray(k), np.ascontiguousarray(v),
                      np.ascontiguousarray(offsets, dtype=np.int64), num_heads, out)
    return out
