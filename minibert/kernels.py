"""Numba kernels: the same names and signatures as `ops.py`, compiled.

This is the only module that imports numba. Each kernel is checked against its ops.py twin
in tests/test_kernels.py. No fastmath: it lets LLVM assume there are no NaNs or infinities
and reorder sums, and the point of minibert is to get the numbers right. `cache=True` writes
the compiled code to disk so that a second process does not compile again.
"""

import contextlib
import math

import numba
import numpy as np

from minibert import ops

# Matrix products stay with NumPy's BLAS: linear, and attention, which is two products per
# pair and head around a softmax (a Numba attention with a scalar exp was 5x slower).
from minibert.ops import ERF_P, ERF_Q, ERF_X_MAX, attention, linear

__all__ = ["linear", "layer_norm", "add_layer_norm", "gelu", "softmax", "attention", "limit_threads"]

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
        # erf as ops.erf computes it: the same rational approximation, in float64
        t = min(max(np.float64(v * _SQRT_HALF), -ERF_X_MAX), ERF_X_MAX)
        u = t * t
        p = ERF_P[8]
        for c in ERF_P[7::-1]:
            p = p * u + c
        q = ERF_Q[8]
        for c in ERF_Q[7::-1]:
            q = q * u + c
        out[i] = np.float32(0.5) * v * (np.float32(1.0) + np.float32(t * p / q))


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


@contextlib.contextmanager
def limit_threads(n):
    """Run the block with at most n BLAS threads and n Numba threads. BLAS and the kernels
    take turns, never run at once, so n of each does not oversubscribe n cores."""
    if n is None:
        yield
        return
    previous = numba.get_num_threads()
    numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
    try:
        with ops.limit_threads(n):
            yield
    finally:
        numba.set_num_threads(previous)


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

