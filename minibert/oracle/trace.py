"""Trace files: what a backend computed for some pairs, stage by stage (format `minibert-trace/1`).

A backend (Candle, an ONNX export, rust-bert, ggml, your own) runs some pairs and writes what it
computed in a trace file; minibert recomputes every stage on that backend's own token ids
(compare.py), so a backend whose tokenizer differs can still check its math.

The trace file is a safetensors file (the README documents it):

    __metadata__    format = "minibert-trace/1", layout = "padded" | "packed", optional producer, model
    input_ids       int64 [B, T] (padded) or [N] (packed)
    attention_mask  int64 [B, T], 1 for real tokens, which come first in each row   (padded only)
    offsets         int64 [B + 1], pair b owns rows offsets[b]:offsets[b + 1]         (packed only)
    token_type_ids  int64, the layout of input_ids                                    (optional)
    embeddings, layer_0 .. layer_{L-1}      [B, T, H] or [N, H]                      (optional)
    the head's stage (Family.head_stage: pooled, head_dense)   [B, H]                 (optional)
    logits                                  [B, num_labels]                          (required)

Stages are float32, float16 or bfloat16. Whatever the layout, a trace is read into the packed form
minibert computes in ([N, H] over real tokens only), so padding positions are never compared.
"""

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minibert.errors import InputError, ModelFormatError, TraceError
from minibert.formats.safetensors import (
    read_header,
    read_safetensors,
    write_safetensors,
)
from minibert.models.batch import Batch

FORMAT = "minibert-trace/1"
LAYOUTS = ("padded", "packed")
INPUTS = ("input_ids", "attention_mask", "offsets", "token_type_ids")
# The unit roundoff of each dtype a stage may be stored in: storing a float32 value rounds it by this much.
STORAGE_ROUNDOFF = {"F32": 0.0, "F16": 2.0 ** -11, "BF16": 2.0 ** -8}
_TOKEN_STAGE = re.compile(r"embeddings|layer_\d+")




@dataclass(frozen=True)
class Trace:
    """A trace, packed: token stages [N, X] over real tokens, pair stages [B, X], all float32."""
    input_ids: np.ndarray              # [N] int64
    token_type_ids: np.ndarray | None  # [N] int64, or None when the trace has none
    offsets: np.ndarray                # [B + 1] int64
    stages: dict                       # name -> float32 array, in the file's order
    dtypes: dict                       # name -> "F32" | "F16" | "BF16", as stored
    layout: str = "packed"
    metadata: dict = dataclasses.field(default_factory=dict)
    source: str = "<trace>"

    @property
    def num_pairs(self) -> int:
        return len(self.offsets) - 1

    def batch(self, token_type_ids) -> Batch:
        """The trace's token ids as minibert runs them, with these token types ([N])."""
        bounds = zip(self.offsets[:-1].tolist(), self.offsets[1:].tolist())
        return Batch.pack([(self.input_ids[a:b], token_type_ids[a:b]) for a, b in bounds])


# ---------------------------------------------------------------------------------------------
# Writing


