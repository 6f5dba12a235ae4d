"""The oracle: another backend's activations checked against minibert's, stage by stage.

A backend (Candle, an ONNX export, rust-bert, ggml, your own) runs some pairs and writes what it
computed in a trace file; minibert recomputes every stage on that backend's own token ids, so a
backend whose tokenizer differs can still check its math, and says which stage parts first, where,
and what the usual cause of that pattern is.

The trace file, format `minibert-trace/1`, is a safetensors file (the README documents it):

    __metadata__    format = "minibert-trace/1", layout = "padded" | "packed", optional producer, model
    input_ids       int64 [B, T] (padded) or [N] (packed)
    attention_mask  int64 [B, T], 1 for real tokens, which come first in each row   (padded only)
    offsets         int64 [B + 1], pair b owns rows offsets[b]:offsets[b + 1]         (packed only)
    token_type_ids  int64, the layout of input_ids                                    (optional)
    embeddings, layer_0 .. layer_{L-1}      [B, T, H] or [N, H]                      (optional)
    the head's stage (pooled; head_dense)   [B, H]   see HEAD_MODULES                (optional)
    logits                                  [B, num_labels]                          (required)

Stages are float32, float16 or bfloat16. Whatever the layout, a trace is read into the packed form
minibert computes in ([N, H] over real tokens only), so padding positions are never compared.

Comparison of one stage, over real tokens only (ref: minibert's, theirs: the trace's, float64):
    ok          every |theirs - ref| <= atol + (rtol + u) * |ref|, u the unit roundoff of the
                trace's dtype (0 for float32, 2^-11 for float16, 2^-8 for bfloat16)
    max_abs     max |theirs - ref|
    max_rel     max |theirs - ref| / |ref|, over the elements with |ref| >= atol
    nmse        sum (theirs - ref)^2 / sum ref^2
    min_cosine  the smallest cosine similarity of a row (a token's, or a pair's) with its reference
"""

import dataclasses
import json
import os
import re
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minibert import checkpoint
from minibert import ops as reference_ops
from minibert.errors import InputError, ModelFormatError, TraceError
from minibert.model import Batch, forward
from minibert.models import family_of, roberta

FORMAT = "minibert-trace/1"
LAYOUTS = ("padded", "packed")
DEFAULT_ATOL = DEFAULT_RTOL = 1e-4
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


def write_safetensors(path, tensors: dict, metadata: dict) -> None:
    """A safetensors file (8-byte header length, JSON header, data), written whole then renamed into place."""
    tags = {np.dtype("<f4"): "F32", np.dtype("<f2"): "F16", np.dtype("<i8"): "I64", np.dtype("<i4"): "I32"}
    header, chunks, offset = {"__metadata__": metadata}, [], 0
    for name, array in tensors.items():
        array = np.ascontiguousarray(array)
        data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": tags[array.dtype.newbyteorder("<")], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # the data buffer starts 8-aligned, as safetensors' own writer does
    partial = f"{path}.partial-{os.getpid()}"
    try:
        with open(partial, "wb") as f:
            f.write(len(raw).to_bytes(8, "little"))
            f.write(raw)
            for data in chunks:
                f.write(data)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def trace_with_minibert(ce, pairs, path, layout: str = "packed") -> None:
    """minibert's own trace of `pairs` (CrossEncoder `ce`), every stage, reference ops."""
    if not len(pairs):
        raise InputError("no pairs to trace")
    batch = Batch.pack(ce.tokenizer.encode_pairs(pairs))
    _, stages = forward(ce.params, ce.config, batch, reference_ops, return_stages=True)
    write_trace(path, stages, batch, layout, producer="minibert", model=str(ce.path),
                pad_token_id=ce.config.pad_token_id or 0, token_types=ce.tokenizer.token_types)


