"""`minibert explain`: the journey of one (query, passage) pair through a cross-encoder, for a learner.

What it shows: the tokens with their ids and type ids (and where truncation cut), every stage with its
shape and a few summary numbers, how much the first token ([CLS], <s>) attends to each passage token in
each layer, and the final logit with its sigmoid. As text, or as one self-contained HTML page.

The attention weights are not kept by the forward pass (scoring never needs them). They are recorded
here by an op set that is the reference ops with `attention` wrapped: before computing the attention,
the wrapper recomputes the first token's row, softmax(q_0 k^T / sqrt(HD)) per head, from the very q and
k the family handed to it. So it works for every family that attends through ops.attention, and the
scoring path is untouched. A family that scores its attention itself (DeBERTa-v2: c2c + c2p + p2c)
gives its probabilities through its Family's attention_probabilities, recomputed from each layer's input.
"""

import html
from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer

from minibert.errors import ConfigError
from minibert.formats.tokenizer import check_pair
from minibert.models import family_of, forward
from minibert.models.batch import Batch
from minibert.ops import NUMPY


@dataclass(frozen=True)
class Explanation:
    model: str
    family: str
    query: str
    passage: str
    tokens: list           # [T] token strings
    input_ids: np.ndarray  # [T]
    type_ids: np.ndarray   # [T] what the model sees (all 0 in a family without token types)
    sides: list            # [T] "query", "passage" or None (a special token)
    truncated: dict        # side -> (tokens kept, tokens in the whole text)
    stages: dict           # name -> the stage of this pair: [T, X] per token, [1, X] per pair
    attention: np.ndarray | None  # [layers, NH, T]: the first token's attention weights, per layer and head
    logits: np.ndarray     # [L]
    labels: list           # [L] label names

    @property
    def passage_tokens(self) -> np.ndarray:
        return np.array([i for i, side in enumerate(self.sides) if side == "passage"], dtype=np.int64)


def first_token_attention(q, k, num_heads, window=None):
    """The first token's attention weights over its pair's T tokens, per head: [T, H] q, k -> [NH, T]."""
    T, H = k.shape
    HD = H // num_heads
    q0 = q[0].reshape(num_heads, HD)                                  # [NH, HD]
    keys = k.reshape(T, num_heads, HD).transpose(1, 0, 2)             # [NH, T, HD]
    scores = np.einsum("nd,ntd->nt", q0, keys) * np.float32(HD ** -0.5)  # [NH, T]
    if window is not None:
        scores[:, np.arange(T) > window] = -np.inf                    # outside the first token's window
    return NUMPY.softmax(scores)                                      # [NH, T]


def recording_ops(rows: list, base=NUMPY):
    """`base` with attention wrapped to append each layer's first-token rows ([NH, T], one pair) to `rows`."""
    def attention(q, k, v, offsets, num_heads, window=None, first_only=False):
        # explain runs with return_stages, so every layer computes every query (first_only is False)
        rows.append(first_token_attention(q[offsets[0]:offsets[1]], k[offsets[0]:offsets[1]], num_heads, window))
        extra = {} if window is None else {"window": window}
        return base.attention(q, k, v, offsets, num_heads, first_only=first_only, **extra)
    return base.replace(attention=attention)


def explain(ce, query: str, passage: str) -> Explanation:
    """Run one pair through CrossEncoder `ce` with the reference ops, keeping everything a learner wants."""
    query, passage = check_pair((query, passage), 0)
    if family_of(ce.config).decoder:
        raise ConfigError(f"{ce.path}: explain reads an encoder's attention from its first token; for a "
                          f"{family_of(ce.config).name} decoder reranker (read at its last token, through a chat "
                          "template) it is not implemented yet")
    ids, type_ids = ce.tokenizer.encode_pairs([(query, passage)])[0]
    encoding = ce.tokenizer.tokenizer.encode(query, passage)           # the same ids, with each token's side
    sides = [None if s is None else ("query", "passage")[s] for s in encoding.sequence_ids]
    if list(encoding.ids) != ids.tolist():
        sides = [None] * len(ids)
    whole = Tokenizer.from_str(ce.tokenizer.tokenizer.to_str())       # a copy that does not truncate
    whole.no_truncation()
    truncated = {}
    for side, text in (("query", query), ("passage", passage)):
        total = len(whole.encode(text, add_special_tokens=False).ids)
        kept = sides.count(side)
        if kept < total:
            truncated[side] = (kept, total)
    rows = []
    batch = Batch.pack([(ids, type_ids)])
    logits, stages = forward(ce.params, ce.config, batch, recording_ops(rows), return_stages=True)
    layers = [name for name in stages if name.startswith("layer_")]
    family = family_of(ce.config)
    if family.attention_probabilities is not None:  # scores its own attention, not through ops.attention
        inputs = [stages["embeddings"], *(stages[name] for name in layers[:-1])]   # each layer's input, [T, H]
        rows = [family.attention_probabilities(ce.params, ce.config, i, x, NUMPY)[:, 0]
                for i, x in enumerate(inputs)]                                   # [NH, T] each
    attention = np.stack(rows) if len(rows) == len(layers) and rows else None
    tokens = [ce.tokenizer.tokenizer.id_to_token(int(i)) or "?" for i in ids]
    labels = [ce.id2label[i] for i in range(ce.num_labels)]
    return Explanation(str(ce.path), family.name, query, passage, tokens, ids, type_ids, sides,
                       truncated, stages, attention, logits[0], labels)


