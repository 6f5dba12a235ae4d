"""Checkpoint tensors -> parameter tree.

The parameters are a small tree of frozen dataclasses holding float32 arrays. Each family's
HuggingFace tensor names live in one table, its `skeleton` (the same tree with `Spec` leaves),
in the family's own file, and nowhere else; this module maps a checkpoint's tensors onto it.
Linear weights keep PyTorch's [out, in] layout, so `linear` computes x @ W.T + b exactly
as nn.Linear does.

Weights in memory: a float32 checkpoint's tensors are copied once, to owned float32 arrays. A
bfloat16 or float16 checkpoint's matrices (Linear weights, embedding tables: every 2-D tensor a
skeleton does not mark `widen`) stay at their stored precision, as a `HalfTensor` viewing the
memory-mapped file, half the memory of float32; `linear` widens the matrix for each product
and `table[ids]` the rows it gathers. Vectors (norms, biases) are widened at load. With widen=True
everything is widened at load (faster products, twice the memory); the numbers are the same.
"""

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from minibert.errors import ModelFormatError, NotACrossEncoderError
from minibert.formats.tensors import HalfTensor, owns_memory, release_pages


@dataclass(frozen=True)
class Linear:
    weight: np.ndarray | HalfTensor   # [out, in]: float32, or kept at the checkpoint's half precision
    bias: np.ndarray | None           # [out]; None for a bias-free linear


@dataclass(frozen=True)
class LayerNorm:
    weight: np.ndarray        # [H]
    bias: np.ndarray | None   # [H]; None for a bias-free norm


class Spec(NamedTuple):
    """A leaf of a skeleton: the HuggingFace tensor name (without the family's prefix) and its shape.
    widen=True: float32 in memory even from a half-precision checkpoint (a matrix the forward pass uses in
    arithmetic of its own, not as the weights of a `linear` or a table read by `table[ids]`)."""
    name: str
    shape: tuple[int, ...]
    widen: bool = False


class Stack(NamedTuple):
    """Leaves whose tensors are concatenated along their first axis at load (query | key | value)."""
    parts: tuple


def linear(p: Linear, x, ops, gelu: bool = False):
    """nn.Linear applied: x @ W.T + b through ops.linear (a bias-free layer: x @ W.T, bias None); gelu=True:
    GELU of it, through ops.linear_gelu. [.., in] -> [.., out], float32.

    A half-precision weight (HalfTensor) is widened to float32 just for this product (a temporary of one
    matrix, [out, in]), and the product is then the very call a float32 weight makes: a half checkpoint kept
    as stored gives, bit for bit, the numbers of the same checkpoint widened at load."""
    weight = ops.widen(p.weight.stored) if isinstance(p.weight, HalfTensor) else p.weight   # [out, in] float32
    if p.bias is not None:
        return (ops.linear_gelu if gelu else ops.linear)(x, weight, p.bias)
    return ops.gelu(ops.linear(x, weight, None)) if gelu else ops.linear(x, weight, None)


def rows(p: Linear, start: int, stop: int) -> Linear:
    """Output rows [start, stop) of an nn.Linear, as a Linear (views; the query of a stacked qkv, say)."""
    return Linear(p.weight[start:stop], None if p.bias is None else p.bias[start:stop])


def linear_spec(name: str, n_out: int, n_in: int, bias: bool = True) -> Linear:
    """The Spec leaves of an nn.Linear named `name`, [out, in]."""
    return Linear(Spec(f"{name}.weight", (n_out, n_in)), Spec(f"{name}.bias", (n_out,)) if bias else None)


def stacked(*linears: Linear) -> Linear:
    """Several nn.Linear of the same input as one product: the weights are stacked once, at load."""
    return Linear(Stack(tuple(l.weight for l in linears)),
                  Stack(tuple(l.bias for l in linears)) if linears[0].bias is not None else None)


def norm_spec(name: str, width: int, bias: bool = True) -> LayerNorm:
    """The Spec leaves of an nn.LayerNorm named `name`."""
    return LayerNorm(Spec(f"{name}.weight", (width,)), Spec(f"{name}.bias", (width,)) if bias else None)


