"""`minibert explain`: the journey of one (query, passage) pair through a cross-encoder, for a learner.

What it shows: the tokens with their ids and type ids (and where truncation cut), every stage with its
shape and a few summary numbers, how much the token the head reads attends to each passage token in each
layer, and the final logit with its sigmoid. As text, or as one self-contained HTML page. The token the
head reads is an encoder's first ([CLS], <s>), or a decoder reranker's last (Family.head_reads): the one
position that has seen the whole conversation, since causal attention lets a token see only those before it.

The attention weights are not kept by the forward pass (scoring never needs them). They are recorded
here by an op set that is the reference ops with `attention` wrapped: before computing the attention,
the wrapper recomputes the reading token's row, softmax(q_t k^T / sqrt(HD)) per head (its window and, for a
decoder, its causal mask applied; grouped key/value heads shared as ops.attention shares them), from the very
q and k the family handed to it. So it works for every family that attends through ops.attention, and the
scoring path is untouched. A family that scores its attention itself (DeBERTa-v2: c2c + c2p + p2c)
gives its probabilities through its Family's attention_probabilities, recomputed from each layer's input.

A decoder's pair is a conversation rendered by its chat template: a token's side (query, passage, or the
template's own) is found from the characters it covers in the rendered text.
"""

import html
from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer

from minibert.formats import sentence_transformers as st
from minibert.formats.tokenizer import check_pair
from minibert.models import chain, family_of, forward
from minibert.models.batch import Batch
from minibert.models.family import LAST
from minibert.ops import NUMPY

# Private-use characters that mark where a chat template puts the query and the passage (explain's own texts).
MARKS = ("\ue000", "\ue001")


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
    attention: np.ndarray | None  # [layers, NH, T]: the reading token's attention weights, per layer and head
    logits: np.ndarray     # [L]
    labels: list           # [L] label names
    reads: str = "first"   # the token the head reads: "first" (an encoder's) or "last" (a decoder's)
    score_note: str | None = None   # how the logit is made, when it is not a classifier's (LogitScore)

    @property
    def reader(self) -> int:
        """The position of the token the head reads."""
        return 0 if self.reads == "first" else len(self.tokens) - 1

    @property
    def passage_tokens(self) -> np.ndarray:
        return np.array([i for i, side in enumerate(self.sides) if side == "passage"], dtype=np.int64)


