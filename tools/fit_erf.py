"""Fit the rational approximation of erf that minibert's Numba GELU kernel uses.

    erf(x) ~= x * P(x^2) / Q(x^2)   for |x| < X_MAX,    +-1 beyond,

with P and Q of degree 8 (Q[0] = 1), fitted by iteratively reweighted linear least squares
on Chebyshev nodes against math.erf (double precision). It has no exp, so the kernel's loop
vectorizes; evaluated in float64 and rounded to float32 it is within one float32 ulp of erf
everywhere (tests/test_kernels.py checks it). X_MAX = 3.95: beyond it erf rounds to +-1 in
float32.

    python tools/fit_erf.py      # prints the coefficients to paste into minibert/kernels.py
"""

import math

import numpy as np

X_MAX = 3.95
DEGREE = 8


def fit(degree=DEGREE, n=4000, rounds=6):
    k = np.arange(n)
    x = np.sort((np.cos(np.pi * (k + 0.5) / n) + 1) / 2 * X_MAX)
    erf = np.array([math.erf(v) for v in x])
    u = x * x
    powers = np.vander(u, degree + 1, increasing=True)           # [n, degree + 1]
    # Linearized: x P(u) - erf(x) (Q(u) - 1) = erf(x), unknowns P[0..d], Q[1..d].
    A = np.hstack([powers * x[:, None], -erf[:, None] * powers[:, 1:]])
    weights = np.ones(n)
    for _ in range(rounds):
        c, *_ = np.linalg.lstsq(A * weights[:, None], erf * weights, rcond=None)
        p, q = c[:degree + 1], np.concatenate([[1.0], c[degree + 1:]])
        weights = 1 / np.abs(np.polyval(q[::-1], u))           # turn residuals into errors in erf
    return p, q


def check(p, q):
    x = np.linspace(-6, 6, 1_200_001)
    exact = np.array([math.erf(v) for v in x])
    clipped = np.clip(x, -X_MAX, X_MAX)
    u = clipped * clipped
    approx = np.where(np.abs(x) >= X_MAX, np.sign(x), clipped * np.polyval(p[::-1], u) / np.polyval(q[::-1], u))
    in_float32 = approx.astype(np.float32).astype(np.float64)
    ulp = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    q_min = np.abs(np.polyval(q[::-1], np.linspace(0, X_MAX ** 2, 1_000_001))).min()
    return np.abs(approx - exact).max(), (np.abs(in_float32 - exact) / ulp).max(), q_min


if __name__ == "__main__":
    p, q = fit()
    err, ulps, q_min = check(p, q)
    print(f"# max |approx - erf| = {err:.3g} in float64; {ulps:.2f} float32 ulp after rounding; min |Q| = {q_min:.3g}")
    print("_ERF_P = (" + ", ".join(repr(float(c)) for c in p) + ")")
    print("_ERF_Q = (" + ", ".join(repr(float(c)) for c in q) + ")")
