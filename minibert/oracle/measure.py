"""Measuring one stage against its reference: tolerances, the numbers a report shows, and the
context a comparison (compare.py) and its diagnoses (diagnose.py) share.

Comparison of one stage, over real tokens only (ref: minibert's, theirs: the trace's, float64):
    ok          every |theirs - ref| <= atol + (rtol + u) * |ref|, u the unit roundoff of the
                trace's dtype (0 for float32, 2^-11 for float16, 2^-8 for bfloat16)
    max_abs     max |theirs - ref|
    max_rel     max |theirs - ref| / |ref|, over the elements with |ref| >= atol
    nmse        sum (theirs - ref)^2 / sum ref^2
    min_cosine  the smallest cosine similarity of a row (a token's, or a pair's) with its reference
"""

from dataclasses import dataclass

import numpy as np

from minibert.models import forward
from minibert.models.batch import Batch
from minibert.ops import NUMPY
from minibert.oracle.trace import Trace

DEFAULT_ATOL = DEFAULT_RTOL = 1e-4

@dataclass(frozen=True)
class StageResult:
    name: str
    max_abs: float
    max_rel: float
    nmse: float
    min_cosine: float
    ok: bool


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


def reference_stages(params, config, batch, ops=NUMPY) -> dict:
    _, stages = forward(params, config, batch, ops, return_stages=True)
    return stages


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