def write_trace(path, stages: dict, batch: Batch, layout: str = "packed", producer: str | None = None,
                model: str | None = None, pad_token_id: int = 0, token_types: bool = True) -> None:
    """Write a trace of packed `stages` (minibert's: token stages [N, X], the others [B, X]) for `batch`.

    padded: each pair's rows go to [b, :T_b] of [B, T, X] arrays, zeros after; input_ids is padded with
    pad_token_id. token_types=False leaves token_type_ids out (a family without token types).
    """
    if layout not in LAYOUTS:
        raise InputError(f"layout must be one of {', '.join(LAYOUTS)}, found {layout!r}")
    N, B = len(batch.input_ids), len(batch.offsets) - 1
    tensors = {}
    if layout == "packed":
        tensors["input_ids"] = batch.input_ids.astype(np.int64)
        tensors["offsets"] = batch.offsets.astype(np.int64)
        if token_types:
            tensors["token_type_ids"] = batch.token_type_ids.astype(np.int64)
    else:
        T = int(batch.lengths.max()) if B else 0
        mask = np.arange(T)[None, :] < batch.lengths[:, None]              # [B, T] real tokens
        tensors["input_ids"] = np.full((B, T), pad_token_id, np.int64)
        tensors["input_ids"][mask] = batch.input_ids
        tensors["attention_mask"] = mask.astype(np.int64)
        if token_types:
            tensors["token_type_ids"] = np.zeros((B, T), np.int64)
            tensors["token_type_ids"][mask] = batch.token_type_ids
    for name, value in stages.items():
        value = np.asarray(value, dtype=np.float32)
        if layout == "padded" and is_token_stage(name, value, N, B):
            padded = np.zeros((B, T, value.shape[1]), np.float32)            # [N, X] -> [B, T, X]
            padded[mask] = value
            value = padded
        tensors[name] = value
    metadata = {"format": FORMAT, "layout": layout}
    metadata.update({k: v for k, v in (("producer", producer), ("model", model)) if v is not None})
    write_safetensors(path, tensors, metadata)


# ---------------------------------------------------------------------------------------------
# Reading


def read_trace(path) -> Trace:
    """A trace file, checked and packed; any problem is a TraceError naming the file and the tensor."""
    path = Path(path)
    where = f"{path}"
    try:
        tensors = read_safetensors(path)
        metadata, dtypes = read_header(path)
    except ModelFormatError as exc:
        raise TraceError(f"{exc} (a trace is a safetensors file, format {FORMAT})") from None
    if metadata.get("format") != FORMAT:
        raise TraceError(f"{where}: __metadata__ format must be {FORMAT!r}, found {metadata.get('format')!r}")
    layout = metadata.get("layout")
    if layout not in LAYOUTS:
        raise TraceError(f"{where}: __metadata__ layout must be 'padded' or 'packed', found {layout!r}")
    for name in INPUTS:
        if name in tensors and dtypes[name] != "I64":
            raise TraceError(f"{where}: tensor {name!r} must be int64 (I64), found {dtypes[name]}")
    if "input_ids" not in tensors:
        raise TraceError(f"{where}: no tensor 'input_ids'")
    if "logits" not in tensors:
        raise TraceError(f"{where}: no tensor 'logits' (the one stage every trace must have)")
    unwanted = "offsets" if layout == "padded" else "attention_mask"
    if unwanted in tensors:
        raise TraceError(f"{where}: tensor {unwanted!r} does not belong in a {layout} trace")
    ids, types_ = tensors["input_ids"], tensors.get("token_type_ids")
    if layout == "padded":
        offsets, mask = _padded_inputs(tensors, where)
        pack = lambda a: a[mask]                                     # [B, T, ...] -> [N, ...], row order
        ids, types_ = pack(ids), None if types_ is None else pack(types_)
    else:
        offsets = _packed_inputs(tensors, where)
        pack = None
    N, B = len(ids), len(offsets) - 1
    if not B:
        raise TraceError(f"{where}: tensor 'input_ids' holds no pairs")
    stages, stored = {}, {}
    for name, value in tensors.items():
        if name in INPUTS:
            continue
        what = f"{where}: tensor {name!r}"
        if dtypes[name] not in STORAGE_ROUNDOFF:
            raise TraceError(f"{what}: a stage must be float32, float16 or bfloat16, found {dtypes[name]}")
        token_stage = _TOKEN_STAGE.fullmatch(name) is not None or (
            value.ndim == (3 if layout == "padded" else 2) and name != "logits"
            and (layout == "padded" or (value.shape[0] == N and N != B)))
        if token_stage:
            want = "[B, T, X]" if layout == "padded" else "[N, X]"
            lead = tensors["input_ids"].shape if layout == "padded" else (N,)
            if value.ndim != len(lead) + 1 or value.shape[:len(lead)] != tuple(lead):
                raise TraceError(f"{what}: expected {want} = [{', '.join(map(str, lead))}, X] like input_ids, "
                                 f"found {list(value.shape)}")
            value = pack(value) if pack else value
        elif value.ndim != 2 or value.shape[0] != B:
            raise TraceError(f"{what}: expected [B, X] = [{B}, X] (one row per pair), found {list(value.shape)}")
        stages[name] = np.asarray(value, dtype=np.float32)
        stored[name] = dtypes[name]
    return Trace(np.ascontiguousarray(ids, dtype=np.int64),
                 None if types_ is None else np.ascontiguousarray(types_, dtype=np.int64),
                 offsets, stages, stored, layout, metadata, str(path))


