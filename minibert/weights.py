"""Checkpoint -> parameter tree.

The parameters are a small tree of frozen dataclasses holding float32 arrays. HuggingFace's
tensor names live in one table here (`_skeleton`) and nowhere else. Linear weights keep
PyTorch's [out, in] layout, so `ops.linear` computes x @ W.T + b exactly as nn.Linear does.
"""

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from minibert import checkpoint
from minibert.config import BertConfig
from minibert.errors import ModelFormatError


@dataclass(frozen=True)
class Linear:
    weight: np.ndarray  # [out, in]
    bias: np.ndarray    # [out]


@dataclass(frozen=True)
class LayerNorm:
    weight: np.ndarray  # [H]
    bias: np.ndarray    # [H]


@dataclass(frozen=True)
class Embeddings:
    word: np.ndarray        # [V, H]
    position: np.ndarray    # [P, H]
    token_type: np.ndarray  # [TV, H]
    norm: LayerNorm


@dataclass(frozen=True)
class EncoderLayer:
    qkv: Linear        # H -> 3H: the query, key and value projections stacked, in that order
    attn_out: Linear   # H -> H
    attn_norm: LayerNorm
    ffn_in: Linear     # H -> I
    ffn_out: Linear    # I -> H
    ffn_norm: LayerNorm


@dataclass(frozen=True)
class BertParams:
    embeddings: Embeddings
    layers: tuple[EncoderLayer, ...]
    pooler: Linear | None      # H -> H, then tanh; None when loaded as a bare encoder
    classifier: Linear | None  # H -> L; None when loaded as a bare encoder


class _Stack(NamedTuple):
    parts: tuple         # _Spec leaves whose tensors are concatenated along their first axis


class _Spec(NamedTuple):
    name: str                # HuggingFace tensor name, without the "bert." prefix
    shape: tuple[int, ...]


# The one table of HuggingFace tensor names: the parameter tree with _Spec leaves.
# Encoder names are given without the "bert." prefix that BertForSequenceClassification
# checkpoints carry; the classifier has no prefix.
def _skeleton(c: BertConfig, head: bool = True) -> BertParams:
    H, I, L = c.hidden_size, c.intermediate_size, c.num_labels

    def linear(name, n_out, n_in):
        return Linear(_Spec(f"{name}.weight", (n_out, n_in)), _Spec(f"{name}.bias", (n_out,)))

    def stacked(*linears):
        # One product instead of three: the weights are stacked once, at load.
        return Linear(_Stack(tuple(l.weight for l in linears)), _Stack(tuple(l.bias for l in linears)))

    def norm(name):
        return LayerNorm(_Spec(f"{name}.weight", (H,)), _Spec(f"{name}.bias", (H,)))

    def layer(i):
        p = f"encoder.layer.{i}."
        return EncoderLayer(
            qkv=stacked(linear(p + "attention.self.query", H, H),
                        linear(p + "attention.self.key", H, H),
                        linear(p + "attention.self.value", H, H)),
            attn_out=linear(p + "attention.output.dense", H, H),
            attn_norm=norm(p + "attention.output.LayerNorm"),
            ffn_in=linear(p + "intermediate.dense", I, H),
            ffn_out=linear(p + "output.dense", H, I),
            ffn_norm=norm(p + "output.LayerNorm"),
        )

    return BertParams(
        embeddings=Embeddings(
            word=_Spec("embeddings.word_embeddings.weight", (c.vocab_size, H)),
            position=_Spec("embeddings.position_embeddings.weight", (c.max_position_embeddings, H)),
            token_type=_Spec("embeddings.token_type_embeddings.weight", (c.type_vocab_size, H)),
            norm=norm("embeddings.LayerNorm"),
        ),
        layers=tuple(layer(i) for i in range(c.num_hidden_layers)),
        pooler=linear("pooler.dense", H, H) if head else None,
        classifier=linear("classifier", L, H) if head else None,
    )


def _leaves(tree):
    """The leaves of a parameter tree, depth first."""
    if tree is None:
        return
    if isinstance(tree, _Spec):
        yield tree
    elif isinstance(tree, _Stack):
        yield from tree.parts
    elif isinstance(tree, tuple):
        for item in tree:
            yield from _leaves(item)
    elif dataclasses.is_dataclass(tree):
        for f in dataclasses.fields(tree):
            yield from _leaves(getattr(tree, f.name))
    else:
        yield tree


