"""Weights at their stored precision: a bfloat16 or float16 checkpoint's matrices stay 2 bytes an element in
memory (views of the mapped file), each widened to float32 for its product (models/params.linear) or for the
rows an embedding lookup gathers; the scores are those of the same checkpoint widened at load, bit for bit.

Every family's golden is saved here in bfloat16 and float16 (minibert's own safetensors writer, no torch), and
loaded both ways.
"""

import shutil
from pathlib import Path

import numpy as np
import pytest

from minibert import CrossEncoder
from minibert.formats.checkpoint import find_checkpoint, read_checkpoint
from minibert.formats.safetensors import read_safetensors, write_safetensors
from minibert.formats.tensors import HalfTensor, owns_memory
from minibert.models.params import Linear, leaves, linear
from minibert.ops import NUMPY, numba_ops
from minibert.runtime.load import load_config, load_params

GOLDENS = Path(__file__).parent / "fixtures" / "goldens"
FORMATS = Path(__file__).parent / "fixtures" / "formats"
FAMILIES = ("tiny-l1", "roberta-bpe", "deberta-v2", "distilbert-gelu", "electra-e24", "gte-rope",
            "jina-f32-safetensors", "modernbert-cls", "qwen3-reranker")
PAIRS = [("what is a cross-encoder?", "A model that reads the query and the passage together."),
         ("q", ""), ("where is Paris?", "Paris is the capital of France, on the Seine.")]