def cuts(e: Explanation) -> str:
    """Where truncation cut, in words: "the passage kept 3 of its 11 tokens (up to 'definition')"."""
    said = []
    for side, (kept, total) in e.truncated.items():
        last = [token for token, s in zip(e.tokens, e.sides) if s == side][-1:] or ["nothing"]
        said.append(f"the {side} kept {kept} of its {total} tokens (up to {last[0]!r})")
    return "; ".join(said)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def softmax(logits):
    """Across labels (a one-label model has none: softmax over one logit is always 1)."""
    e = np.exp(np.asarray(logits, dtype=np.float64) - np.max(logits))
    return e / e.sum() if len(e) > 1 else np.full(len(e), np.nan)


def summary(value: np.ndarray) -> dict:
    """A few numbers that describe a stage: its spread, and the first row's length."""
    return {"mean": float(value.mean()), "std": float(value.std()), "min": float(value.min()),
            "max": float(value.max()), "first_norm": float(np.linalg.norm(value[0]))}


# ---------------------------------------------------------------------------------------------
# Text


def format_text(e: Explanation, top: int = 8) -> str:
    out = [f"model: {e.model} ({e.family}, {len([n for n in e.stages if n.startswith('layer_')])} layers)",
           f"query: {e.query!r}", f"passage: {e.passage!r}", "",
           f"1. tokens: {len(e.tokens)} (the pair template, then the query's and the passage's word pieces)"]
    out.append(f"   {'#':>3}  {'token':<16} {'id':>7} {'type':>4}  side")
    for i, (token, token_id, type_id, side) in enumerate(zip(e.tokens, e.input_ids, e.type_ids, e.sides)):
        out.append(f"   {i:>3}  {token:<16} {int(token_id):>7} {int(type_id):>4}  {side or 'special'}")
    if e.truncated:
        out.append(f"   truncated to {len(e.tokens)} tokens (longest first): {cuts(e)}")
    else:
        out.append("   not truncated")
    out += ["", "2. stages (this pair's rows: one per token, or one for the pair)",
            f"   {'stage':<12} {'shape':<10} {'mean':>9} {'std':>9} {'min':>9} {'max':>9} {'|row 0|':>9}"]
    for name, value in e.stages.items():
        s = summary(value)
        shape = "x".join(map(str, value.shape))
        out.append(f"   {name:<12} {shape:<10} {s['mean']:9.4f} {s['std']:9.4f} {s['min']:9.4f} {s['max']:9.4f} "
                   f"{s['first_norm']:9.4f}")
    out += ["", f"3. how much the first token ({e.tokens[0]}) attends to the passage, per layer (mean over heads)"]
    passage = e.passage_tokens
    if e.attention is None:
        out.append("   (not available: this family does not attend through minibert.ops.attention)")
    else:
        for layer, heads in enumerate(e.attention):
            mean = heads.mean(axis=0)                                      # [T]
            mass = float(mean[passage].sum()) if len(passage) else 0.0
            best = passage[np.argsort(-mean[passage], kind="stable")][:top] if len(passage) else []
            shown = "  ".join(f"{e.tokens[t]} {mean[t]:.3f}" for t in best)
            out.append(f"   layer_{layer}: {mass:.3f} of its attention on the passage; most: {shown}")
    out += ["", "4. score"]
    for label, logit, share in zip(e.labels, e.logits, softmax(e.logits)):
        across = "" if np.isnan(share) else f", softmax across labels {share:.6g}"
        out.append(f"   {label}: logit {float(logit):.6g}, sigmoid {float(sigmoid(logit)):.6g}{across}")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# HTML: one page, no scripts, no network; the heat maps are table cells with a background colour.


