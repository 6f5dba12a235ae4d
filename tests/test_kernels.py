"""Every Numba kernel (minibert/ops/kernels.py) against its reference.py twin, on odd shapes.

Tolerance as llm.c's validate_result: |kernel - reference| <= atol + rtol * |reference|.
"""

import dataclasses

import numpy as np
import pytest

from minibert.ops import NUMPY, OpSet, numba_ops
from minibert.ops import reference as ops

kernels = pytest.importorskip("minibert.ops.kernels", reason="numba is not installed")

ATOL, RTOL = 1e-6, 1e-6
SHAPES = [(1, 1), (1, 37), (3, 1, 37), (2, 3, 5, 13), (8, 384), (5, 1536)]


def assert_close(got, ref, what):
    assert got.dtype == np.float32, f"{what}: dtype {got.dtype}, expected float32"
    assert got.shape == ref.shape, f"{what}: shape {got.shape}, expected {ref.shape}"
    excess = np.abs(got - ref) - (ATOL + RTOL * np.abs(ref))
    worst = tuple(int(i) for i in np.unravel_index(np.argmax(excess), excess.shape))
    assert excess[worst] <= 0, (
        f"{what}: kernel {float(got[worst])!r} vs reference {float(ref[worst])!r} at {worst}, "
        f"max abs diff {np.max(np.abs(got - ref)):.3g}")


def assert_as_accurate(got, ref, exact, what):
    """got is as close to the float64 result `exact` as the float32 reference is (within twice its error, +1e-7):
    for kernels whose BLAS products sum in another order than the reference's (other block shapes)."""
    assert got.dtype == np.float32 and got.shape == ref.shape, f"{what}: {got.dtype} {got.shape}, expected {ref.shape}"
    error, ref_error = np.max(np.abs(got - exact)), np.max(np.abs(ref - exact))
    assert error <= 2 * ref_error + 1e-7, f"{what}: max error {error:.3g} vs float64, the reference's {ref_error:.3g}"


def test_every_op_of_the_op_set_has_a_kernel_and_a_reference():
    numba = numba_ops()
    for field in dataclasses.fields(OpSet)[1:]:
        assert getattr(numba, field.name) is getattr(kernels, field.name), field.name
        assert getattr(NUMPY, field.name) is getattr(ops, field.name), field.name
    assert (NUMPY.name, numba.name) == ("numpy", "numba")


@pytest.mark.parametrize("shape", SHAPES)
def test_gelu(shape):
    x = (np.random.default_rng(0).standard_normal(shape) * 4).astype(np.float32)
    assert_close(kernels.gelu(x), ops.gelu(x), f"gelu {shape}")


@pytest.mark.parametrize("shape", SHAPES)
def test_layer_norm(shape):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(shape) * 3 + 1).astype(np.float32)
    w = (1 + 0.2 * rng.standard_normal(shape[-1])).astype(np.float32)
    b = rng.standard_normal(shape[-1]).astype(np.float32)
    for eps in (1e-12, 1e-5):
        assert_close(kernels.layer_norm(x, w, b, eps), ops.layer_norm(x, w, b, eps), f"layer_norm {shape} eps={eps}")
        assert_close(kernels.add_layer_norm(x, x[::-1].copy(), w, b, eps),
                     ops.add_layer_norm(x, x[::-1].copy(), w, b, eps), f"add_layer_norm {shape} eps={eps}")


@pytest.mark.parametrize("shape", SHAPES)
def test_rms_norm(shape):
    rng = np.random.default_rng(13)
    x = (rng.standard_normal(shape) * 3 + 1).astype(np.float32)
    w = (1 + 0.2 * rng.standard_normal(shape[-1])).astype(np.float32)
    for eps in (1e-6, 1e-5):
        assert_close(kernels.rms_norm(x, w, eps), ops.rms_norm(x, w, eps), f"rms_norm {shape} eps={eps}")
    strided = x.reshape(-1, shape[-1])[:, ::2]
    assert_close(kernels.rms_norm(strided, w[::2], 1e-6), ops.rms_norm(strided, w[::2], 1e-6), "rms_norm strided")


@pytest.mark.parametrize("shape", SHAPES)
def test_swiglu(shape):
    """The kernel's own exp against NumPy's: at large magnitudes too (exp(-|gate|) underflows to 0, never
    overflows)."""
    rng = np.random.default_rng(14)
    gate = (rng.standard_normal(shape) * 4).astype(np.float32)
    gate.flat[:5] = [-100.0, -30.0, 0.0, 30.0, 100.0][:gate.size]
    up = rng.standard_normal(shape).astype(np.float32)
    assert_close(kernels.swiglu(gate, up), ops.swiglu(gate, up), f"swiglu {shape}")