def to_bfloat16(x) -> HalfTensor:
    """float32 -> the nearest bfloat16 (ties to even), as torch's .to(bfloat16): its bits, as a HalfTensor."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return HalfTensor(((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16))


def half_copy(name: str, dtype: str, directory: Path) -> Path:
    """The golden `name` with its weights saved in bfloat16 or float16 (every floating-point tensor)."""
    shutil.copytree(GOLDENS / name, directory)
    checkpoint = find_checkpoint(directory)
    tensors = read_checkpoint(checkpoint)
    cast = to_bfloat16 if dtype == "bfloat16" else lambda t: np.asarray(t, np.float32).astype(np.float16)
    half = {k: cast(v) if isinstance(v, HalfTensor) or v.dtype.kind == "f" else v for k, v in tensors.items()}
    checkpoint.unlink()
    write_safetensors(directory / "model.safetensors", half, {"format": "pt"})
    return directory


@pytest.fixture(scope="module")
def half_goldens(tmp_path_factory):
    root = tmp_path_factory.mktemp("half")
    return {(name, dtype): half_copy(name, dtype, root / f"{name}-{dtype}")
            for name in FAMILIES for dtype in ("bfloat16", "float16")}


def arrays(params) -> list:
    """The tree's tensors (a module chain's modules aside)."""
    return [leaf for leaf in leaves(params) if isinstance(leaf, (np.ndarray, HalfTensor))]


def assert_kept(params, dtype: str, widened: int = 0):
    """Every matrix of the tree but `widened` (Specs marked widen) is a HalfTensor of `dtype`, 2 bytes an element,
    viewing the mapped file."""
    matrices = [leaf for leaf in arrays(params) if leaf.ndim == 2 and isinstance(leaf, HalfTensor)]
    assert matrices and len(matrices) == sum(leaf.ndim == 2 for leaf in arrays(params)) - widened
    for m in matrices:
        assert m.dtype_name == dtype and m.nbytes == 2 * m.stored.size
    # a stacked qkv is one 2-byte copy; every other matrix is the file itself, not a copy
    assert sum(not owns_memory(m.stored) for m in matrices) >= len(matrices) / 2
    assert all(leaf.dtype == np.float32 for leaf in arrays(params) if not isinstance(leaf, HalfTensor))


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("name", FAMILIES)
def test_kept_weights_score_as_the_weights_widened_at_load(half_goldens, name, dtype):
    directory = half_goldens[name, dtype]
    kept, wide = CrossEncoder(directory, ops="numpy"), CrossEncoder(directory, ops="numpy", widen=True)
    # float32 matrices: DeBERTa's relative embeddings (Spec widen), the LogitScore's lm_head rows (lm_head_rows)
    assert_kept(kept.params, dtype, widened=1 if name in ("deberta-v2", "qwen3-reranker") else 0)
    assert not any(isinstance(leaf, HalfTensor) for leaf in arrays(wide.params))
    scores = kept.predict(PAIRS)
    assert np.array_equal(scores, wide.predict(PAIRS)), name   # bit for bit
    # half weights really are used: the golden's own scores otherwise (gte-rope's are float16 already)
    assert (name, dtype) == ("gte-rope", "float16") or not np.array_equal(scores, CrossEncoder(GOLDENS / name, ops="numpy").predict(PAIRS))


def test_the_numba_kernels_give_the_same_bits(half_goldens):
    directory = half_goldens["tiny-l1", "bfloat16"]
    kept, wide = CrossEncoder(directory, ops="numba"), CrossEncoder(directory, ops="numba", widen=True)
    assert np.array_equal(kept.predict(PAIRS), wide.predict(PAIRS))


@pytest.mark.parametrize("ops", [NUMPY, "numba"])
def test_widen_is_exact(ops):
    ops = numba_ops() if ops == "numba" else ops
    bits = np.arange(1 << 16, dtype=np.uint16).reshape(256, 256)       # every bfloat16, NaNs and infinities too
    expected = (bits.astype(np.uint32) << 16).view(np.float32)
    assert np.array_equal(ops.widen(bits).view(np.uint32), expected.view(np.uint32))
    assert np.array_equal(ops.widen(bits[3:90:2, 7:200]).view(np.uint32), expected[3:90:2, 7:200].view(np.uint32))
    assert np.array_equal(ops.widen(bits.astype(">u2")).view(np.uint32), expected.view(np.uint32))  # big-endian
    half = bits.view(np.float16)                                        # every float16
    np.testing.assert_array_equal(ops.widen(half), half.astype(np.float32))


def test_linear_of_a_half_weight_is_the_product_of_the_widened_weight():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 48)).astype(np.float32)
    w32 = np.asarray(to_bfloat16(rng.standard_normal((61, 48))))
    b = rng.standard_normal(61).astype(np.float32)
    for ops in (NUMPY, numba_ops()):
        for bias in (b, None):
            for gelu in (False, True):
                kept = linear(Linear(to_bfloat16(w32), bias), x, ops, gelu)
                assert kept.dtype == np.float32 and kept.shape == (5, 61)
                assert np.array_equal(kept, linear(Linear(w32, bias), x, ops, gelu)), (ops, bias is None, gelu)
                whole = x @ w32.T + (0 if bias is None else bias)
                np.testing.assert_allclose(kept, ops.gelu(whole) if gelu else whole, rtol=1e-5, atol=1e-5)


def test_an_embedding_lookup_widens_only_the_rows_it_reads():
    table = to_bfloat16(np.random.default_rng(1).standard_normal((50, 8)))
    ids = np.array([3, 3, 49, 0])
    rows = table[ids]
    assert rows.dtype == np.float32 and rows.shape == (4, 8) and rows.flags.owndata
    assert np.array_equal(rows, np.asarray(table)[ids])
    assert isinstance(table[10:20], HalfTensor) and table[10:20].shape == (10, 8)
    with pytest.raises(TypeError):
        table + 1   # no silent widening of a whole matrix in arithmetic


def test_pytorch_model_bin_bfloat16_is_kept_too():
    config = load_config(FORMATS / "bin-bf16")
    kept = load_params(FORMATS / "bin-bf16", config)
    wide = load_params(FORMATS / "bin-bf16", config, widen=True)
    assert_kept(kept, "bfloat16")
    for a, b in zip(leaves(kept), leaves(wide)):
        assert np.array_equal(np.asarray(a), b)
    jina_kept, jina_wide = (CrossEncoder(GOLDENS / "jina-bf16-bin", ops="numpy", widen=w) for w in (False, True))
    assert_kept(jina_kept.params, "bfloat16")
    assert np.array_equal(jina_kept.predict(PAIRS), jina_wide.predict(PAIRS))


def test_the_kept_matrices_are_the_mapped_file(half_goldens):
    directory = half_goldens["tiny-l1", "bfloat16"]
    params = CrossEncoder(directory).params
    word = params.embeddings.word
    on_disk = read_safetensors(directory / "model.safetensors")["bert.embeddings.word_embeddings.weight"]
    assert not word.stored.flags.owndata and not word.stored.flags.writeable and not owns_memory(word.stored)
    assert np.array_equal(word.stored, on_disk.stored)
    float32_bytes = sum(np.asarray(leaf).nbytes for leaf in leaves(params))
    in_memory = sum(leaf.nbytes for leaf in leaves(params))
    assert in_memory < 0.55 * float32_bytes
