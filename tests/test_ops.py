"""The NumPy reference ops against float64 definitions of the same math."""

import math

import numpy as np
import pytest

from minibert.ops import reference as ops


def test_erf_is_within_one_float32_ulp_of_math_erf():
    x = np.concatenate([np.linspace(-8, 8, 400_001), np.linspace(-1e-4, 1e-4, 2001),
                        [0.0, -0.0, 0.999999, 1.0, 3.9499, 3.95, 3.9501, 6.0, -30.0, np.inf, -np.inf]])
    exact = np.array([math.erf(v) for v in x])
    got = ops.erf(x)
    assert np.max(np.abs(got - exact)) < 3e-8  # the fit's own error, in float64
    ulp = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    ulps = np.abs(got.astype(np.float32).astype(np.float64) - exact) / ulp
    assert ulps.max() <= 1.0, f"{ulps.max():.2f} float32 ulp at x = {x[np.argmax(ulps)]}"
    assert np.all(ops.erf(np.array([0.0, -0.0])) == 0.0)


def test_erf_keeps_nan():
    assert np.isnan(ops.erf(np.array([np.nan, 1.0]))[0])


def test_gelu_is_exact_erf_gelu_not_tanh_approximation():
    x = np.linspace(-8, 8, 20_001).astype(np.float32)
    exact = np.array([v / 2 * (1 + math.erf(v / math.sqrt(2))) for v in x.astype(np.float64)])
    tanh_approx = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x.astype(np.float64) ** 3)))
    got = ops.gelu(x)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, exact, rtol=2e-7, atol=1e-7)
    # The tanh approximation differs by up to ~5e-4 here; make sure we are not it.
    assert np.max(np.abs(got - tanh_approx)) > 1e-4


def test_layer_norm_matches_float64_definition():
    rng = np.random.default_rng(0)
    # A common offset, as real hidden states have: one-pass variance (E[x^2] - E[x]^2) loses
    # precision to it in float32, two passes (mean, then squared deviations) do not.
    x = (rng.standard_normal((7, 37)) + 10.0).astype(np.float32)
    w = rng.standard_normal(37).astype(np.float32)
    b = rng.standard_normal(37).astype(np.float32)
    x64 = x.astype(np.float64)
    ref = (x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + 1e-12) * w + b
    got = ops.layer_norm(x, w, b, 1e-12)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("shape", [(1, 3), (7, 5000), (3, 11, 761), (2, 40000), (5,), (0, 4)])
def test_row_ops_in_blocks_give_the_whole_arrays_numbers(shape):
    """GELU, LayerNorm and RMSNorm work a block of about BLOCK_ELEMENTS at a time (rows of up to 40,000, many
    rows a block, blocks ending mid-array): bit for bit the numbers of the op on the whole array, into `out` too."""
    rng = np.random.default_rng(5)
    x = (rng.standard_normal(shape) * 3).astype(np.float32)
    w, b = (rng.standard_normal(shape[-1]).astype(np.float32) for _ in range(2))
    for blocked, whole in ((ops.gelu(x), ops._gelu(x)), (ops.layer_norm(x, w, b, 1e-5), ops._layer_norm(x, w, b, 1e-5)),
                           (ops.rms_norm(x, w, 1e-6), ops._rms_norm(x, w, 1e-6))):
        assert blocked.dtype == np.float32 and blocked.shape == x.shape
        np.testing.assert_array_equal(blocked, whole)
    out = np.full(shape, np.nan, np.float32)
    assert ops.gelu(x, out=out) is out
    np.testing.assert_array_equal(out, ops._gelu(x))


def test_layer_norm_eps_is_used():
    x = np.array([[0.0, 1e-3]], np.float32)
    w, b = np.ones(2, np.float32), np.zeros(2, np.float32)
    small, large = ops.layer_norm(x, w, b, 1e-12), ops.layer_norm(x, w, b, 1e-3)
    assert abs(small[0, 1] - 1.0) < 1e-3
    assert large[0, 1] < 0.1


def test_softmax_rows_sum_to_one_and_survive_large_values():
    x = np.array([[1000.0, 1000.0, -1000.0], [0.0, 1.0, 2.0]], np.float32)
    got = ops.softmax(x)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(got[0], [0.5, 0.5, 0.0], atol=1e-7)
    e = np.exp([0.0, 1.0, 2.0])
    np.testing.assert_allclose(got[1], e / e.sum(), rtol=1e-6)