def test_layer_norm_accepts_non_contiguous_input():
    x = np.random.default_rng(4).standard_normal((6, 40)).astype(np.float32)[:, ::2]
    w, b = np.ones(20, np.float32), np.zeros(20, np.float32)
    assert_close(kernels.layer_norm(x, w, b, 1e-12), ops.layer_norm(x, w, b, 1e-12), "layer_norm strided")


def test_comparator_catches_a_planted_error():
    x = np.random.default_rng(5).standard_normal((4, 9)).astype(np.float32)
    wrong = ops.gelu(x)
    wrong[2, 3] += 1e-4
    with pytest.raises(AssertionError, match=r"at \(2, 3\)"):
        assert_close(wrong, ops.gelu(x), "planted")


@pytest.mark.parametrize("shape", SHAPES + [(12, 64, 64), (2, 513)])
def test_softmax(shape):
    x = (np.random.default_rng(7).standard_normal(shape) * 8).astype(np.float32)
    assert_close(kernels.softmax(x), ops.softmax(x), f"softmax {shape}")
    scores = x.copy()
    assert_close(kernels.scaled_softmax(scores, 0.125), ops.softmax(x * np.float32(0.125)), f"scaled_softmax {shape}")


def test_softmax_exp_is_within_1_5_ulp_of_the_true_exp():
    """Row [t, 0] has weights e^t / (1 + e^t) and 1 / (1 + e^t): softmax's own exp, checked through them
    against float64 over arguments from 0 down to -87 (where e^t stops being a normal float32)."""
    t = -np.geomspace(1e-6, 87, 20001)
    x = np.stack([t, np.zeros_like(t)], axis=1).astype(np.float32)
    got = kernels.softmax(x)[:, 0].astype(np.float64)
    e = np.exp(x[:, 0].astype(np.float64))
    want = e / (1 + e)
    ulp = np.spacing(want.astype(np.float32)).astype(np.float64)
    # the division and the float32 sum 1 + e^t add up to one ulp each on top of the exp's own error
    assert np.max(np.abs(got - want) / ulp) <= 3.0


def test_softmax_keeps_nan_and_masked_keys_as_numpy_does():
    x = np.array([[1, 2, np.nan], [1, np.inf, 2], [-np.inf, 0, 1], [-np.inf] * 3, [-200, 0, -1e30]], np.float32)
    with np.errstate(invalid="ignore"):
        want = ops.softmax(x)
    got = kernels.softmax(x)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got[2:3], want[2:3], rtol=1e-6)
    assert got[2, 0] == 0.0 and got[4, 0] == 0.0 and got[4, 2] == 0.0   # weight exactly 0, as exp underflows


def test_softmax_row_maximum_is_numpys_on_every_sign_and_length():
    """The softmax's maximum, taken over integers ordered as the floats (kernels._row_max), is np.max's: negative
    rows, -0 beside +0, infinities, every length from 1 (the vectorized loop and its tail); a NaN makes the row
    NaN whichever its sign bit."""
    rng = np.random.default_rng(3)
    for n in range(1, 70):
        for row in (rng.standard_normal(n) * 30, -np.abs(rng.standard_normal(n)) - 1, rng.standard_normal(n) * 1e-40):
            row = row.astype(np.float32)
            assert kernels._row_max(row) == np.max(row), row
    for row in ([-0.0, -0.0], [-np.inf, -3], [np.inf, 1], [-np.inf, -np.inf], [2, -np.inf, 1]):
        assert kernels._row_max(np.array(row, np.float32)) == max(row), row
    for nan in (np.float32(np.nan), -np.float32(np.nan)):
        row = np.array([1, nan, 2], np.float32)
        assert np.isnan(kernels.softmax(row[None])).all()


@pytest.mark.parametrize("lengths, num_heads, head_dim", [
    ([1], 1, 1), ([1, 7, 2], 3, 5), ([13, 1, 40, 3], 4, 8), ([64, 65], 12, 32),
])
def test_attention(lengths, num_heads, head_dim):
    """The kernel divides by each row's sum after the second product, the reference before it: both as close to
    the float64 result (the reference's own code in double) as each other."""
    rng = np.random.default_rng(6)
    N, H = sum(lengths), num_heads * head_dim
    q, k, v = ((rng.standard_normal((N, H)) * 2).astype(np.float32) for _ in range(3))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    first = offsets[:-1]
    for queries, args in ((q, {}), (q[first], {"first_only": True}), (q, {"window": 2})):
        assert_as_accurate(kernels.attention(queries, k, v, offsets, num_heads, **args),
                           ops.attention(queries, k, v, offsets, num_heads, **args),
                           ops.attention(*(t.astype(np.float64) for t in (queries, k, v)), offsets, num_heads, **args),
                           f"attention lengths={lengths} NH={num_heads} HD={head_dim} {args}")