def leaves(tree):
    """The leaves of a parameter tree, depth first."""
    if tree is None:
        return
    if isinstance(tree, Spec):
        yield tree
    elif isinstance(tree, Stack):
        yield from tree.parts
    elif isinstance(tree, tuple):
        for item in tree:
            yield from leaves(item)
    elif dataclasses.is_dataclass(tree):
        for f in dataclasses.fields(tree):
            yield from leaves(getattr(tree, f.name))
    else:
        yield tree


def map_leaves(fn, tree):
    """The same tree with every leaf replaced by fn(leaf)."""
    if tree is None:
        return None
    if isinstance(tree, Spec):
        return fn(tree)
    if isinstance(tree, Stack):
        parts = [fn(part) for part in tree.parts]
        if all(isinstance(part, HalfTensor) for part in parts):   # stacked at the stored precision
            return HalfTensor(np.concatenate([part.stored for part in parts]))
        return np.concatenate([np.asarray(part) for part in parts])
    if isinstance(tree, tuple):
        return tuple(map_leaves(fn, item) for item in tree)
    if dataclasses.is_dataclass(tree):
        return type(tree)(**{f.name: map_leaves(fn, getattr(tree, f.name)) for f in dataclasses.fields(tree)})
    return fn(tree)


def _is_ignored(key: str) -> bool:
    # Non-persistent buffers that older transformers versions saved: not parameters.
    return key.endswith("embeddings.position_ids") or key.endswith("embeddings.token_type_ids")


# Older checkpoints name LayerNorm parameters gamma/beta; transformers renames them on load.
_LEGACY_SUFFIXES = {".LayerNorm.gamma": ".LayerNorm.weight", ".LayerNorm.beta": ".LayerNorm.bias"}


def _canonical(key: str, encoder_prefix: str) -> str:
    """Checkpoint key -> table key: drop the encoder prefix, rename gamma/beta."""
    if encoder_prefix and key.startswith(encoder_prefix):
        key = key[len(encoder_prefix):]
    for old, new in _LEGACY_SUFFIXES.items():
        if key.endswith(old):
            key = key[: -len(old)] + new
    return key


def params_from_tensors(tensors: dict[str, np.ndarray], family, config, source: str, head: bool = True,
                        widen: bool = False):
    """Map HuggingFace-named tensors onto the family's parameter tree; every problem is reported at once.

    head=False maps the encoder alone (embeddings and layers), for sentence embeddings: a pooler or
    classifier among the tensors is then not used and not checked. widen=True: half-precision matrices
    are widened to float32 at load too, instead of kept as stored (the module docstring).
    """
    skeleton = family.skeleton(config, head)
    expected = {spec.name: spec.shape for spec in leaves(skeleton)}  # HF name (no prefix) -> shape
    # *ForSequenceClassification saves the encoder under the family's prefix ("bert."); a bare base
    # model saves none.
    prefix = family.prefix if any(k.startswith(family.prefix) for k in tensors) else ""

    found: dict[str, np.ndarray] = {}
    unexpected = []
    for key, array in tensors.items():
        name = _canonical(key, prefix)
        if _is_ignored(key) or (not head and name.startswith(family.head)):
            continue
        if name in expected and name not in found:
            found[name] = array
        elif not any(part in key for part in family.ignored_unexpected):
            unexpected.append(key)

    if head and not any(name.startswith(family.classifier) for name in found):
        raise NotACrossEncoderError(
            f"{source}: no {family.classifier.rstrip('.')!r} tensors: this is a bare {family.name} encoder (no "
            "classification head), not a "
            f"cross-encoder. A cross-encoder checkpoint is a {family.name} *ForSequenceClassification, with a "
            f"{family.classifier.rstrip('.')!r} head; as a sentence encoder, SentenceEncoder reads this one")

    shown = {name: name if name.startswith(family.top_level) else prefix + name for name in expected}
    return _mapped(skeleton, expected, found, unexpected, shown, source, f"checkpoint does not match {config.source}",
                   widen)