def _padded_inputs(tensors, where):
    ids = tensors["input_ids"]
    if ids.ndim != 2:
        raise TraceError(f"{where}: tensor 'input_ids' of a padded trace must be [B, T], found {list(ids.shape)}")
    for name in ("attention_mask", "token_type_ids"):
        if name == "attention_mask" and name not in tensors:
            raise TraceError(f"{where}: a padded trace needs tensor 'attention_mask' [B, T]")
        if name in tensors and tensors[name].shape != ids.shape:
            raise TraceError(f"{where}: tensor {name!r} must have input_ids' shape {list(ids.shape)}, "
                             f"found {list(tensors[name].shape)}")
    mask = tensors["attention_mask"]
    if not np.isin(mask, (0, 1)).all():
        raise TraceError(f"{where}: tensor 'attention_mask' must hold only 0 and 1")
    lengths = mask.sum(axis=1)
    real_first = np.arange(mask.shape[1])[None, :] < lengths[:, None]
    if (real_first != mask.astype(bool)).any():
        b = int(np.flatnonzero((real_first != mask.astype(bool)).any(axis=1))[0])
        raise TraceError(f"{where}: tensor 'attention_mask' row {b}: the real tokens (1) must come first, "
                         "then the padding (0): right padding")
    if len(lengths) and lengths.min() < 1:
        raise TraceError(f"{where}: tensor 'attention_mask' row {int(np.argmin(lengths))} has no real token")
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), mask.astype(bool)


def _packed_inputs(tensors, where):
    ids = tensors["input_ids"]
    if ids.ndim != 1:
        raise TraceError(f"{where}: tensor 'input_ids' of a packed trace must be [N], found {list(ids.shape)}")
    if "offsets" not in tensors:
        raise TraceError(f"{where}: a packed trace needs tensor 'offsets' [B + 1]")
    offsets = tensors["offsets"]
    if offsets.ndim != 1 or len(offsets) < 1:
        raise TraceError(f"{where}: tensor 'offsets' must be [B + 1], found {list(offsets.shape)}")
    if offsets[0] != 0 or offsets[-1] != len(ids) or (np.diff(offsets) < 1).any():
        raise TraceError(f"{where}: tensor 'offsets' must rise from 0 to len(input_ids) = {len(ids)} by at least 1 "
                         f"per pair, found {_short(offsets)}")
    if "token_type_ids" in tensors and tensors["token_type_ids"].shape != ids.shape:
        raise TraceError(f"{where}: tensor 'token_type_ids' must have input_ids' shape {list(ids.shape)}, "
                         f"found {list(tensors['token_type_ids'].shape)}")
    return np.asarray(offsets, dtype=np.int64)


def _short(values) -> str:
    values = list(map(int, values))
    return str(values) if len(values) <= 8 else f"[{', '.join(map(str, values[:8]))}, ...]"


def is_token_stage(name: str, value, N: int, B: int) -> bool:
    """True for a stage with one row per token ([N, X]), False for one row per pair ([B, X])."""
    return _TOKEN_STAGE.fullmatch(name) is not None or (name != "logits" and len(value) == N and N != B)
