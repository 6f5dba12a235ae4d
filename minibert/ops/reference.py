"""The NumPy reference ops: each a few lines, float32 in and float32 out.

minibert/ops/kernels.py offers the same names and signatures, compiled with Numba; the op set
record (minibert/ops/__init__.py) holds either, and the tests run both and compare them. Matrix
products stay with NumPy's BLAS in both.
"""

import numpy as np


def linear(x, weight, bias, out=None):
    """nn.Linear: x @ W.T + b, with W in PyTorch's [out, in] layout (bias None: x @ W.T); into `out` if given."""
    out = np.matmul(x, weight.T, out=out)   # [..., in] -> [..., out]
    if bias is not None:
        out += bias                         # in place: no second [..., out] array
    return out


def into(result, out):
    """result, or a copy of it into `out` when given (the ops' out= argument: one pass on several cores has
    each of its parts write its own rows of one array, minibert/ops/shared.py)."""
    if out is None:
        return result
    out[...] = result
    return out


# The row ops below (LayerNorm, RMSNorm, GELU) work a block of rows at a time: each row's numbers are the
# same whatever rows are beside it, and a block's float64 temporaries (16K elements) stay in the cache, where
# the whole input's would go to memory and back once per step (GELU on a feed-forward's [2080, 1536]: 3x).
BLOCK_ELEMENTS = 1 << 14