def tree_from_tensors(tensors: dict[str, np.ndarray], skeleton, source: str, widen: bool = False):
    """Map tensors onto a parameter tree whose names they must have exactly (a sentence-transformers module's
    weights); every problem is reported at once. widen: as params_from_tensors."""
    expected = {spec.name: spec.shape for spec in leaves(skeleton)}
    found = {name: array for name, array in tensors.items() if name in expected}
    unexpected = [name for name in tensors if name not in expected]
    return _mapped(skeleton, expected, found, unexpected, {name: name for name in expected}, source,
                   "the weights do not match the module's config", widen)


def _mapped(skeleton, expected: dict, found: dict, unexpected: list, shown: dict, source: str, what: str,
            widen: bool):
    """The skeleton with every leaf replaced by its tensor as kept in memory (_kept), once every name and shape
    is checked."""
    problems = []
    for name, shape in expected.items():
        if name not in found:
            problems.append(f"missing tensor {shown[name]}, expected shape {list(shape)}")
        elif tuple(found[name].shape) != shape:
            problems.append(f"tensor {shown[name]}: expected shape {list(shape)}, found {list(found[name].shape)}")
    problems += [f"unexpected tensor {key}" for key in unexpected]
    if problems:
        raise ModelFormatError(f"{source}: {what}:\n  " + "\n  ".join(problems))
    return map_leaves(lambda spec: _kept(found[spec.name], spec, source, widen), skeleton)


def _kept(array, spec: Spec, source: str, widen: bool):
    """A checkpoint tensor as the parameters keep it: a bfloat16 or float16 matrix as a HalfTensor (the mapped
    file's view; a 2-byte copy if the file's layout is not row-major), unless widen or spec.widen; anything
    else as an owned float32 copy (_as_float32)."""
    half = array if isinstance(array, HalfTensor) else HalfTensor(array) if array.dtype == np.float16 else None
    if half is None:
        return _as_float32(array, spec.name, source)
    if half.ndim != 2 or widen or spec.widen:
        kept = _as_float32(np.asarray(half), spec.name, source)
        release_pages(half.stored)   # widened into a copy: the file's pages can go
        return kept
    _check_finite(half.nonfinite(), spec.name, source)
    return half if half.stored.flags.c_contiguous else HalfTensor(np.ascontiguousarray(half.stored))


def _check_finite(bad: int, name: str, source: str):
    if bad:
        raise ModelFormatError(f"{source}: tensor {name} has {bad} non-finite values (NaN or infinity); "
                               "a model with them gives NaN scores")


# A large tensor (an embedding table of 250,002 x 1,024 floats is 1 GB) is copied out of the mapped file this many
# bytes at a time, the file's pages of each block released once copied (formats/tensors.release_pages): the load's
# peak is then the weights once, not the table twice.
COPY_BLOCK_BYTES = 32 << 20


def _as_float32(array: np.ndarray, name: str, source: str) -> np.ndarray:
    """An owned, C-contiguous float32 copy of a checkpoint tensor (float16/64 upcast or cast exactly as
    torch's .float() does; a bfloat16 HalfTensor arrives widened). Checkpoint arrays are views of the
    memory-mapped file, so this is the one copy; the parameter never depends on the file afterwards, and the
    file's pages are released as they are copied (release_pages)."""
    if array.dtype.kind != "f":
        raise ModelFormatError(f"{source}: tensor {name} has dtype {array.dtype}; expected a floating-point tensor")
    if array.dtype == np.float32 and array.flags.c_contiguous and array.flags.writeable \
            and owns_memory(array):
        out = array  # already a private float32 array (a widened bfloat16 tensor)
    elif array.ndim and array.flags.c_contiguous:  # copied a block of rows at a time, each block's file pages let go
        out = np.empty(array.shape, np.float32)
        step = max(1, COPY_BLOCK_BYTES // max(1, array[:1].nbytes))
        for i in range(0, len(array), step):
            out[i:i + step] = array[i:i + step]
            release_pages(array[i:i + step])
    else:
        out = np.array(array, dtype=np.float32, order="C")
        release_pages(array)
    # a float64 too large for float32 becomes inf here, so check after the cast
    _check_finite(int(np.size(out) - np.isfinite(out).sum()), name, source)
    return out