def test_linear_is_x_times_weight_transposed_plus_bias():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    w = np.arange(12, dtype=np.float32).reshape(4, 3)  # [out, in]
    b = np.array([1, 2, 3, 4], np.float32)
    np.testing.assert_array_equal(ops.linear(x, w, b), x @ w.T + b)


@pytest.mark.parametrize("op", ["gelu", "softmax"])
def test_ops_keep_float32(op):
    x = np.random.default_rng(1).standard_normal((3, 5)).astype(np.float32)
    assert getattr(ops, op)(x).dtype == np.float32


def test_packed_attention_equals_padded_attention_with_an_additive_mask():
    # transformers pads the batch and adds finfo.min to the scores of padded keys; minibert packs
    # the pairs and attends within each. The two must agree on every real token.
    rng = np.random.default_rng(7)
    lengths, NH, HD = [5, 1, 9], 3, 4
    H, T, B = NH * HD, max(lengths), len(lengths)
    q, k, v = (rng.standard_normal((B, T, H)).astype(np.float32) for _ in range(3))
    mask = np.zeros((B, 1, 1, T), np.float32)
    for b, n in enumerate(lengths):
        mask[b, ..., n:] = np.finfo(np.float32).min

    def heads(t):
        return t.reshape(B, T, NH, HD).transpose(0, 2, 1, 3)
    scores = heads(q) @ heads(k).transpose(0, 1, 3, 2) / np.float32(np.sqrt(HD)) + mask
    padded = (ops.softmax(scores) @ heads(v)).transpose(0, 2, 1, 3).reshape(B, T, H)

    real = np.concatenate([np.arange(n) + b * T for b, n in enumerate(lengths)])
    packed_q, packed_k, packed_v = (t.reshape(B * T, H)[real] for t in (q, k, v))
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    packed = ops.attention(packed_q, packed_k, packed_v, offsets, NH)
    assert packed.dtype == np.float32
    np.testing.assert_allclose(packed, padded.reshape(B * T, H)[real], rtol=1e-5, atol=1e-6)


def test_softmax_fully_masked_rows_are_uniform_not_nan():
    # A row where every key is blocked by transformers' additive mask (finfo.min): uniform.
    scores = np.random.default_rng(2).standard_normal((2, 3, 4, 7)).astype(np.float32)
    mask = np.zeros((2, 1, 1, 7), np.float32)
    mask[1] = np.finfo(np.float32).min
    mask[0, ..., 3:] = np.finfo(np.float32).min
    got = ops.softmax(scores + mask)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got[1], 1 / 7, rtol=1e-6)
    assert np.all(got[0, ..., 3:] == 0)


def _attention_float64(q, k, v, offsets, num_heads, window=None, kv_heads=None, causal=False):
    """The definition, in float64, one pair and head at a time, the window and causality as masks; query head
    h reads key/value head h // (num_heads / kv_heads)."""
    kv_heads = kv_heads or num_heads
    HD = k.shape[1] // kv_heads
    out = np.zeros((len(q), num_heads * HD))
    for start, end in zip(offsets[:-1], offsets[1:]):
        T = end - start
        distance = np.arange(T)[:, None] - np.arange(T)[None, :]   # i - j
        for h in range(num_heads):
            cols, kv = slice(h * HD, (h + 1) * HD), h // (num_heads // kv_heads)
            kv_cols = slice(kv * HD, (kv + 1) * HD)
            scores = q[start:end, cols].astype(np.float64) @ k[start:end, kv_cols].astype(np.float64).T / math.sqrt(HD)
            if window is not None:
                scores[np.abs(distance) > window] = -np.inf
            if causal:
                scores[distance < 0] = -np.inf
            weights = np.exp(scores - scores.max(axis=1, keepdims=True))
            out[start:end, cols] = (weights / weights.sum(axis=1, keepdims=True)) @ v[start:end, kv_cols]
    return out