def _map_leaves(fn, tree):
    """The same tree with every leaf replaced by fn(leaf)."""
    if tree is None:
        return None
    if isinstance(tree, _Spec):
        return fn(tree)
    if isinstance(tree, _Stack):
        return np.concatenate([fn(part) for part in tree.parts])
    if isinstance(tree, tuple):
        return tuple(_map_leaves(fn, item) for item in tree)
    if dataclasses.is_dataclass(tree):
        return type(tree)(**{f.name: _map_leaves(fn, getattr(tree, f.name)) for f in dataclasses.fields(tree)})
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


# Finding and reading checkpoint files (safetensors, shards, pytorch_model.bin) is checkpoint.py's job.
find_checkpoint = checkpoint.find_checkpoint
read_safetensors = checkpoint.read_safetensors


def load_params(model_dir: str | Path, config: BertConfig, head: bool = True) -> BertParams:
    """Read the checkpoint in `model_dir` and check it against `config`, tensor by tensor.

    head=False loads the encoder alone (embeddings and layers), for sentence embeddings: a
    pooler or classifier in the checkpoint is then not used and not checked.
    """
    path = find_checkpoint(Path(model_dir))
    return params_from_tensors(checkpoint.read_checkpoint(path), config, source=str(path), head=head)


def params_from_tensors(tensors: dict[str, np.ndarray], config: BertConfig, source: str,
                        head: bool = True) -> BertParams:
    """Map HuggingFace-named tensors onto the parameter tree; every problem is reported at once."""
    skeleton = _skeleton(config, head)
    expected = dict(_leaves(skeleton))  # HF name (no prefix) -> shape
    # BertForSequenceClassification saves the encoder under "bert."; a bare BertModel saves none.
    prefix = "bert." if any(k.startswith("bert.") for k in tensors) else ""

    found: dict[str, np.ndarray] = {}
    unexpected = []
    for key, array in tensors.items():
        name = _canonical(key, prefix)
        if _is_ignored(key) or (not head and name.startswith(("pooler.", "classifier."))):
            continue
        if name in expected and name not in found:
            found[name] = array
        else:
            unexpected.append(key)

    if head and not any(name.startswith("classifier.") for name in found):
        raise ModelFormatError(
            f"{source}: no classifier tensors: this is a bare BERT encoder (BertModel), not a "
            "cross-encoder. A cross-encoder checkpoint is a BertForSequenceClassification, "
            "with a 'classifier' head on the pooled [CLS] output")

    problems = []
    for name, shape in expected.items():
        shown = name if name.startswith("classifier.") else prefix + name
        if name not in found:
            problems.append(f"missing tensor {shown}, expected shape {list(shape)}")
        elif tuple(found[name].shape) != shape:
            problems.append(f"tensor {shown}: expected shape {list(shape)}, found {list(found[name].shape)}")
    problems += [f"unexpected tensor {key}" for key in unexpected]
    if problems:
        raise ModelFormatError(
            f"{source}: checkpoint does not match {config.source}:\n  " + "\n  ".join(problems))

    return _map_leaves(lambda spec: _as_float32(found[spec.name], spec.name, source), skeleton)


def _as_float32(array: np.ndarray, name: str, source: str) -> np.ndarray:
    """An owned, C-contiguous float32 copy of a checkpoint tensor (float16/64 upcast or cast exactly as
    torch's .float() does; bfloat16 arrives already converted). Checkpoint arrays are views of the
    memory-mapped file, so this is the one copy; the parameters never depend on the file afterwards."""
    if array.dtype.kind != "f":
        raise ModelFormatError(f"{source}: tensor {name} has dtype {array.dtype}; expected a floating-point tensor")
    if array.dtype == np.float32 and array.flags.c_contiguous and array.flags.writeable \
            and checkpoint.owns_memory(array):
        out = array  # already a private float32 array (a converted bfloat16 tensor)
    else:
        out = np.array(array, dtype=np.float32, order="C")
    if not np.isfinite(out).all():  # a float64 too large for float32 becomes inf here, so check after the cast
        bad = int(np.size(out) - np.isfinite(out).sum())
        raise ModelFormatError(f"{source}: tensor {name} has {bad} non-finite values (NaN or infinity); "
                               "a model with them gives NaN scores")
    return out
