"""Diagnoses: the signatures of bugs real backends have had.

Each takes the comparison's context and the first diverging stage and returns one line, or None
when the pattern does not fit. Most recompute the model with one thing changed the way a buggy
backend changes it (an op replaced in the op set, a position table renumbered, token types zeroed)
and check whether the trace then fits.
"""

import dataclasses

import numpy as np

from minibert.errors import InputError
from minibert.models import family_of
from minibert.models.batch import Batch, padding_idx_positions
from minibert.ops import NUMPY, reference
from minibert.oracle.measure import Context, bad_rows, reference_stages
from minibert.oracle.trace import STORAGE_ROUNDOFF, is_token_stage


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


def _recompute(ctx: Context, ops=NUMPY, params=None, batch=None) -> dict:
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
    if name in ("logits", "embeddings") or name.startswith("layer_") or not layers or family_of(ctx.config).decoder:
        return None
    theirs = ctx.trace.stages[name]
    raw = ctx.reference[layers[-1]][ctx.batch.first_tokens]                  # [B, H] the raw first token
    if raw.shape != theirs.shape:
        return None
    if not bad_rows(raw, theirs, ctx.atol, ctx.rtol + STORAGE_ROUNDOFF[ctx.trace.dtypes[name]]).any():
        return (f"`{name}` equals the raw first-token ([CLS]) hidden state of {layers[-1]}: the pooler's "
                "dense + tanh is missing")
    return None


def diagnose_head_row(ctx, name):
    """A decoder's head stage (the last layer at the row its head reads, each pair's last token) that is the last
    layer at another token of the pair: the backend reads the wrong row."""
    family, layers = family_of(ctx.config), [n for n in ctx.reference if n.startswith("layer_")]
    if not family.decoder or name != family.head_stage or not layers:
        return None
    last, theirs = ctx.reference[layers[-1]], ctx.trace.stages[name]                # [N, H], [B, H]
    rtol = ctx.rtol + STORAGE_ROUNDOFF[ctx.trace.dtypes[name]]
    read = []                                                                        # (pair, the row it read)
    for b in np.flatnonzero(_bad_rows(ctx, name)).tolist():
        rows = last[ctx.batch.offsets[b]:ctx.batch.offsets[b + 1]]                   # [T_b, H]
        fits = ~bad_rows(rows, np.broadcast_to(theirs[b], rows.shape), ctx.atol, rtol)
        if not fits.any():
            return None
        read.append((b, int(np.flatnonzero(fits)[0])))
    b, token = read[0]
    return (f"`{name}` of pair {b} is {layers[-1]} at the pair's token {token} of {int(ctx.batch.lengths[b])} (and so "
            f"in all {len(read)} differing pairs): the backend's head reads the wrong row; a decoder reranker reads "
            "each pair's last token (with left padding, the batch's last column)")


def rotary_interleaved(x, cos, sin, num_heads):
    """GPT-J's rotary embedding: each head's dimensions rotated in adjacent pairs (x0, x1), (x2, x3), ..., where
    transformers' Llama, Qwen and Gemma rotate its two halves (x_i, x_{i + HD/2}) (ggml's "normal" rope mode
    against "neox"). x [N, H] -> [N, H]."""
    N, H = x.shape
    pairs = x.reshape(N, num_heads, H // num_heads // 2, 2)          # [N, NH, HD / 2, 2]
    x1, x2, c, s = pairs[..., 0], pairs[..., 1], cos[:, None, :], sin[:, None, :]
    return np.stack([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1).reshape(N, H)


COMMON_ROPE_THETA = (10_000.0, 500_000.0, 1_000_000.0)


def diagnose_rotary(ctx, name):
    """A decoder's layers that match a recomputation with the rotary embedding done another way: adjacent pairs
    rotated instead of halves, or another rope_theta (a backend that takes a default instead of the config's).
    (A position shift common to a whole pair changes nothing: rotary attention sees only distances.)"""
    if not name.startswith("layer_") or not family_of(ctx.config).decoder:
        return None
    if _fits(ctx, name, _recompute(ctx, NUMPY.replace(apply_rotary=rotary_interleaved))):
        return (f"{name} matches a recomputation with the rotary embedding applied to adjacent pairs of dimensions "
                "(GPT-J style, ggml's 'normal' mode): this model rotates each head's two halves (rotate_half, 'neox')")
    own = getattr(ctx.config, "rope_parameters", {}).get("rope_theta")
    for theta in COMMON_ROPE_THETA:
        if theta == own:
            continue
        ops = NUMPY.replace(rotary_tables=lambda positions, head_dim, _theta, divisor=1.0, theta=theta:
                            reference.rotary_tables(positions, head_dim, theta, divisor))
        if _fits(ctx, name, _recompute(ctx, ops)):
            return (f"{name} matches a recomputation with rope_theta {theta:g}: the backend's rotary base is not the "
                    f"model's ({own if own is None else f'{own:g}'}, config.json's rope_parameters)")
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
    ops = NUMPY.replace(gelu=gelu_tanh, linear_gelu=lambda x, w, b: gelu_tanh(reference.linear(x, w, b)))
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
        ops = NUMPY.replace(layer_norm=lambda x, w, b, _e, eps=eps: reference.layer_norm(x, w, b, eps),
                            add_layer_norm=lambda x, r, w, b, _e, eps=eps: reference.add_layer_norm(x, r, w, b, eps))
        if _fits(ctx, name, _recompute(ctx, ops)):
            return (f"{name} matches a recomputation with LayerNorm epsilon {eps:g}: the backend's epsilon is not "
                    f"the model's layer_norm_eps ({getattr(ctx.config, 'layer_norm_eps', '?')})")
    return None


def _counts_from_padding_idx(config) -> bool:
    """Does the model number positions from padding_idx + 1 (the RoBERTa family), not from 0?"""
    return family_of(config).position_ids is padding_idx_positions


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
        if alternative is not None and (sign > 0) == _counts_from_padding_idx(ctx.config):
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
        from_pad = padding_idx_positions(ids, np.array([0, e - a]), pad)    # RoBERTa's
        mine, theirs = (from_pad, from_zero) if _counts_from_padding_idx(ctx.config) else (from_zero, from_pad)
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


DIAGNOSES = (diagnose_logits_one, diagnose_pooler_missing, diagnose_head_row, diagnose_token_types,
             diagnose_rotary, diagnose_padding_mask, diagnose_positions, diagnose_layer_norm_eps,
             diagnose_gelu_tanh, diagnose_rows)


def diagnose(ctx: Context, name: str) -> str | None:
    """The first diagnosis whose signature fits the first diverging stage, or None."""
    for check in DIAGNOSES:
        found = check(ctx, name)
        if found:
            return found
    return None