def token_attention(q, k, position, num_heads, kv_heads=None, window=None, causal=False):
    """The attention weights of the token at `position` over its pair's T tokens, per head, as ops.attention
    computes them: q [T, NH * HD], k [T, NKV * HD] -> [NH, T]. Query head h reads key head h // (NH / NKV);
    the keys beyond the window (|position - j| > window) and, causal, after the token (j > position) get 0."""
    T, NKV = len(k), kv_heads or num_heads
    HD = k.shape[1] // NKV
    query = q[position].reshape(num_heads, HD)                              # [NH, HD]
    keys = k.reshape(T, NKV, HD).transpose(1, 0, 2)                         # [NKV, T, HD]
    keys = np.repeat(keys, num_heads // NKV, axis=0)                        # [NH, T, HD]
    scores = np.einsum("nd,ntd->nt", query, keys) * np.float32(HD ** -0.5)  # [NH, T]
    j = np.arange(T)
    hidden = (j > position) if causal else np.zeros(T, dtype=bool)           # [T]
    if window is not None:
        hidden |= np.abs(position - j) > window
    scores[:, hidden] = -np.inf
    return NUMPY.softmax(scores)                                            # [NH, T]


def recording_ops(rows: list, position: int = 0, base=NUMPY):
    """`base` with attention wrapped to append each layer's rows of the token at `position` of the first pair
    ([NH, T]) to `rows`."""
    def attention(q, k, v, offsets, num_heads, window=None, first_only=False, **options):
        # explain runs with return_stages, so every layer computes every query (first_only, last_only are False)
        pair = slice(offsets[0], offsets[1])
        rows.append(token_attention(q[pair], k[pair], position, num_heads, options.get("kv_heads"), window,
                                    options.get("causal", False)))
        extra = {} if window is None else {"window": window}
        return base.attention(q, k, v, offsets, num_heads, first_only=first_only, **extra, **options)
    return base.replace(attention=attention)


def pair_sides(tokenizer, query: str, passage: str, ids) -> tuple[list, dict]:
    """An encoder's pair: each token's side ("query", "passage", None for a special token) and, per side cut by
    truncation, (tokens kept, tokens in the whole text)."""
    encoding = tokenizer.tokenizer.encode(query, passage)              # the same ids, with each token's side
    sides = [None if s is None else ("query", "passage")[s] for s in encoding.sequence_ids]
    if list(encoding.ids) != ids.tolist():
        sides = [None] * len(ids)
    whole = Tokenizer.from_str(tokenizer.tokenizer.to_str())          # a copy that does not truncate
    whole.no_truncation()
    truncated = {}
    for side, text in (("query", query), ("passage", passage)):
        total = len(whole.encode(text, add_special_tokens=False).ids)
        kept = sides.count(side)
        if kept < total:
            truncated[side] = (kept, total)
    return sides, truncated


def chat_sides(chat, query: str, passage: str, ids) -> tuple[list, dict]:
    """A decoder's pair (a conversation rendered by the chat template, formats/chat.py): each token's side, from
    the characters it covers in the rendered text, and what a cut kept (as pair_sides). The template's tail
    written back over a cut conversation is its own (None). Sides all None if the template alters the texts."""
    marked = chat.render(chat.messages(*MARKS))
    text = chat.render(chat.messages(query, passage))
    head, _, rest = marked.partition(MARKS[0])
    middle, _, tail = rest.partition(MARKS[1])
    whole = chat.tokenizer.encode(text, add_special_tokens=False)   # the whole conversation, before any cut
    if text != head + query + middle + passage + tail:
        return [None] * len(ids), {}
    q0, p0 = len(head), len(head) + len(query) + len(middle)
    spans = {"query": (q0, q0 + len(query)), "passage": (p0, p0 + len(passage))}
    sides = [next((side for side, (s, e) in spans.items() if a < e and b > s), None) for a, b in whole.offsets]
    kept = sides[:len(ids)]
    if len(ids) < len(whole.ids):   # cut: the template's tail was written back over the last tokens
        tail = min(len(chat.suffix(chat.messages(query, passage))) if chat.restore_suffix else 0, len(ids))
        kept[len(ids) - tail:] = [None] * tail
    truncated = {side: (kept.count(side), sides.count(side)) for side in spans if kept.count(side) < sides.count(side)}
    return kept, truncated


def explain(ce, query: str, passage: str) -> Explanation:
    """Run one pair through CrossEncoder `ce` with the reference ops, keeping everything a learner wants."""
    query, passage = check_pair((query, passage), 0)
    family = family_of(ce.config)
    ids, type_ids = ce.tokenizer.encode_pairs([(query, passage)])[0]
    sides, truncated = (chat_sides if family.decoder else pair_sides)(ce.tokenizer, query, passage, ids)
    reads = "last" if family.head_reads(ce.config) == LAST else "first"
    position = len(ids) - 1 if reads == "last" else 0
    rows = []
    batch = Batch.pack([(ids, type_ids)])
    logits, stages = forward(ce.params, ce.config, batch, recording_ops(rows, position), return_stages=True)
    layers = [name for name in stages if name.startswith("layer_")]
    if family.attention_probabilities is not None:  # scores its own attention, not through ops.attention
        inputs = [stages["embeddings"], *(stages[name] for name in layers[:-1])]   # each layer's input, [T, H]
        rows = [family.attention_probabilities(ce.params, ce.config, i, x, NUMPY)[:, position]
                for i, x in enumerate(inputs)]                                   # [NH, T] each
    attention = np.stack(rows) if len(rows) == len(layers) and rows else None
    tokens = [ce.tokenizer.tokenizer.id_to_token(int(i)) or "?" for i in ids]
    labels = [ce.id2label[i] for i in range(ce.num_labels)]
    return Explanation(str(ce.path), family.name, query, passage, tokens, ids, type_ids, sides,
                       truncated, stages, attention, logits[0], labels, reads, _score_note(ce))


def _score_note(ce) -> str | None:
    """How a LogitScore's logit is made: "logit('yes') - logit('no') at the last token"; None for a classifier."""
    module = ce.params.modules[0][0] if isinstance(ce.params, chain.Chain) and ce.params.modules else None
    if not isinstance(module, st.LogitScore):
        return None
    token = [repr(ce.tokenizer.tokenizer.id_to_token(i) or "?") for i in module.token_ids]
    made = f"logit({token[0]})" + (f" - logit({token[1]})" if len(token) > 1 else "")
    return f"{made} at the last token (sentence-transformers' LogitScore: the language model's next-token logits)"


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
           f"1. tokens: {len(e.tokens)} ({_made_of(e)})"]
    out.append(f"   {'#':>3}  {'token':<16} {'id':>7} {'type':>4}  side")
    for i, (token, token_id, type_id, side) in enumerate(zip(e.tokens, e.input_ids, e.type_ids, e.sides)):
        out.append(f"   {i:>3}  {token:<16} {int(token_id):>7} {int(type_id):>4}  {side or _own(e)}")
    if e.truncated:
        out.append(f"   truncated to {len(e.tokens)} tokens ({_how_cut(e)}): {cuts(e)}")
    else:
        out.append("   not truncated")
    out += ["", "2. stages (this pair's rows: one per token, or one for the pair)",
            f"   {'stage':<12} {'shape':<10} {'mean':>9} {'std':>9} {'min':>9} {'max':>9} {'|row 0|':>9}"]
    for name, value in e.stages.items():
        s = summary(value)
        shape = "x".join(map(str, value.shape))
        out.append(f"   {name:<12} {shape:<10} {s['mean']:9.4f} {s['std']:9.4f} {s['min']:9.4f} {s['max']:9.4f} "
                   f"{s['first_norm']:9.4f}")
    causal = "; causal: it sees every token, all before it" if e.reads == "last" else ""
    heading = f"3. how much the {e.reads} token ({e.tokens[e.reader]}) attends to the passage, per layer"
    out += ["", f"{heading} (mean over heads{causal})"]
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
    if e.score_note:
        out.append(f"   the logit is {e.score_note}")
    return "\n".join(out) + "\n"