@pytest.mark.parametrize("window", [None, 0, 3, 64, 5000])
@pytest.mark.parametrize("block_elements", [ops.ATTENTION_BLOCK_ELEMENTS, 1000, 1])
def test_attention_in_query_blocks_and_sliding_windows_is_the_definition(monkeypatch, window, block_elements):
    """Long pairs are done in blocks of queries, a sliding window as a band of keys: the same numbers as
    the whole [T, T] scores with the window as a mask, however small the blocks."""
    monkeypatch.setattr(ops, "ATTENTION_BLOCK_ELEMENTS", block_elements)
    rng = np.random.default_rng(7)
    offsets = np.array([0, 1, 6, 300, 1100])
    q, k, v = (rng.standard_normal((offsets[-1], 40)).astype(np.float32) for _ in range(3))
    got = ops.attention(q, k, v, offsets, 5, window=window)
    assert got.dtype == np.float32
    want = _attention_float64(q, k, v, offsets, 5, window)
    assert np.abs(got - want).max() <= 1e-6 + 1e-5 * np.abs(want).max()


def test_attention_window_changes_the_result_where_keys_are_out_of_reach():
    rng = np.random.default_rng(8)
    offsets = np.array([0, 50])
    q, k, v = (rng.standard_normal((50, 8)).astype(np.float32) for _ in range(3))
    full, local = ops.attention(q, k, v, offsets, 2), ops.attention(q, k, v, offsets, 2, window=4)
    assert np.abs(full - local).max() > 1e-2
    assert np.array_equal(ops.attention(q, k, v, offsets, 2, window=49), full)  # the window covers every key


def test_relu_is_max_zero_keeps_nan_and_float32():
    x = np.array([[-2.5, -0.0, 0.0, 1e-30, 3.25, np.nan, -np.inf, np.inf]], np.float32)
    got = ops.relu(x)
    assert got.dtype == np.float32 and got.shape == x.shape
    np.testing.assert_array_equal(got, np.array([[0, 0, 0, 1e-30, 3.25, np.nan, 0, np.inf]], np.float32))


def test_a_sliding_window_computes_only_the_band(monkeypatch):
    """A long pair in a window layer: no block of scores wider than the block plus the window's keys."""
    shapes = []
    real_softmax = ops.softmax

    def recording_softmax(x):
        shapes.append(x.shape)
        return real_softmax(x)

    monkeypatch.setattr(ops, "softmax", recording_softmax)
    rng = np.random.default_rng(9)
    T, window = 3000, 10
    q, k, v = (rng.standard_normal((T, 8)).astype(np.float32) for _ in range(3))
    got = ops.attention(q, k, v, np.array([0, T]), 2, window=window)
    assert max(s[1] for s in shapes) <= 64 and max(s[2] for s in shapes) <= 64 + 2 * window, shapes[:3]
    assert np.abs(got - _attention_float64(q, k, v, np.array([0, T]), 2, window)).max() < 1e-5


def test_rotary_tables_are_the_rope_angles_of_each_position():
    positions = np.array([0, 1, 2, 0, 7, 8191])
    cos, sin = ops.rotary_tables(positions, 8, 10000.0)
    assert cos.shape == sin.shape == (6, 4) and cos.dtype == sin.dtype == np.float32
    inv_freq = 1.0 / 10000.0 ** (np.arange(0, 8, 2) / 8)
    angles = positions[:, None] * inv_freq[None, :]
    np.testing.assert_allclose(cos, np.cos(angles), atol=1e-4)  # float32 angles: ~ulp(8191) rad apart
    np.testing.assert_allclose(sin[:5], np.sin(angles[:5]), atol=1e-6)
    assert np.array_equal(cos[0], np.ones(4)) and np.array_equal(sin[0], np.zeros(4))
    assert np.array_equal(cos[3], cos[0])  # position 0 of a second pair


def test_apply_rotary_rotates_each_heads_halves_by_the_rows_angles():
    rng = np.random.default_rng(11)
    N, NH, HD = 5, 3, 6
    x = rng.standard_normal((N, NH * HD)).astype(np.float32)
    angles = rng.uniform(-4, 4, (N, HD // 2))
    got = ops.apply_rotary(x, np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32), NH)
    assert got.dtype == np.float32 and got.shape == x.shape
    want = np.empty((N, NH * HD))
    for r in range(N):
        for h in range(NH):
            x1, x2 = x[r, h * HD:h * HD + HD // 2].astype(np.float64), x[r, h * HD + HD // 2:(h + 1) * HD]
            c, s = np.cos(angles[r]), np.sin(angles[r])
            want[r, h * HD:(h + 1) * HD] = np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s])
    np.testing.assert_allclose(got, want, atol=1e-6)
    # a rotation keeps each (x_i, x_{i + HD/2}) pair's length
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), np.linalg.norm(x, axis=1), rtol=1e-6)