# The head stage of each family's *ForSequenceClassification, per model_type: minibert's name for it and the
# linear layer that makes the logits, whose input it is (a dropout in between is the identity in eval mode):
#   bert        pooled      BertPooler: tanh(dense([CLS]))
#   roberta..   head_dense  RobertaClassificationHead's tanh(dense(<s>)), before out_proj
#   electra     pooled      ElectraClassificationHead's GELU(dense([CLS])), before out_proj
#   distilbert  pooled      ReLU(pre_classifier([CLS]))
#   deberta-v2  pooled      ContextPooler: act(dense([CLS]))
#   modernbert  pooled      ModernBertPredictionHead: norm(act(dense(cls or mean pooling)))
HEAD_MODULES = {"bert": ("pooled", "classifier"), "roberta": ("head_dense", "classifier.out_proj"),
                "xlm-roberta": ("head_dense", "classifier.out_proj"), "camembert": ("head_dense", "classifier.out_proj"),
                "electra": ("pooled", "classifier.out_proj"), "distilbert": ("pooled", "classifier"),
                "deberta-v2": ("pooled", "classifier"), "modernbert": ("pooled", "classifier")}


def trace_from_transformers(model, tokenizer, pairs, path, layout: str = "padded", max_length=None) -> None:
    """A trace of `pairs` by a transformers *ForSequenceClassification (eval mode) and its tokenizer.

    Needs the `golden` extra (torch, transformers). Tokenized as sentence-transformers' CrossEncoder does
    (padding=True, truncation="longest_first"); stages: hidden_states[0] -> embeddings,
    hidden_states[i + 1] -> layer_i, the head stage of HEAD_MODULES, logits.
    """
    import torch  # the golden extra; minibert itself never imports torch

    pairs = [tuple(p) for p in pairs]
    enc = tokenizer([q for q, _ in pairs], [p for _, p in pairs], padding=True, truncation="longest_first",
                    max_length=max_length, return_tensors="pt")
    captured, hooks = {}, []
    head = HEAD_MODULES.get(model.config.model_type)
    if head is not None:
        module = model.get_submodule(head[1])
        hooks.append(module.register_forward_pre_hook(lambda mod, inp: captured.__setitem__(head[0], inp[0])))
    model.eval()
    try:
        with torch.no_grad():
            out = model(**enc.to(model.device), output_hidden_states=True)
    finally:
        for hook in hooks:
            hook.remove()
    tensors = {name: enc[name].cpu().numpy().astype(np.int64) for name in INPUTS if name in enc}
    stages = {"embeddings": out.hidden_states[0]}
    stages.update({f"layer_{i}": h for i, h in enumerate(out.hidden_states[1:])})
    stages.update(captured)
    stages["logits"] = out.logits
    tensors.update({name: value.float().cpu().numpy() for name, value in stages.items()})
    if layout == "packed":
        mask = tensors.pop("attention_mask").astype(bool)                    # [B, T]
        lengths = mask.sum(axis=1)
        for name in tensors:
            if name in INPUTS or tensors[name].ndim == 3:                    # [B, T, ...] -> [N, ...]
                tensors[name] = tensors[name][mask]
        tensors = {"input_ids": tensors.pop("input_ids"),
                   "offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), **tensors}
    import transformers
    metadata = {"format": FORMAT, "layout": layout, "producer": f"transformers {transformers.__version__}",
                "model": str(getattr(model.config, "_name_or_path", "") or model.config.model_type)}
    write_safetensors(path, tensors, metadata)


# ---------------------------------------------------------------------------------------------
# Reading


def read_trace(path) -> Trace:
    """A trace file, checked and packed; any problem is a TraceError naming the file and the tensor."""
    path = Path(path)
    where = f"{path}"
    try:
        tensors = checkpoint.read_safetensors(path)
        metadata = _metadata(path)
    except ModelFormatError as exc:
        raise TraceError(f"{exc} (a trace is a safetensors file, format {FORMAT})") from None
    dtypes = _dtypes(path)
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


def _metadata(path: Path) -> dict:
    """The __metadata__ object of a safetensors file that read_safetensors has already checked."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        return json.loads(f.read(n).decode("utf-8")).get("__metadata__", {})


def _dtypes(path: Path) -> dict:
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n).decode("utf-8"))
    return {name: info["dtype"] for name, info in header.items() if name != "__metadata__"}


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


# ---------------------------------------------------------------------------------------------
# Comparing


@dataclass(frozen=True)
class StageResult:
    name: str
    max_abs: float
    max_rel: float
    nmse: float
    min_cosine: float
    ok: bool


@dataclass(frozen=True)
class Divergence:
    stage: str
    pair: int
    token: int | None   # the token's position within its pair; None for a stage with one row per pair
    dim: int
    reference: float
    theirs: float
    diagnosis: str | None


@dataclass(frozen=True)
class Report:
    stages: list            # [StageResult], forward order
    missing: list           # the model's stages the trace does not have
    first_divergence: Divergence | None
    tokens_match: bool | None
    token_mismatch: str | None  # where the ids first differ, in words

    @property
    def ok(self) -> bool:
        return self.first_divergence is None and self.tokens_match is not False

    def to_json(self) -> dict:
        div = self.first_divergence
        return {"tokens_match": self.tokens_match,
                "stages": [{"name": s.name, "max_abs": _finite(s.max_abs), "max_rel": _finite(s.max_rel),
                            "nmse": _finite(s.nmse), "min_cosine": _finite(s.min_cosine), "ok": s.ok}
                           for s in self.stages],
                "first_divergence": None if div is None else {
                    "stage": div.stage, "pair": div.pair, "token": div.token, "dim": div.dim,
                    "reference": _finite(div.reference), "theirs": _finite(div.theirs), "diagnosis": div.diagnosis}}


def _finite(x):
    return float(x) if np.isfinite(x) else None  # JSON has no NaN or infinity


@dataclass(frozen=True)
class Context:
    """What a comparison knows: the model, the trace, the batch minibert ran, its stages, the tolerance."""
    params: object
    config: object
    trace: Trace
    batch: Batch
    reference: dict
    atol: float
    rtol: float


def reference_stages(params, config, batch, ops=reference_ops) -> dict:
    _, stages = forward(params, config, batch, ops, return_stages=True)
    return stages


def compare(params, config, trace: Trace, atol=DEFAULT_ATOL, rtol=DEFAULT_RTOL, token_type_ids=None,
            tokens_match=None, token_mismatch=None) -> Report:
    """Every stage of `trace` against minibert's stages on the trace's own token ids, in forward order.

    token_type_ids: the types to run minibert with when the trace has none (see reference_types).
    """
    types_ = trace.token_type_ids if trace.token_type_ids is not None else token_type_ids
    if types_ is None:
        types_ = np.zeros_like(trace.input_ids)
    if not config.type_vocab_size:
        types_ = np.zeros_like(trace.input_ids)   # the family reads no token types
    batch = trace.batch(types_)
    try:
        reference = reference_stages(params, config, batch)
    except InputError as exc:  # an id outside the vocabulary, a pair longer than the positions
        tensor = "token_type_ids" if "token type" in str(exc) else "input_ids"
        raise TraceError(f"{trace.source}: tensor {tensor!r}: {exc}") from None
    unknown = [name for name in trace.stages if name not in reference]
    if unknown:
        raise TraceError(f"{trace.source}: tensor {unknown[0]!r} is not a stage of this {family_of(config).name} "
                         f"model, whose stages are {_stage_list(reference)}")
    N, B = len(batch.input_ids), trace.num_pairs
    for name in trace.stages:
        if trace.stages[name].shape != reference[name].shape:
            rows = "N" if is_token_stage(name, reference[name], N, B) else "B"
            raise TraceError(f"{trace.source}: tensor {name!r}: expected [{rows}, X] = {list(reference[name].shape)} "
                             f"as packed (the model's width), found {list(trace.stages[name].shape)}")
    ctx = Context(params, config, trace, batch, reference, atol, rtol)
    results, divergence = [], None
    for name in reference:
        if name not in trace.stages:
            continue
        theirs = trace.stages[name]
        result = stage_result(name, reference[name], theirs, atol, rtol + STORAGE_ROUNDOFF[trace.dtypes[name]])
        results.append(result)
        if not result.ok and divergence is None:
            divergence = first_divergence(ctx, name)
    missing = [name for name in reference if name not in trace.stages]
    return Report(results, missing, divergence, tokens_match, token_mismatch)


def _stage_list(stages) -> str:
    names = list(stages)
    layers = [n for n in names if n.startswith("layer_")]
    if len(layers) > 2:
        names = [n for n in names if not n.startswith("layer_")]
        names.insert(1, f"{layers[0]}..{layers[-1]}")
    return ", ".join(names)


def tolerance(ref, atol, rtol):
    return atol + rtol * np.abs(ref)


def stage_result(name, ref, theirs, atol, rtol) -> StageResult:
    ref, theirs = ref.astype(np.float64), theirs.astype(np.float64)
    diff = np.abs(theirs - ref)
    finite = np.isfinite(theirs).all()
    if not diff.size:
        return StageResult(name, 0.0, 0.0, 0.0, 1.0, True)
    big = np.abs(ref) >= atol
    max_rel = float((diff[big] / np.abs(ref[big])).max()) if big.any() else 0.0
    energy = float((ref * ref).sum())
    nmse = float((diff * diff).sum() / energy) if energy else float(diff.max() > 0) * np.inf
    ok = bool(finite and (diff <= tolerance(ref, atol, rtol)).all())
    return StageResult(name, float(diff.max()) if finite else np.inf, max_rel if finite else np.inf,
                       nmse if finite else np.inf, min_cosine(ref, theirs), ok)


def min_cosine(ref, theirs) -> float:
    """The smallest cosine similarity of a row with its reference row (1.0 for two zero rows)."""
    ref, theirs = ref.reshape(len(ref), -1), theirs.reshape(len(theirs), -1)
    dot = (ref * theirs).sum(axis=1)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(theirs, axis=1)
    both_zero = (np.linalg.norm(ref, axis=1) == 0) & (np.linalg.norm(theirs, axis=1) == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(both_zero, 1.0, np.where(norms > 0, dot / np.where(norms > 0, norms, 1), 0.0))
    cos = np.where(np.isfinite(cos), cos, -1.0)
    return float(cos.min()) if len(cos) else 1.0


def bad_rows(ref, theirs, atol, rtol) -> np.ndarray:
    """[rows] bool: the rows with an element outside the tolerance (or not finite)."""
    ref, theirs = ref.astype(np.float64), theirs.astype(np.float64)
    outside = ~(np.abs(theirs - ref) <= tolerance(ref, atol, rtol))   # NaN counts as outside
    return outside.reshape(len(ref), -1).any(axis=1)


def first_divergence(ctx: Context, name: str) -> Divergence:
    ref, theirs = ctx.reference[name].astype(np.float64), ctx.trace.stages[name].astype(np.float64)
    rtol = ctx.rtol + STORAGE_ROUNDOFF[ctx.trace.dtypes[name]]
    excess = np.abs(theirs - ref) - tolerance(ref, ctx.atol, rtol)
    excess = np.where(np.isnan(excess), np.inf, excess)
    row, dim = np.unravel_index(int(np.argmax(excess)), excess.shape)
    N, B = len(ctx.batch.input_ids), ctx.trace.num_pairs
    if is_token_stage(name, ref, N, B):
        pair = int(np.searchsorted(ctx.batch.offsets, row, side="right") - 1)
        token = int(row - ctx.batch.offsets[pair])
    else:
        pair, token = int(row), None
    return Divergence(name, pair, token, int(dim), float(ref[row, dim]), float(theirs[row, dim]), diagnose(ctx, name))


# ---------------------------------------------------------------------------------------------
# Diagnoses: the signatures of bugs real backends have had. Each takes the context and the first
# diverging stage and returns one line, or None when the pattern does not fit.


def op_set(base=reference_ops, **overrides):
    """An op set like `base` with some ops replaced (for a recomputation with a planted difference)."""
    names = {k: getattr(base, k) for k in dir(base) if not k.startswith("_")}
    names.update(overrides)
    return types.SimpleNamespace(__name__=f"{base.__name__}+{'+'.join(overrides)}", **names)


def gelu_tanh(x):
    """The tanh approximation of GELU (transformers' "gelu_new" / "gelu_pytorch_tanh")."""
    x = x.astype(np.float32)
    inner = np.float32(np.sqrt(2.0 / np.pi)) * (x + np.float32(0.044715) * x * x * x)
    return np.float32(0.5) * x * (np.float32(1.0) + np.tanh(inner))


def _fits(ctx: Context, name: str, alternative: dict, rows=None) -> bool:
    """True when the trace's stage matches the alternative recomputation within the tolerance, or far
    better than it matches the reference (a tenth of the error, or less). rows: a [rows] bool mask of
    the rows to judge (default: all)."""
    theirs, rtol = ctx.trace.stages[name], ctx.rtol + STORAGE_ROUNDOFF[ctx.trace.dtypes[name]]
    if name not in alternative:
        return False
    alt, ref = alternative[name], ctx.reference[name]
    if rows is not None:
        if not rows.any():
            return False
        theirs, alt, ref = theirs[rows], alt[rows], ref[rows]
    if not bad_rows(alt, theirs, ctx.atol, rtol).any():
        return True
    error_alt = np.abs(theirs.astype(np.float64) - alt).max()
    error_ref = np.abs(theirs.astype(np.float64) - ref).max()
    return bool(error_alt <= 0.1 * error_ref)


def _recompute(ctx: Context, ops=reference_ops, params=None, batch=None) -> dict:
    try:
        return reference_stages(params or ctx.params, ctx.config, batch or ctx.batch, ops)
    except (InputError, IndexError, ValueError):
        return {}


def _bad_rows(ctx, name):
    return bad_rows(ctx.reference[name], ctx.trace.stages[name], ctx.atol,
                    ctx.rtol + STORAGE_ROUNDOFF[ctx.trace.dtypes[name]])


def _pair_of_rows(ctx):
    return np.repeat(np.arange(ctx.trace.num_pairs), ctx.batch.lengths)   # [N] the pair of each token


def diagnose_logits_one(ctx, name):
    if name != "logits":
        return None
    theirs = ctx.trace.stages[name]
    if ctx.config.num_labels == 1 and np.allclose(theirs, 1.0, rtol=0, atol=1e-6):
        return ("every logit is 1.0: a softmax over a single logit (always 1); a one-label model's score is the "
                "raw logit (or its sigmoid)")
    ref = ctx.reference[name].astype(np.float64)
    if np.allclose(theirs, 1 / (1 + np.exp(-ref)), rtol=1e-4, atol=1e-5):
        return "the logits are the reference's sigmoid: the backend applies an activation; compare raw logits"
    return None


def diagnose_pooler_missing(ctx, name):
    """A head stage equal to the last layer's first-token hidden state: the pooler's dense + tanh is missing."""
    layers = [n for n in ctx.reference if n.startswith("layer_")]
    if name in ("logits", "embeddings") or name.startswith("layer_") or not layers:
        return None
    theirs = ctx.trace.stages[name]
    raw = ctx.reference[layers[-1]][ctx.batch.first_tokens]                  # [B, H] the raw first token
    if raw.shape != theirs.shape:
        return None
    if not bad_rows(raw, theirs, ctx.atol, ctx.rtol + STORAGE_ROUNDOFF[ctx.trace.dtypes[name]]).any():
        return (f"`{name}` equals the raw first-token ([CLS]) hidden state of {layers[-1]}: the pooler's "
                "dense + tanh is missing")
    return None


def diagnose_token_types(ctx, name):
    """Embeddings that differ only at token type 1, and match a recomputation with every type 0."""
    if name != "embeddings" or not ctx.config.type_vocab_size:
        return None
    bad, type1 = _bad_rows(ctx, name), ctx.batch.token_type_ids == 1
    if not type1.any() or (bad & ~type1).any():
        return None
    zeros = dataclasses.replace(ctx.batch, token_type_ids=np.zeros_like(ctx.batch.token_type_ids))
    if _fits(ctx, name, _recompute(ctx, batch=zeros)):
        return ("embeddings differ only at the positions of token type 1 and match token type 0 there: "
                "token_type_ids are not passed to the model (it uses 0 everywhere)")
    return (f"embeddings differ only at the positions of token type 1 ({int(bad.sum())} of {int(type1.sum())}): "
            "the token type embeddings or the token_type_ids are wrong")


def diagnose_padding_mask(ctx, name):
    """Layers that differ only in pairs shorter than the batch's longest: the padding mask is not applied."""
    if not name.startswith("layer_"):
        return None
    lengths = ctx.batch.lengths
    bad_pairs = np.unique(_pair_of_rows(ctx)[_bad_rows(ctx, name)])
    short = lengths < lengths.max()
    if len(bad_pairs) and short[bad_pairs].all() and short.any():
        return (f"{name} differs only in pairs shorter than the batch's longest ({len(bad_pairs)} of "
                f"{int(short.sum())} shorter pairs, none of the longest): the padding mask is not applied "
                "in attention (padded keys must get a weight of 0)")
    return None


def diagnose_gelu_tanh(ctx, name):
    if not name.startswith("layer_"):
        return None
    ops = op_set(gelu=gelu_tanh, linear_gelu=lambda x, w, b: gelu_tanh(reference_ops.linear(x, w, b)))
    if _fits(ctx, name, _recompute(ctx, ops)):
        return (f"{name} matches a recomputation with the tanh approximation of GELU: the backend uses "
                "gelu_tanh (gelu_new) where the model's hidden_act is the exact erf GELU")
    return None


COMMON_EPS = (1e-12, 1e-7, 1e-6, 1e-5, 1e-3)


def diagnose_layer_norm_eps(ctx, name):
    if name == "logits":
        return None
    for eps in COMMON_EPS:
        if eps == getattr(ctx.config, "layer_norm_eps", None):
            continue
        ops = op_set(layer_norm=lambda x, w, b, _e, eps=eps: reference_ops.layer_norm(x, w, b, eps),
                     add_layer_norm=lambda x, r, w, b, _e, eps=eps: reference_ops.add_layer_norm(x, r, w, b, eps))
        if _fits(ctx, name, _recompute(ctx, ops)):
            return (f"{name} matches a recomputation with LayerNorm epsilon {eps:g}: the backend's epsilon is not "
                    f"the model's layer_norm_eps ({getattr(ctx.config, 'layer_norm_eps', '?')})")
    return None


# The model_types whose positions count from padding_idx + 1 (transformers' create_position_ids_from_input_ids).
PADDING_IDX_NUMBERING = tuple(t for family in roberta.FAMILIES for t in family.model_types)


def diagnose_positions(ctx, name):
    """Embeddings off nearly everywhere that match once every position is shifted by padding_idx + 1: the
    RoBERTa family numbers positions from padding_idx + 1, and a backend that starts at 0 (or the reverse)."""
    if name != "embeddings":
        return None
    embeddings = getattr(ctx.params, "embeddings", None)
    table = getattr(embeddings, "position", None)
    pad = getattr(ctx.config, "pad_token_id", None)
    if table is None or pad is None or _bad_rows(ctx, name).mean() < 0.5:
        return None
    shift = pad + 1
    for sign in (+1, -1):
        # theirs[t] used table[i - sign * shift] where minibert used table[i]: roll the table by that much
        rolled = dataclasses.replace(embeddings, position=np.roll(table, sign * shift, axis=0))
        alternative = _recompute(ctx, params=dataclasses.replace(ctx.params, embeddings=rolled)).get(name)
        rows = None
        # the two real bugs: a RoBERTa-family model numbered from 0 (lower), a BERT-like one from padding_idx + 1
        if alternative is not None and (sign > 0) == (ctx.config.model_type in PADDING_IDX_NUMBERING):
            alternative, rows = _renumbered_pairs(ctx, name, alternative)
        if alternative is not None and _fits(ctx, name, {name: alternative}, rows):
            how = "lower" if sign > 0 else "higher"
            return (f"embeddings match the reference with every position {shift} (padding_idx + 1) {how}: the "
                    "backend's position ids are off by padding_idx + 1 (the RoBERTa family numbers positions from "
                    "padding_idx + 1, BERT from 0)")
    return None


def _renumbered_pairs(ctx, name, alternative):
    """The pairs with a padding token inside, which RoBERTa's numbering does not count (so the shift between the
    two numberings grows by one after it), recomputed one by one with the other numbering: each gets a table
    whose row minibert reads for a token holds the row the backend read. Returns the alternative and the rows
    to judge it on, without the pairs no one table renumbers (a RoBERTa pair with two padding tokens inside,
    which both read row padding_idx, or one whose other numbering runs past the table)."""
    pad, embeddings = ctx.config.pad_token_id, ctx.params.embeddings
    table, rows = embeddings.position, np.ones(len(alternative), bool)
    alternative = alternative.copy()
    for a, e in zip(ctx.batch.offsets[:-1].tolist(), ctx.batch.offsets[1:].tolist()):
        ids = ctx.batch.input_ids[a:e]
        if not (ids == pad).any():
            continue
        from_zero = np.arange(e - a)                                        # BERT's numbering
        from_pad = roberta.position_ids(ids, np.array([0, e - a]), pad)     # RoBERTa's
        mine, theirs = (from_pad, from_zero) if ctx.config.model_type in PADDING_IDX_NUMBERING else (from_zero, from_pad)
        if len(np.unique(mine)) < len(mine) or max(mine.max(), theirs.max()) >= len(table):
            rows[a:e] = False
            continue
        renumbered = table.copy()
        renumbered[mine] = table[theirs]
        pair = Batch.pack([(ids, ctx.batch.token_type_ids[a:e])])
        params = dataclasses.replace(ctx.params, embeddings=dataclasses.replace(embeddings, position=renumbered))
        recomputed = _recompute(ctx, params=params, batch=pair).get(name)
        if recomputed is None:
            rows[a:e] = False
        else:
            alternative[a:e] = recomputed
    return alternative, rows


def diagnose_rows(ctx, name):
    """The generic fallback: where the differences are."""
    N, B = len(ctx.batch.input_ids), ctx.trace.num_pairs
    bad = _bad_rows(ctx, name)
    if not is_token_stage(name, ctx.reference[name], N, B):
        return None
    first = bad & (ctx.batch.positions == 0)
    if bad.sum() == first.sum():
        return f"{name} differs only at each pair's first token"
    return None


DIAGNOSES = (diagnose_logits_one, diagnose_pooler_missing, diagnose_token_types, diagnose_padding_mask,
             diagnose_positions, diagnose_layer_norm_eps, diagnose_gelu_tanh, diagnose_rows)


def diagnose(ctx: Context, name: str) -> str | None:
    """The first diagnosis whose signature fits the first diverging stage, or None."""
    for check in DIAGNOSES:
        found = check(ctx, name)
        if found:
            return found
    return None


# ---------------------------------------------------------------------------------------------
# Token ids


def reference_types(tokenizer, input_ids, offsets) -> np.ndarray | None:
    """Token type ids for a trace that has none, as the tokenizer's pair template sets them: 0 up to and
    including the first separator of each pair, 1 after. None when the tokenizer gives no token types."""
    if not tokenizer.token_types:
        return None
    ids, types_ = tokenizer.encode_pairs([("", "")])[0]       # [CLS] [SEP] [SEP]: where the type flips
    flips = np.flatnonzero(types_ == 1)
    if not len(flips):
        return None
    separator = ids[flips[0] - 1]
    out = np.zeros_like(input_ids)
    for a, b in zip(offsets[:-1], offsets[1:]):
        seps = np.flatnonzero(input_ids[a:b] == separator)
        if len(seps):
            out[a + seps[0] + 1:b] = 1
    return out


def check_tokens(tokenizer, pairs, trace: Trace) -> tuple[bool, str | None]:
    """Do minibert's ids (and type ids, where the trace has them) for `pairs` equal the trace's?"""
    if len(pairs) != trace.num_pairs:
        return False, f"the trace has {trace.num_pairs} pairs, --pairs gives {len(pairs)}"
    encoded = tokenizer.encode_pairs(pairs)
    for b, (ids, types_) in enumerate(encoded):
        a, e = trace.offsets[b], trace.offsets[b + 1]
        theirs = trace.input_ids[a:e]
        checks = [("id", ids, theirs)]
        if trace.token_type_ids is not None and tokenizer.token_types:
            checks.append(("type id", types_, trace.token_type_ids[a:e]))
        for what, mine, their in checks:
            n = min(len(mine), len(their))
            differ = np.flatnonzero(mine[:n] != their[:n])
            if len(differ):
                t = int(differ[0])
                return False, (f"pair {b}, token {t}: minibert's {what} is {int(mine[t])} "
                               f"({_token_text(tokenizer, ids[t])}), the trace's {int(their[t])}")
            if len(mine) != len(their):
                return False, (f"pair {b}: minibert makes {len(mine)} tokens, the trace has {len(their)} "
                               f"(they agree on the first {n})")
    return True, None


def _token_text(tokenizer, token_id) -> str:
    token = tokenizer.tokenizer.id_to_token(int(token_id))
    return repr(token) if token is not None else "?"


# ---------------------------------------------------------------------------------------------
# Output


def format_report(report: Report, trace: Trace, model: str) -> str:
    B, N = trace.num_pairs, len(trace.input_ids)
    producer = f", producer {trace.metadata['producer']}" if trace.metadata.get("producer") else ""
    lines = [f"{trace.source}: {trace.layout}, {B} pairs, {N} real tokens{producer}; reference: {model}"]
    if report.tokens_match is None:
        lines.append("tokens: not checked (give --pairs to check them)")
    elif report.tokens_match:
        lines.append(f"tokens: match ({B} pairs)")
    else:
        lines.append(f"tokens: DIFFER: {report.token_mismatch}")
    width = max([len(s.name) for s in report.stages] + [5])
    lines.append(f"{'stage':<{width}}  {'max_abs':>9}  {'max_rel':>9}  {'nmse':>9}  {'min_cos':>9}")
    for s in report.stages:
        lines.append(f"{s.name:<{width}}  {s.max_abs:9.2e}  {s.max_rel:9.2e}  {s.nmse:9.2e}  {s.min_cosine:9.6f}  "
                     + ("ok" if s.ok else "DIVERGES"))
    if report.missing:
        lines.append(f"not in the trace: {', '.join(report.missing)}")
    div = report.first_divergence
    if div is None:
        lines.append("every stage agrees" + ("" if report.tokens_match is not False else "; the tokens do not"))
    else:
        token = "" if div.token is None else f", token {div.token}"
        lines.append(f"first divergence: {div.stage}, pair {div.pair}{token}, dim {div.dim}: "
                     f"reference {div.reference:.7g}, theirs {div.theirs:.7g}")
        lines.append(f"diagnosis: {div.diagnosis or 'no known pattern'}")
    return "\n".join(lines) + "\n"