def _own(e: Explanation) -> str:
    """What a token of neither text is: the pair template's special token, or the chat template's own text."""
    return "template" if e.reads == "last" else "special"


def _made_of(e: Explanation) -> str:
    if e.reads == "last":
        return "the chat template's conversation: its own tokens around the query's and the passage's"
    return "the pair template, then the query's and the passage's word pieces"


def _how_cut(e: Explanation) -> str:
    if e.reads == "last":
        return "the conversation's first tokens, then the template's tail written back over its end"
    return "longest first"


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
                     f"<td>{int(type_id)}</td><td class=\"t\">{side or _own(e)}</td></tr>")
    parts.append("</table>")
    if e.truncated:
        parts.append(f'<p class="note">Truncated to {len(e.tokens)} tokens ({_how_cut(e)}): {esc(cuts(e))}</p>')
    parts.append('<h2>2. Stages</h2><table id="stages"><tr><th>stage</th><th>shape</th><th>mean</th><th>std</th>'
                 "<th>min</th><th>max</th><th>|row 0|</th></tr>")
    for name, value in e.stages.items():
        s = summary(value)
        parts.append(f'<tr><td class="t">{esc(name)}</td><td>{"&times;".join(map(str, value.shape))}</td>'
                     + "".join(f"<td>{s[k]:.4f}</td>" for k in ("mean", "std", "min", "max", "first_norm")) + "</tr>")
    parts.append("</table>")
    parts.append(f"<h2>3. Attention of the {e.reads} token ({esc(e.tokens[e.reader])})</h2>")
    if e.attention is None:
        parts.append('<p class="note">Not available: this family does not attend through minibert.ops.attention.</p>')
    else:
        parts.append(f'<p class="note">Each row is one head of one layer; each cell is the weight the {e.reads} token '
                     "gives that token (a row sums to 1). Darker is more; each layer's colours are scaled to its "
                     "largest weight. Passage tokens have a blue header."
                     + (" Attention is causal: the last token sees every token, all before it." if e.reads == "last"
                        else "") + "</p>")
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
    parts.append("</table>" + (f'<p class="note">The logit is {esc(e.score_note)}.</p>' if e.score_note else "")
                 + "</body></html>\n")
    return "\n".join(parts)
