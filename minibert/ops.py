"""The NumPy reference ops: each a few lines, float32 in and float32 out.

`kernels.py` offers the same names and signatures, compiled with Numba; the model takes
either module as its op set, and the tests run both and compare them. Matrix products
stay with NumPy's BLAS in both.
"""

import numpy as np


def linear(x, weight, bias):
    """nn.Linear: x @ W.T + b, with W in PyTorch's [out, in] layout."""
    return x @ weight.T + bias  # [..., in] -> [..., out]


def layer_norm(x, weight, bias, eps):
    """LayerNorm over the last axis. Statistics in float64 and in two passes (mean, then the
    squared deviations): one pass, E[x^2] - E[x]^2 in float32, loses ~3e-4 relative."""
    x64 = x.astype(np.float64)
    centered = x64 - x64.mean(axis=-1, keepdims=True)                  # [..., H]
    var = (centered * centered).mean(axis=-1, keepdims=True)           # [..., 1]
    normed = (centered * (1.0 / np.sqrt(var + eps))).astype(np.float32)
    return normed * weight + bias                                      # float32


def add_layer_norm(x, residual, weight, bias, eps):
    """LayerNorm(x + residual): the residual connection of a post-LN encoder layer."""
    return layer_norm(x + residual, weight, bias, eps)


def gelu(x):
    """Exact GELU, x * Phi(x) = x/2 * (1 + erf(x / sqrt 2)), as transformers' "gelu"."""
    t = x * np.float32(np.sqrt(0.5))
    return np.float32(0.5) * x * (np.float32(1.0) + erf(t).astype(np.float32))


def softmax(x):
    """Softmax over the last axis, max-subtracted so it cannot overflow."""
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def attention(q, k, v, offsets, num_heads):
    """Scaled dot-product self-attention, within each pair of a packed batch.

    q, k, v: [N, H]; pair b owns rows offsets[b]:offsets[b + 1]. Returns the context, [N, H].
    """
    N, H = q.shape
    HD = H // num_heads
    context = np.empty_like(q)
    for start, end in zip(offsets[:-1], offsets[1:]):
        T = end - start

        def heads(t):
            return t[start:end].reshape(T, num_heads, HD).transpose(1, 0, 2)  # [T, H] -> [NH, T, HD]

        # The two products are accumulated in float64, the softmax is float32, like the kernel's.
        scores = (heads(q) @ heads(k).transpose(0, 2, 1).astype(np.float64)).astype(np.float32)
        scores *= np.float32(HD ** -0.5)                                             # [NH, T, T]
        weighted = softmax(scores) @ heads(v).astype(np.float64)                     # [NH, T, HD]
        context[start:end] = weighted.transpose(1, 0, 2).reshape(T, H)               # [T, H]
    return context


# erf for NumPy, which has none: Cephes' rational approximations (ndtr.c), evaluated in
# float64, where they are accurate to a few units in the last place, so that rounded to float32
# the result is the correctly rounded erf (barring rare ties). tests/test_ops.py checks it
# against math.erf.
_ERF_T = (9.60497373987051638749e0, 9.00260197203842689217e1, 2.23200534594684319226e3,
          7.00332514112805075473e3, 5.55923013010394962768e4)
_ERF_U = (1.0, 3.35617141647503099647e1, 5.21357949780152679795e2, 4.59432382970980127987e3,
          2.26290000613890934246e4, 4.92673942608635921086e4)
_ERFC_P = (2.46196981473530512524e-10, 5.64189564831068821977e-1, 7.46321056442269912687e0,
           4.86371970985681366614e1, 1.96520832956077098242e2, 5.26445194995477358631e2,
           9.34528527171957607540e2, 1.02755188689515710272e3, 5.57535335369399327526e2)
_ERFC_Q = (1.0, 1.32281951154744992508e1, 8.67072140885989742329e1, 3.54937778887819891062e2,
           9.75708501743205489753e2, 1.82390916687909736289e3, 2.24633760818710981792e3,
           1.65666309194161350182e3, 5.57535340817727675546e2)


def _poly(coefs, x):
    out = np.full_like(x, coefs[0])
    for c in coefs[1:]:
        out = out * x + c
    return out


def erf(x):
    """erf, elementwise, computed in float64 (returns float64)."""
    x = np.asarray(x, dtype=np.float64)
    a = np.abs(x)
    out = np.sign(x)                   # |x| >= 6: erfc(6) < 2.2e-17, so erf is +-1 in float64
    small = a < 1.0                    # erf(x) = x T(x^2) / U(x^2)
    xs = x[small]
    out[small] = xs * _poly(_ERF_T, xs * xs) / _poly(_ERF_U, xs * xs)
    mid = ~small & (a < 6.0)           # erf(x) = 1 - erfc(|x|), erfc = exp(-x^2) P(|x|) / Q(|x|)
    am = a[mid]
    out[mid] = np.copysign(1.0 - np.exp(-am * am) * _poly(_ERFC_P, am) / _poly(_ERFC_Q, am), x[mid])
    return out
