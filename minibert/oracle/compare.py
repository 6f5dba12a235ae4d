"""The comparison: every stage of a trace against minibert's, on the trace's own token ids, in forward
order; the first stage that diverges, where, and its diagnosis (diagnose.py). And the token ids: does
minibert tokenize the backend's pairs as the backend did?
"""

from dataclasses import dataclass

import numpy as np

from minibert.errors import InputError, TraceError
from minibert.models import family_of
from minibert.oracle.diagnose import diagnose
from minibert.oracle.measure import (
    DEFAULT_ATOL,
    DEFAULT_RTOL,
    Context,
    reference_stages,
    stage_result,
    tolerance,
)
from minibert.oracle.trace import STORAGE_ROUNDOFF, Trace, is_token_stage


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