_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; max-width: 80em; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .5em 0; }
td, th { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
th { background: #f3f3f3; } td.t { text-align: left; font-family: monospace; }
.heat td { min-width: 2.6em; font-size: 11px; text-align: center; }
.heat th.tok { writing-mode: vertical-rl; transform: rotate(180deg); font-family: monospace; font-weight: normal; }
.passage { background: #eef5ff; } .note { color: #555; }
"""


def _cell(weight: float, scale: float) -> str:
    alpha = 0.0 if scale <= 0 else min(1.0, weight / scale)
    ink = "#fff" if alpha > 0.6 else "#222"
    return (f'<td style="background: rgba(178, 24, 43, {alpha:.3f}); color: {ink}" '
            f'title="{weight:.4f}">{weight:.2f}</td>')


def format_html(e: Explanation) -> str:
    esc = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>minibert explain: {esc(e.query)}</title><style>{_STYLE}</style></head><body>",
             f"<h1>How {esc(e.family)} scores one pair</h1>",
             f"<p>model <code>{esc(e.model)}</code><br>query: <b>{esc(e.query)}</b><br>"
             f"passage: <b>{esc(e.passage)}</b></p>"]
    parts.append('<h2>1. Tokens</h2><table id="tokens"><tr><th>#</th><th>token</th><th>id</th><th>type</th>'
                 "<th>side</th></tr>")
    for i, (token, token_id, type_id, side) in enumerate(zip(e.tokens, e.input_ids, e.type_ids, e.sides)):
        cls = ' class="passage"' if side == "passage" else ""
        parts.append(f'<tr{cls}><td>{i}</td><td class="t">{esc(token)}</td><td>{int(token_id)}</td>'
                     f"<td>{int(type_id)}</td><td class=\"t\">{side or 'special'}</td></tr>")
    parts.append("</table>")
    if e.truncated:
        parts.append(f'<p class="note">Truncated to {len(e.tokens)} tokens (longest first): {esc(cuts(e))}</p>')
    parts.append('<h2>2. Stages</h2><table id="stages"><tr><th>stage</th><th>shape</th><th>mean</th><th>std</th>'
                 "<th>min</th><th>max</th><th>|row 0|</th></tr>")
    for name, value in e.stages.items():
        s = summary(value)
        parts.append(f'<tr><td class="t">{esc(name)}</td><td>{"&times;".join(map(str, value.shape))}</td>'
                     + "".join(f"<td>{s[k]:.4f}</td>" for k in ("mean", "std", "min", "max", "first_norm")) + "</tr>")
    parts.append("</table>")
    parts.append(f"<h2>3. Attention of the first token ({esc(e.tokens[0])})</h2>")
    if e.attention is None:
        parts.append('<p class="note">Not available: this family does not attend through minibert.ops.attention.</p>')
    else:
        parts.append('<p class="note">Each row is one head of one layer; each cell is the weight the first token '
                     "gives that token (a row sums to 1). Darker is more; each layer's colours are scaled to its "
                     "largest weight. Passage tokens have a blue header.</p>")
        header = "".join(f'<th class="tok{" passage" if side == "passage" else ""}">{esc(token)}</th>'
                         for token, side in zip(e.tokens, e.sides))
        for layer, heads in enumerate(e.attention):
            scale = float(heads.max())
            parts.append(f'<table class="heat" id="attention-layer-{layer}"><tr><th>layer {layer}</th>{header}</tr>')
            rows = [(f"head {h}", heads[h]) for h in range(len(heads))] + [("mean", heads.mean(axis=0))]
            for label, weights in rows:
                parts.append(f"<tr><th>{label}</th>" + "".join(_cell(float(w), scale) for w in weights) + "</tr>")
            parts.append("</table>")
    shares = softmax(e.logits)
    parts.append('<h2>4. Score</h2><table id="score"><tr><th>label</th><th>logit</th><th>sigmoid</th>'
                 + ("<th>softmax</th>" if len(shares) > 1 else "") + "</tr>")
    for label, logit, share in zip(e.labels, e.logits, shares):
        parts.append(f'<tr><td class="t">{esc(label)}</td><td>{float(logit):.6g}</td>'
                     f"<td>{float(sigmoid(logit)):.6g}</td>" + ("" if np.isnan(share) else f"<td>{share:.6g}</td>")
                     + "</tr>")
    parts.append("</table></body></html>\n")
    return "\n".join(parts)