@pytest.mark.parametrize("rows, n_in, n_out", [(1, 1, 1), (3, 37, 53), (17, 384, 1536)])
def test_linear_gelu(rows, n_in, n_out):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((rows, n_in)).astype(np.float32)
    w = (rng.standard_normal((n_out, n_in)) / np.sqrt(n_in) * 3).astype(np.float32)
    b = rng.standard_normal(n_out).astype(np.float32)
    assert_close(kernels.linear_gelu(x, w, b), ops.linear_gelu(x, w, b), f"linear_gelu {rows}x{n_in}->{n_out}")


@pytest.mark.parametrize("shape", SHAPES)
def test_relu(shape):
    x = (np.random.default_rng(9).standard_normal(shape) * 4).astype(np.float32)
    assert_close(kernels.relu(x), ops.relu(x), f"relu {shape}")


@pytest.mark.parametrize("rows, num_heads, head_dim", [(1, 1, 2), (7, 3, 10), (40, 4, 64)])
def test_apply_rotary(rows, num_heads, head_dim):
    rng = np.random.default_rng(9)
    qkv = rng.standard_normal((rows, 3 * num_heads * head_dim)).astype(np.float32)
    q = np.split(qkv, 3, axis=1)[0]  # a strided view, as the model passes it
    cos, sin = ops.rotary_tables(rng.integers(0, 8192, rows), head_dim, 160000.0)
    assert_close(kernels.apply_rotary(q, cos, sin, num_heads), ops.apply_rotary(q, cos, sin, num_heads),
                 f"apply_rotary {rows}x{num_heads}x{head_dim}")


@pytest.mark.parametrize("shape", [(1, 2), (3, 74), (2, 5, 106), (17, 2304)])
def test_geglu(shape):
    h = (np.random.default_rng(10).standard_normal(shape) * 3).astype(np.float32)
    assert_close(kernels.geglu(h), ops.geglu(h), f"geglu {shape}")


def test_rotary_and_geglu_have_kernels_with_the_same_names():
    for name in ("rotary_tables", "apply_rotary", "geglu"):
        assert callable(getattr(ops, name)) and callable(getattr(kernels, name)), name


@pytest.mark.parametrize("block_elements", [1 << 22, 700])
@pytest.mark.parametrize("window, causal, kv_heads", [
    (None, False, None), (None, True, 2), (5, False, None), (5, True, 1), (200, True, None),
])
def test_attention_in_blocks(block_elements, window, causal, kv_heads):
    """The kernel's blocks (a few heads x a few queries, the unseen keys skipped, the rest masked per row) against
    the reference: small blocks force many of them, whole-key-block skips under causal and window masks, and
    grouped-query heads."""
    rng = np.random.default_rng(11)
    lengths, NH, HD = [150, 1, 67], 4, 8
    NKV = kv_heads or NH
    N = sum(lengths)
    q = (rng.standard_normal((N, NH * HD)) * 2).astype(np.float32)
    k, v = ((rng.standard_normal((N, NKV * HD)) * 2).astype(np.float32) for _ in range(2))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    args = {"window": window, "causal": causal, "kv_heads": kv_heads}
    last = offsets[1:] - 1
    for queries, extra in ((q, {}), (q[last], {"last_only": True})):
        got = kernels.attention(queries, k, v, offsets, NH, block_elements=block_elements,
                                **args, **extra)
        assert_as_accurate(got, ops.attention(queries, k, v, offsets, NH, **args, **extra),
                           ops.attention(*(t.astype(np.float64) for t in (queries, k, v)), offsets, NH, **args, **extra),
                           f"attention blocks={block_elements} {args} {extra}")


def test_attention_blocks_fit_the_cache_and_skip_no_pair():
    # an 8,192-token pair at 16 heads: 512 queries x 8,192 keys of one head, 16 MiB; a short pair: one block, all heads
    assert kernels.block_shape(8192, 8192, 1, 16) == (512, 1)
    assert kernels.block_shape(8192, 8192, 1, 16, elements=1 << 20) == (128, 1)
    assert kernels.block_shape(100, 100, 1, 12) == (100, 12)
    assert kernels.block_shape(3, 8192, 4, 2) == (3, 2)