def test_geglu_is_gelu_of_the_first_half_times_the_second():
    rng = np.random.default_rng(12)
    h = (rng.standard_normal((4, 14)) * 3).astype(np.float32)
    got = ops.geglu(h)
    assert got.shape == (4, 7) and got.dtype == np.float32
    exact = np.array([[v / 2 * (1 + math.erf(v / math.sqrt(2))) for v in row] for row in h[:, :7].astype(np.float64)])
    np.testing.assert_allclose(got, exact * h[:, 7:], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("window", [None, 3])
def test_attention_first_only_is_the_full_attention_at_the_first_tokens(window):
    """first_only=True: each pair's first query alone, against all its keys; the same context as row 0
    of the full attention, to float32 rounding (the single-row product may round differently)."""
    rng = np.random.default_rng(11)
    lengths = [1, 9, 30, 4]
    N, num_heads, H = sum(lengths), 4, 32
    q, k, v = (rng.standard_normal((N, H)).astype(np.float32) for _ in range(3))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    full = ops.attention(q, k, v, offsets, num_heads, window=window)
    first = ops.attention(q[offsets[:-1]], k, v, offsets, num_heads, window=window, first_only=True)
    assert first.shape == (len(lengths), H)
    np.testing.assert_allclose(first, full[offsets[:-1]], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("window", [None, 0, 4])
@pytest.mark.parametrize("block_elements", [ops.ATTENTION_BLOCK_ELEMENTS, 1000])
@pytest.mark.parametrize("kv_heads", [1, 2, 6])
def test_causal_grouped_query_attention_is_the_definition(monkeypatch, window, block_elements, kv_heads):
    """A decoder's attention: 6 query heads sharing kv_heads key/value heads (head size 8, so the width of q
    is not the width of k), token i seeing j <= i (and i - j <= window); in blocks, and at the last token alone
    (last_only) the same as the full attention's last rows."""
    monkeypatch.setattr(ops, "ATTENTION_BLOCK_ELEMENTS", block_elements)
    rng = np.random.default_rng(5)
    offsets = np.array([0, 1, 6, 90, 300])
    q = rng.standard_normal((offsets[-1], 6 * 8)).astype(np.float32)
    k, v = (rng.standard_normal((offsets[-1], kv_heads * 8)).astype(np.float32) for _ in range(2))
    got = ops.attention(q, k, v, offsets, 6, window=window, kv_heads=kv_heads, causal=True)
    want = _attention_float64(q, k, v, offsets, 6, window, kv_heads, causal=True)
    assert got.shape == q.shape and got.dtype == np.float32
    assert np.abs(got - want).max() <= 1e-6 + 1e-5 * np.abs(want).max()
    last = offsets[1:] - 1
    at_last = ops.attention(q[last], k, v, offsets, 6, window=window, kv_heads=kv_heads, causal=True, last_only=True)
    np.testing.assert_allclose(at_last, got[last], atol=1e-6, rtol=1e-6)


def test_swiglu_is_silu_of_the_gate_times_up():
    """SiLU(gate) * up against the float64 definition, at large magnitudes too (no overflow in exp)."""
    rng = np.random.default_rng(3)
    gate = np.concatenate([rng.standard_normal(200) * 4, [-100.0, -30.0, 0.0, 30.0, 100.0]]).astype(np.float32)
    up = rng.standard_normal(len(gate)).astype(np.float32)
    g = gate.astype(np.float64)
    want = g / (1 + np.exp(-g)) * up
    got = ops.swiglu(gate, up)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-30)


def test_gelu_tanh_gate_is_transformers_tanh_gelu_of_the_gate_times_up():
    """gelu_pytorch_tanh(gate) * up against the float64 definition, at large magnitudes too."""
    rng = np.random.default_rng(4)
    gate = np.concatenate([rng.standard_normal(200) * 4, [-100.0, -30.0, 0.0, 30.0, 100.0]]).astype(np.float32)
    up = rng.standard_normal(len(gate)).astype(np.float32)
    g = gate.astype(np.float64)
    want = 0.5 * g * (1 + np.tanh(np.sqrt(2 / np.pi) * (g + 0.044715 * g ** 3))) * up
    got = ops.gelu_tanh_gate(gate, up)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6)