def in_blocks(fn, x, *args, out=None):
    """fn(rows, *args) for blocks of x's rows (over its last axis) of about BLOCK_ELEMENTS elements, into one
    float32 array of x's shape (or `out`): fn(x, *args)'s numbers, for an fn that treats each row on its own."""
    if x.ndim == 0 or x.size == 0:
        return into(np.asarray(fn(x, *args), np.float32), out)
    rows = x.reshape(-1, x.shape[-1])                                   # [R, width]
    result = np.empty(rows.shape, np.float32)
    step = max(1, BLOCK_ELEMENTS // max(1, rows.shape[1]))
    for a in range(0, len(rows), step):
        result[a:a + step] = fn(rows[a:a + step], *args)
    return into(result.reshape(x.shape), out)


def layer_norm(x, weight, bias, eps, out=None):
    """LayerNorm over the last axis. Statistics in float64 and in two passes (mean, then the
    squared deviations): one pass, E[x^2] - E[x]^2 in float32, loses ~3e-4 relative."""
    return in_blocks(_layer_norm, x, weight, bias, eps, out=out)


def _layer_norm(x, weight, bias, eps):
    x64 = x.astype(np.float64)
    centered = x64 - x64.mean(axis=-1, keepdims=True)                  # [..., H]
    var = (centered * centered).mean(axis=-1, keepdims=True)           # [..., 1]
    normed = (centered * (1.0 / np.sqrt(var + eps))).astype(np.float32)
    return normed * weight + bias                                      # float32


def rms_norm(x, weight, eps, out=None):
    """RMSNorm over the last axis: x / sqrt(mean(x^2) + eps) * weight (a decoder's norm; Gemma's arrives as
    1 + weight). The mean of squares and the scaling in float64, rounded to float32 before the weight, as
    transformers rounds to the input's dtype before it."""
    return in_blocks(_rms_norm, x, weight, eps, out=out)


def _rms_norm(x, weight, eps):
    x64 = x.astype(np.float64)
    inv = 1.0 / np.sqrt((x64 * x64).mean(axis=-1, keepdims=True) + eps)   # [.., 1]
    return (x64 * inv).astype(np.float32) * weight                      # [.., width]


def add_layer_norm(x, residual, weight, bias, eps, out=None):
    """LayerNorm(x + residual): the residual connection of a post-LN encoder layer."""
    return layer_norm(x + residual, weight, bias, eps, out)


def gelu(x, out=None):
    """Exact GELU, x * Phi(x) = x/2 * (1 + erf(x / sqrt 2)), as transformers' "gelu"."""
    return in_blocks(_gelu, x, out=out)


def _gelu(x):
    t = x * np.float32(np.sqrt(0.5))
    return np.float32(0.5) * x * (np.float32(1.0) + erf(t).astype(np.float32))


def linear_gelu(x, weight, bias, out=None):
    """GELU(x @ W.T + b): the first half of the feed-forward network; into `out` if given."""
    return gelu(linear(x, weight, bias), out)


def softmax(x):
    """Softmax over the last axis, max-subtracted so it cannot overflow."""
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def scaled_softmax(scores, scale):
    """softmax(scores * scale) over the last axis: attention's weights from its raw scores q . k.
    (kernels.py's version works in place, in one pass per row; this one may too, so the caller
    hands over its scores.)"""
    scores *= scale
    return softmax(scores)


def head_views(q, k, v, num_heads, kv_heads=None):
    """Attention's inputs as heads: q [N or B, NH * HD] -> [NH, N or B, HD], k, v [N, NKV * HD] -> [NKV, N, HD]
    (views), and G = NH / NKV query heads per key/value head, HD."""
    N, NKV = k.shape[0], kv_heads or num_heads
    G, HD = num_heads // NKV, k.shape[1] // NKV
    k, v = (t.reshape(N, NKV, HD).transpose(1, 0, 2) for t in (k, v))      # [NKV, N, HD] views
    return q.reshape(len(q), num_heads, HD).transpose(1, 0, 2), k, v, G, HD


def pair_queries(offsets, first_only=False, last_only=False):
    """For each pair of a packed batch: (start, T, first, last, rows): its first row in k and v, its length, its
    queries' positions first .. last - 1 (all T; with first_only / last_only its first / last token alone) and
    `rows`, where q's row of position i is rows + i (q holds one row per pair with first_only / last_only)."""
    one_query = first_only or last_only
    for b, (start, end) in enumerate(zip(offsets[:-1].tolist(), offsets[1:].tolist())):
        T = end - start
        first = T - 1 if last_only else 0
        yield start, T, first, first + 1 if one_query else T, b - first if one_query else start


# Scores held at once by attention: [NH, query block, keys] float32 elements (64 MiB). A pair of T tokens
# is done in blocks of queries so that a long pair (8,192 tokens) never holds a whole [NH, T, T].
ATTENTION_BLOCK_ELEMENTS = 1 << 24


def attention(q, k, v, offsets, num_heads, window=None, first_only=False, *, kv_heads=None, causal=False,
              last_only=False):
    """Scaled dot-product self-attention, within each pair of a packed batch.

    q: [N, NH * HD]; k, v: [N, NKV * HD]; pair b owns rows offsets[b]:offsets[b + 1]. Returns the
    context, [N, NH * HD]. NKV = kv_heads (default: num_heads); with fewer key/value heads than query
    heads (grouped-query attention), query heads g * G .. g * G + G - 1 share key/value head g
    (G = NH / NKV), as transformers' repeat_kv repeats them; here the G query heads are one product.
    window: None for global attention; w for a sliding window, where token i attends only the keys j
    with |i - j| <= w (ModernBERT's local layers): the scores are then computed for that band only.
    causal: token i attends only the keys j <= i (a decoder); the keys after a block of queries are
    never computed.
    first_only / last_only: q is [B, NH * HD], the query of each pair's first / last token alone;
    returns its context, [B, NH * HD].
    """
    q, k, v, G, HD = head_views(q, k, v, num_heads, kv_heads)     # [NH, N or B, HD], [NKV, N, HD] x 2
    NKV = len(k)
    context = np.empty_like(q)
    scale = np.float32(HD ** -0.5)
    for start, T, first, last, rows in pair_queries(offsets, first_only, last_only):
        queries = last - first
        if window is None:
            block = max(1, min(queries, ATTENTION_BLOCK_ELEMENTS // (num_heads * T)))
        else:
            # A block of queries sees its own rows and w keys on either side: keep it about as wide as the
            # window, so that only the band (block + 2w keys) is computed, however long the pair.
            block = min(queries, max(64, 2 * window + 1))
            while block > 1 and num_heads * block * min(T, block + 2 * window) > ATTENTION_BLOCK_ELEMENTS:
                block //= 2
        for q0 in range(first, last, block):
            q1 = min(last, q0 + block)
            k0 = 0 if window is None else max(0, q0 - window)
            k1 = q1 if causal else T if window is None else min(T, q1 + window)
            Tq, Tk = q1 - q0, k1 - k0
            grouped = q[:, rows + q0:rows + q1].reshape(NKV, G * Tq, HD)                   # [NKV, G Tq, HD]
            scores = grouped @ k[:, start + k0:start + k1].transpose(0, 2, 1)              # [NKV, G Tq, Tk]
            if causal or window is not None:
                i, j = np.arange(q0, q1)[:, None], np.arange(k0, k1)[None, :]               # [Tq, 1], [1, Tk]
                masked = (j > i) if causal else np.abs(i - j) > window                      # [Tq, Tk]
                if causal and window is not None:
                    masked |= i - j > window
                if masked.any():
                    scores.reshape(NKV, G, Tq, Tk)[:, :, masked] = -np.inf                  # weight exactly 0
            probs, values = scaled_softmax(scores, scale), v[:, start + k0:start + k1]             # [NKV, G Tq, Tk]
            if G == 1:  # written in place
                np.matmul(probs, values, out=context[:, rows + q0:rows + q1])
            else:
                context[:, rows + q0:rows + q1] = (probs @ values).reshape(num_heads, Tq, HD)
    return context.transpose(1, 0, 2).reshape(len(context[0]), -1)  # [NH, N or B, HD] -> [N or B, NH * HD]


# erf for NumPy, which has none: erf(x) ~= x P(x^2) / Q(x^2) for |x| <= 3.95, and +-1 beyond
# (where erf rounds to +-1 in float32). P and Q (degree 8) were fitted by tools/fit_erf.py against
# math.erf; evaluated in float64 and rounded to float32, the result is within one float32 ulp of
# erf everywhere (0.73 ulp as fitted; tests/test_ops.py checks it). With no exp it is cheap, and
# the Numba kernel evaluates the very same expression, so both paths give the same GELU.
ERF_X_MAX = 3.95
ERF_P = (1.1283791831342966, -0.1620480527436285, 0.018557030998487864, -0.0002584827661264417, 0.0021831801014583255, 0.00043860195684774177, 5.5549625348230236e-05, 3.3222780296744413e-06, 1.7975022008793186e-08)
ERF_Q = (1.0, 0.18972230944411322, -0.020315515796402367, -0.0021578578783681794, 0.0031253994458670686, 0.0010511966892513007, 0.00016011245548866994, 1.6475765962484927e-05, 3.7690484339093084e-07)


def erf(x):
    """erf, elementwise, to float32 accuracy; computed in float64 (returns float64)."""
    t = np.clip(np.asarray(x, dtype=np.float64), -ERF_X_MAX, ERF_X_MAX)
    u = t * t
    p = np.full_like(u, ERF_P[-1])
    for c in ERF_P[-2::-1]:   # Horner's rule, p = p * u + c in place (the same roundings, no new arrays)
        p *= u
        p += c
    q = np.full_like(u, ERF_Q[-1])
    for c in ERF_Q[-2::-1]:
        q *= u
        q += c
    t *= p
    t /= q
    return t


def relu(x):
    """max(x, 0), elementwise, as torch's ReLU (NaN stays NaN): DistilBERT's head and its 'relu' FFN."""
    return np.maximum(x, np.float32(0.0))


# ---------------------------------------------------------------------------------------------
# Rotary position embeddings and the gated feed-forward (ModernBERT, GTE)


def rotary_inv_freq(head_dim, theta, divisor=1.0):
    """The rotary inverse frequencies, [HD / 2] float32: transformers' default RoPE, 1 / theta^(2i / HD) in
    float32; then divided by `divisor` in float32, as NTK-scaled RoPE does (gte's NTKScalingRotaryEmbedding:
    theta * factor, then / factor^(2 / HD)). A divisor of 1 changes nothing.

    The power is taken in float64 and rounded to float32: the float32 nearest to it, which torch's float32 pow
    (within an ulp) gives almost always. NumPy's float32 power differs from it by an ulp on some CPUs (its own
    SIMD code), and an ulp of inv_freq moves a rotary angle by position x ulp: 3.5e-5 in a layer's output at
    position 1,309 (tests/parity/test_modernbert.py's long pairs)."""
    exponents = np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)          # [HD / 2]
    power = (np.float64(np.float32(theta)) ** exponents.astype(np.float64)).astype(np.float32)  # theta^(2i / HD)
    return np.float32(1.0) / power / np.float32(divisor)                                     # [HD / 2]


def rotary_tables(positions, head_dim, theta, divisor=1.0):
    """cos and sin of the rotary angles, [N, HD / 2] each, for the positions [N] of a packed batch.

    angle = position * inv_freq (rotary_inv_freq) in float32. cos and sin are taken in float64 and
    rounded, so they are the float32 nearest to the cosine of the float32 angle (torch's float32 cos
    is within an ulp of it)."""
    inv_freq = rotary_inv_freq(head_dim, theta, divisor)                              # [HD / 2]
    angles = positions.astype(np.float32)[:, None] * inv_freq[None, :]               # [N, HD / 2]
    return np.cos(angles, dtype=np.float64).astype(np.float32), np.sin(angles, dtype=np.float64).astype(np.float32)


def apply_rotary(x, cos, sin, num_heads, out=None):
    """Rotate each head's halves (x1, x2) of x [N, H] by the angles of its row: the head's first half
    becomes x1 cos - x2 sin, its second x2 cos + x1 sin (transformers' x * cos + rotate_half(x) * sin,
    the same angle for dimension i and i + HD / 2). cos, sin: [N, HD / 2]. Returns a new [N, H]."""
    N, H = x.shape
    heads = x.reshape(N, num_heads, 2, H // num_heads // 2)      # [N, NH, 2, HD / 2] view: (x1, x2) per head
    x1, x2 = heads[:, :, 0], heads[:, :, 1]                       # [N, NH, HD / 2] each
    c, s = cos[:, None, :], sin[:, None, :]                       # [N, 1, HD / 2]
    rotated = np.empty_like(heads) if out is None else out.reshape(heads.shape)
    rotated[:, :, 0] = x1 * c - x2 * s
    rotated[:, :, 1] = x2 * c + x1 * s
    return rotated.reshape(N, H)


def geglu(h, out=None):
    """GELU(input) * gate, where h [N, 2I] is input | gate (ModernBERT's MLP: Wi's output chunked in two)."""
    half = h.shape[-1] // 2
    return into(gelu(h[..., :half]) * h[..., half:], out)   # [N, 2I] -> [N, I]


def swiglu(gate, up, out=None):
    """SiLU(gate) * up, elementwise: a decoder's gated feed-forward (Qwen, Llama: down(silu(gate(x)) * up(x))).
    SiLU(x) = x * sigmoid(x), with the exp of -|x| only, so it cannot overflow."""
    e = np.exp(-np.abs(gate))                                                        # in (0, 1]
    sigmoid = np.where(gate >= 0, np.float32(1.0) / (np.float32(1.0) + e), e / (np.float32(1.0) + e))
    return into(gate * sigmoid * up, out)


def gelu_tanh_gate(gate, up, out=None):
    """tanh-GELU(gate) * up, elementwise: Gemma's gated feed-forward (down(gelu_tanh(gate(x)) * up(x))), with
    transformers' gelu_pytorch_tanh: x/2 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3))), float32."""
    inner = np.float32(np.sqrt(2.0 / np.pi)) * (gate + np.float32(0.044715) * gate * gate * gate)
    return into(np.float32(0.5) * gate * (np.float32(1.0) + np.tanh(inner)) * up, out)


# ---------------------------------------------------------------------------------------------
# Half-precision weights: a bfloat16 or float16 matrix kept as stored, widened for each product


def each(fn, items):
    """fn(item) for every item, in order: the blocks of a family's own loop, which write apart (a pass on
    several cores runs them on its threads: minibert/ops/shared.py)."""
    for item in items:
        fn(item)


def widen(stored):
    """A stored half-precision tensor -> float32, exactly (a new array of the same shape, owning its memory).

    stored: the uint16 bits of bfloat16 (NumPy has no bfloat16: a bfloat16 is the top half of a float32, so
    its float32 is the bits shifted left by 16), or float16 (every float16 is a float32: a plain cast)."""
    if stored.dtype.kind == "f":
        return stored.astype(np.float32)
    out = np.empty(stored.shape, dtype=np.float32)
    as_int = out.view(np.uint32)
    as_int[...] = stored    # uint16 -> uint32, value by value (whatever the stored byte order)
    as_int <<= 16
    return out
