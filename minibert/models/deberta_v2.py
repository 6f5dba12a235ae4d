"""DeBERTa-v2 / v3: DebertaV2ForSequenceClassification's forward pass (transformers, eval mode).

The dimension letters are BERT's (minibert/models/bert.py), plus
    E   embedding_size (the word embeddings' width; hidden_size unless the config says otherwise)
    S   the attention span: position_buckets when the relative positions are log-bucketed, else
        max_relative_positions; the relative embeddings have 2S rows, one per distance bucket
    D   2T - 1, the distances i - j within a pair of T tokens

How DeBERTa differs from BERT:
- Embeddings: no token types (type_vocab_size 0 in every released checkpoint) and, in v3, no
  absolute positions either (position_biased_input false); an optional E -> H projection.
- Attention is disentangled (He et al., DeBERTa, 2020): the score of query token i for key token j
  is a sum of up to three terms, each a dot product,
      c2c  content-to-content    q_i . k_j                       (BERT's only term)
      c2p  content-to-position   q_i . pk[S + b(i - j)]          pk: the relative embeddings as keys
      p2c  position-to-content   k_j . pq[S - b(j - i)]          pq: the relative embeddings as queries
  where b() maps a distance to a bucket (itself up to position_buckets / 2, then log-spaced) and
  row S of the table is distance 0 (indices are clamped to [0, 2S)). The sum is scaled by
  1 / sqrt(HD * (1 + number of position terms)) and softmaxed. The position terms depend only on
  positions within the pair, so they are built per pair, never across the packed batch.
- v2-xlarge adds a convolution (ConvLayer) to the first layer's output.
- Head: ContextPooler (dense + pooler_hidden_act on the first token, [CLS]) then the classifier.

Every function is pure, and every stage float32; inference only, so no dropout.
"""

from dataclasses import dataclass

import numpy as np

from minibert.errors import ConfigError, show
from minibert.formats.config import (
    HFConfig,
    check_choice,
    check_divisible,
    check_eps,
    check_sizes,
    check_token_id,
)
from minibert.models.family import Family, with_stages
from minibert.models.params import (
    LayerNorm,
    Linear,
    Spec,
    linear,
    linear_spec,
    norm_spec,
)

POSITION_TERMS = ("c2p", "p2c")   # the disentangled attention's position terms
ACTIVATIONS = {"gelu": "exact erf GELU, as transformers' 'gelu'", "tanh": "tanh"}
HEAD_STAGE = "pooled"             # ContextPooler: act(dense([CLS]))
# Scores of one block of queries, [NH, Tq, T] float32 elements (16 MiB; each of the position terms and their
# temporaries is as large): a long pair never holds a whole [NH, T, T], nor a [T, T] of relative positions.
SCORE_BLOCK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class DebertaV2Config(HFConfig):
    """DebertaV2Config's fields (transformers) with its defaults, and the getattr defaults of the modules
    that read fields DebertaV2Config does not declare (position_buckets, share_att_key, ...)."""
    vocab_size: int = 128100
    hidden_size: int = 1536
    num_hidden_layers: int = 24
    num_attention_heads: int = 24
    intermediate_size: int = 6144
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 0
    layer_norm_eps: float = 1e-7
    pad_token_id: int | None = 0
    relative_attention: bool = False
    max_relative_positions: int = -1
    position_buckets: int = -1
    pos_att_type: tuple[str, ...] = ()    # parsed: "p2c|c2p" and ["p2c", "c2p"] both give ("p2c", "c2p")
    share_att_key: bool = False
    norm_rel_ebd: tuple[str, ...] = ("none",)  # parsed: "layer_norm" gives ("layer_norm",)
    position_biased_input: bool = True
    embedding_size: int | None = None      # None: hidden_size
    pooler_hidden_size: int | None = None  # None: hidden_size
    pooler_hidden_act: str = "gelu"
    attention_head_size: int | None = None  # None: hidden_size // num_attention_heads
    conv_kernel_size: int = 0               # 0: no ConvLayer
    conv_groups: int = 1
    conv_act: str = "tanh"
    model_type: str = "deberta-v2"

    @classmethod
    def read_fields(cls, raw: dict, source: str) -> dict:
        H, NH = cls.value(raw, "hidden_size"), cls.value(raw, "num_attention_heads")
        values = {}
        for name in ("embedding_size", "pooler_hidden_size"):
            if name not in raw:  # transformers: getattr(config, "embedding_size", hidden_size); null is an error there too
                values[name] = H
        if cls.value(raw, "attention_head_size") is None:
            values["attention_head_size"] = H // NH if isinstance(H, int) and isinstance(NH, int) and NH > 0 else None
        values["pos_att_type"] = _parse_pos_att_type(raw.get("pos_att_type"), source)
        values["norm_rel_ebd"] = _parse_norm_rel_ebd(raw.get("norm_rel_ebd", "none"), source)
        return values

    @property
    def span(self) -> int:
        """S: the relative distances the embedding table holds on either side (att_span in transformers)."""
        return self.position_buckets if self.position_buckets > 0 else self.relative_range

    @property
    def relative_range(self) -> int:
        """max_relative_positions, where -1 (or any value < 1) means max_position_embeddings."""
        return self.max_relative_positions if self.max_relative_positions >= 1 else self.max_position_embeddings

    def check(self):
        c = self
        check_sizes(c, "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                    "max_position_embeddings", "embedding_size")
        check_sizes(c, "type_vocab_size", minimum=0)
        check_divisible(c, "hidden_size", "num_attention_heads")
        check_eps(c, "layer_norm_eps")
        check_token_id(c, "pad_token_id")
        for name in ("relative_attention", "share_att_key", "position_biased_input"):
            if not isinstance(getattr(c, name), bool):
                raise ConfigError(f"{c.source}: field {name!r} must be true or false, found {show(getattr(c, name))}")
        for name in ("max_relative_positions", "position_buckets", "conv_kernel_size"):
            check_sizes(c, name, minimum=-2 ** 31)
        if c.relative_attention and c.position_buckets > 0 and not c.relative_range - 1 > c.position_buckets // 2 >= 1:
            raise ConfigError(f"{c.source}: position_buckets {c.position_buckets} needs max_relative_positions "
                              f"({c.relative_range}) - 1 > position_buckets / 2 >= 1 for its log buckets")
        check_choice(c, "hidden_act", ("gelu",), " (exact erf GELU, as transformers' 'gelu')")
        check_choice(c, "pooler_hidden_act", tuple(ACTIVATIONS))
        if c.attention_head_size != c.head_dim:
            raise ConfigError(f"{c.source}: attention_head_size {show(c.attention_head_size)} must be hidden_size / "
                              f"num_attention_heads = {c.head_dim} (the attention output is a hidden_size x hidden_size "
                              "dense layer)")
        if c.pooler_hidden_size != c.hidden_size:
            raise ConfigError(f"{c.source}: pooler_hidden_size {show(c.pooler_hidden_size)} must equal hidden_size "
                              f"{c.hidden_size} (the ContextPooler's dense layer reads the hidden states)")
        if c.conv_kernel_size > 0:
            if c.conv_kernel_size % 2 == 0:
                raise ConfigError(f"{c.source}: conv_kernel_size {c.conv_kernel_size} is even; the ConvLayer keeps "
                                  "the sequence length only for an odd kernel")
            check_choice(c, "conv_groups", (1,), " (a convolution over all of hidden_size)")
            check_choice(c, "conv_act", tuple(ACTIVATIONS))


def _parse_pos_att_type(value, source: str) -> tuple[str, ...]:
    # As DebertaV2Config: a string is lowercased and split at "|"; a list is taken as it is; null is none.
    if value is None:
        return ()
    if isinstance(value, str):
        types = [t.strip() for t in value.lower().split("|")]
    elif isinstance(value, list) and all(isinstance(t, str) for t in value):
        types = value
    else:
        raise ConfigError(f"{source}: pos_att_type must be a list of strings or a '|'-separated string, found {show(value)}")
    unknown = [t for t in types if t not in POSITION_TERMS]
    if unknown:
        raise ConfigError(f"{source}: unsupported pos_att_type {show(unknown)} (from {show(value)}); minibert "
                          f"implements {', '.join(map(repr, POSITION_TERMS))}")
    return tuple(types)


def _parse_norm_rel_ebd(value, source: str) -> tuple[str, ...]:
    # As DebertaV2Encoder: lowercased, split at "|"; "layer_norm" normalizes the relative embeddings.
    if not isinstance(value, str):
        raise ConfigError(f"{source}: norm_rel_ebd must be a string such as 'layer_norm' or 'none', found {show(value)}")
    parts = tuple(p.strip() for p in value.lower().split("|"))
    unknown = [p for p in parts if p not in ("layer_norm", "none")]
    if unknown:
        raise ConfigError(f"{source}: unsupported norm_rel_ebd {show(value)}; minibert implements 'layer_norm' and 'none'")
    return parts


# ---------------------------------------------------------------------------------------------
# Parameters, and the table of HuggingFace tensor names


@dataclass(frozen=True)
class Embeddings:
    word: np.ndarray               # [V, E]
    position: np.ndarray | None    # [P, E]; None without position_biased_input (v3)
    token_type: np.ndarray | None  # [TV, E]; None when type_vocab_size is 0
    proj: np.ndarray | None        # [H, E], bias-free; None when E == H
    norm: LayerNorm


@dataclass(frozen=True)
class EncoderLayer:
    query: Linear                  # H -> H
    key: Linear                    # H -> H
    value: Linear                  # H -> H
    pos_key: Linear | None         # H -> H for c2p: the relative embeddings as keys (None: share_att_key, use `key`)
    pos_query: Linear | None       # H -> H for p2c: the relative embeddings as queries (None: use `query`)
    attn_out: Linear               # H -> H
    attn_norm: LayerNorm
    ffn_in: Linear                 # H -> I
    ffn_out: Linear                # I -> H
    ffn_norm: LayerNorm


@dataclass(frozen=True)
class ConvLayer:
    weight: np.ndarray             # [H, H, K], nn.Conv1d's [out, in, kernel]
    bias: np.ndarray               # [H]
    norm: LayerNorm


@dataclass(frozen=True)
class DebertaV2Params:
    embeddings: Embeddings
    layers: tuple[EncoderLayer, ...]
    rel_embeddings: np.ndarray | None  # [2S, H]; None without relative_attention
    rel_norm: LayerNorm | None         # the relative embeddings' LayerNorm (norm_rel_ebd "layer_norm")
    conv: ConvLayer | None             # after the first layer (conv_kernel_size > 0)
    pooler: Linear | None              # H -> H, then pooler_hidden_act; None when loaded as a bare encoder
    classifier: Linear | None          # H -> L; None when loaded as a bare encoder


def layer_skeleton(c: DebertaV2Config, i: int) -> EncoderLayer:
    H, I = c.hidden_size, c.intermediate_size
    p = f"encoder.layer.{i}."
    own_keys = c.relative_attention and not c.share_att_key  # else the position terms reuse key / query
    return EncoderLayer(
        query=linear_spec(p + "attention.self.query_proj", H, H),
        key=linear_spec(p + "attention.self.key_proj", H, H),
        value=linear_spec(p + "attention.self.value_proj", H, H),
        pos_key=linear_spec(p + "attention.self.pos_key_proj", H, H) if own_keys and "c2p" in c.pos_att_type else None,
        pos_query=linear_spec(p + "attention.self.pos_query_proj", H, H) if own_keys and "p2c" in c.pos_att_type else None,
        attn_out=linear_spec(p + "attention.output.dense", H, H),
        attn_norm=norm_spec(p + "attention.output.LayerNorm", H),
        ffn_in=linear_spec(p + "intermediate.dense", I, H),
        ffn_out=linear_spec(p + "output.dense", H, I),
        ffn_norm=norm_spec(p + "output.LayerNorm", H),
    )


# The tensor names, without the "deberta." prefix that DebertaV2ForSequenceClassification gives the
# encoder; the pooler and the classifier have no prefix.
def skeleton(c: DebertaV2Config, head: bool = True) -> DebertaV2Params:
    H, E, L = c.hidden_size, c.embedding_size, c.num_labels
    e = "embeddings."
    return DebertaV2Params(
        embeddings=Embeddings(
            word=Spec(e + "word_embeddings.weight", (c.vocab_size, E)),
            position=Spec(e + "position_embeddings.weight", (c.max_position_embeddings, E))
            if c.position_biased_input else None,
            token_type=Spec(e + "token_type_embeddings.weight", (c.type_vocab_size, E)) if c.type_vocab_size else None,
            proj=Spec(e + "embed_proj.weight", (H, E)) if E != H else None,
            norm=norm_spec(e + "LayerNorm", H),
        ),
        layers=tuple(layer_skeleton(c, i) for i in range(c.num_hidden_layers)),
        rel_embeddings=Spec("encoder.rel_embeddings.weight", (2 * c.span, H), widen=True) if c.relative_attention else None,
        # The encoder builds this LayerNorm whenever norm_rel_ebd says so, relative_attention or not.
        rel_norm=norm_spec("encoder.LayerNorm", H) if "layer_norm" in c.norm_rel_ebd else None,
        conv=ConvLayer(Spec("encoder.conv.conv.weight", (H, H, c.conv_kernel_size)), Spec("encoder.conv.conv.bias", (H,)),
                       norm_spec("encoder.conv.LayerNorm", H)) if c.conv_kernel_size > 0 else None,
        pooler=linear_spec("pooler.dense", H, H) if head else None,
        classifier=linear_spec("classifier", L, H) if head else None,
    )


# ---------------------------------------------------------------------------------------------
# The forward pass


def embeddings(p: Embeddings, c: DebertaV2Config, batch, ops):
    x = p.word[batch.input_ids]                      # [N] -> [N, E]
    if p.position is not None:
        x = x + p.position[batch.positions]          # [N, E], absolute positions (v2; v3 has none)
    if p.token_type is not None:
        x = x + p.token_type[batch.token_type_ids]   # [N, E]
    if p.proj is not None:
        x = linear(Linear(p.proj, None), x, ops)     # [N, E] -> [N, H]
    # transformers then multiplies by the attention mask: 1 on every token of a packed batch.
    return ops.layer_norm(x, p.norm.weight, p.norm.bias, c.layer_norm_eps)


def log_bucket(distance, bucket_size: int, max_position: int):
    """Relative distance -> its bucket: itself within +-bucket_size/2, else a log-spaced bucket
    (make_log_bucket_position, in float32 as transformers computes it)."""
    mid = bucket_size // 2
    sign = np.sign(distance)
    near = (distance < mid) & (distance > -mid)
    abs_pos = np.where(near, mid - 1, np.abs(distance))
    with np.errstate(divide="ignore"):  # log(0) at mid == 1, where the bucket is the distance itself
        log_pos = np.ceil(np.log(abs_pos.astype(np.float32) / np.float32(mid))
                          / np.log(np.float32((max_position - 1) / mid)) * np.float32(mid - 1)) + np.float32(mid)
    return np.where(abs_pos <= mid, distance, (log_pos * sign).astype(np.int64))


def distance_buckets(c: DebertaV2Config, T: int):
    """The bucket of every distance -(T - 1) .. T - 1 within a pair of T tokens: [D] int64 (entry d + T - 1)."""
    distance = np.arange(-(T - 1), T)                                           # [D]
    return distance if c.position_buckets <= 0 else log_bucket(distance, c.position_buckets, c.relative_range)


def relative_positions(c: DebertaV2Config, T: int):
    """The bucket of i - j for every query i and key j of a pair of T tokens: [T, T] int64."""
    distance = np.arange(T)[:, None] - np.arange(T)[None, :]                    # [T, T]
    return distance_buckets(c, T)[distance + (T - 1)]                           # [T, T]


def position_term(content, positions, index, scale):
    """content_t . positions[index[t, u]] for every t, u of a pair, scaled: [NH, T, T].

    content: [NH, T, HD]; positions: [NH, 2S, HD]; index: [T, T] rows of `positions`. Only the
    rows some index points at are multiplied (a short pair uses a few of the 2S rows)."""
    lo, hi = int(index.min()), int(index.max()) + 1
    scores = content @ positions[:, lo:hi].transpose(0, 2, 1)                  # [NH, T, hi - lo]
    return np.take_along_axis(scores, (index - lo)[None], axis=-1) / scale      # [NH, T, T]


def heads(x, NH):
    """[T, H] -> [NH, T, HD]."""
    return x.reshape(len(x), NH, -1).transpose(1, 0, 2)


def pair_scores(q, k, pos_key, pos_query, r, S, scale, r_keys=None):
    """The attention scores of one pair, c2c + (c2p + p2c), [NH, Tq, T] (query i, key j).

    q: [NH, Tq, HD], k: [NH, T, HD]; pos_key / pos_query: the relative embeddings projected as keys /
    queries, [NH, 2S, HD] (None: that term is not in pos_att_type); r: [Tq, T], the bucket b(i - j);
    r_keys: [T, Tq], the bucket b(j - i) (None: r itself, as when every token is a query, Tq = T)."""
    r_keys = r if r_keys is None else r_keys
    c2c = q @ (k / scale).transpose(0, 2, 1)                               # q_i . k_j: [NH, T, T]
    if r is None:
        return c2c
    position = np.zeros_like(c2c)
    if pos_key is not None:
        # c2p: q_i . pos_key[S + b(i - j)]
        position += position_term(q, pos_key, np.clip(r + S, 0, 2 * S - 1), scale)
    if pos_query is not None:
        # p2c: k_j . pos_query[S - b(j - i)], computed with the keys as rows (at [j, i]), then
        # transposed to [query, key]
        position += position_term(k, pos_query, np.clip(-r_keys + S, 0, 2 * S - 1), scale).transpose(0, 2, 1)
    return c2c + position


def score_scale(c: DebertaV2Config):
    """sqrt(HD x (1 + the number of position terms)), whether or not relative_attention computes them
    (as transformers)."""
    return np.sqrt(np.float32(c.head_dim * (1 + len(set(c.pos_att_type) & set(POSITION_TERMS)))))


def relative_table(params: DebertaV2Params, c: DebertaV2Config, ops):
    """The relative embeddings every layer shares, [2S, H] (after their LayerNorm, where norm_rel_ebd
    has one); None without relative attention."""
    rel = params.rel_embeddings
    if rel is not None and params.rel_norm is not None:
        rel = ops.layer_norm(rel, params.rel_norm.weight, params.rel_norm.bias, c.layer_norm_eps)
    return rel


def position_projections(p: EncoderLayer, c: DebertaV2Config, rel, ops):
    """The relative embeddings as keys (c2p) and as queries (p2c): [2S, H] -> [NH, 2S, HD] each, None
    for a term not in pos_att_type (both None without relative attention). With share_att_key,
    through the content key / query projections."""
    if not (c.relative_attention and c.pos_att_type):
        return None, None
    NH, pos_key, pos_query = c.num_attention_heads, None, None
    if "c2p" in c.pos_att_type:
        proj = p.pos_key if p.pos_key is not None else p.key
        pos_key = heads(linear(proj, rel, ops), NH)
    if "p2c" in c.pos_att_type:
        proj = p.pos_query if p.pos_query is not None else p.query
        pos_query = heads(linear(proj, rel, ops), NH)
    return pos_key, pos_query


def disentangled_attention(p: EncoderLayer, c: DebertaV2Config, x, rel, batch, ops, first_only=False):
    """Self-attention within each pair, scored c2c + c2p + p2c; the context, [N, H]. With first_only,
    each pair's first query alone (against every key): its context, [B, H]."""
    NH = c.num_attention_heads
    q = linear(p.query, x[batch.first_tokens] if first_only else x, ops)                    # [N or B, H]
    k = linear(p.key, x, ops)                           # [N, H]
    v = linear(p.value, x, ops)                         # [N, H]
    scale = score_scale(c)
    relative = c.relative_attention and bool(c.pos_att_type)
    pos_key, pos_query = position_projections(p, c, rel, ops)   # [NH, 2S, HD] each, or None

    context = np.empty_like(q)                            # [N or B, H]
    tables = {}                                           # pair length T -> distance_buckets, [2T - 1]
    blocks = []                                           # (pair, its first row, length, queries q0 .. q1 - 1)
    for b, (start, end) in enumerate(zip(batch.offsets[:-1].tolist(), batch.offsets[1:].tolist())):
        T = end - start
        if relative and T not in tables:
            tables[T] = distance_buckets(c, T)
        queries = 1 if first_only else T
        block = max(1, SCORE_BLOCK_ELEMENTS // (NH * T))  # a long pair is scored a block of queries at a time
        blocks += [(b, start, T, q0, min(queries, q0 + block)) for q0 in range(0, queries, block)]

    def attend(block):   # one block of queries against its pair's keys, into its own rows of context
        b, start, T, q0, q1 = block
        kh, vh = heads(k[start:start + T], NH), heads(v[start:start + T], NH)              # [NH, T, HD] each
        r = r_keys = None
        if relative:
            i, j = np.arange(q0, q1), np.arange(T)
            r = tables[T][i[:, None] - j[None, :] + T - 1]                                  # b(i - j): [Tq, T]
            r_keys = tables[T][j[:, None] - i[None, :] + T - 1]                             # b(j - i): [T, Tq]
        rows = slice(b, b + 1) if first_only else slice(start + q0, start + q1)              # the block's rows in q
        qh = heads(q[rows], NH)                                                             # [NH, Tq, HD]
        scores = pair_scores(qh, kh, pos_key, pos_query, r, c.span, scale, r_keys)        # [NH, Tq, T]
        probs = ops.softmax(scores)                                                       # [NH, Tq, T]
        context[rows] = (probs @ vh).transpose(1, 0, 2).reshape(q1 - q0, -1)      # [NH, Tq, HD] -> [Tq, H]
    ops.each(attend, blocks)   # the blocks write apart: a pass on several cores runs them side by side
    return context


def attention_probabilities(params: DebertaV2Params, c: DebertaV2Config, layer: int, x, ops):
    """The probabilities layer `layer` attends with in one pair, softmax(c2c + c2p + p2c): [NH, T, T] (query
    i, key j), from that layer's input x, [T, H] (the embeddings, or the previous layer's output).

    The forward pass keeps no attention weights; `minibert explain` shows these. They are computed as
    disentangled_attention and encoder compute them (the same projections, pair_scores and softmax)."""
    p, NH = params.layers[layer], c.num_attention_heads
    q, k = (heads(linear(w, x, ops), NH) for w in (p.query, p.key))               # [NH, T, HD] each
    pos_key, pos_query = position_projections(p, c, relative_table(params, c, ops), ops)   # [NH, 2S, HD] or None
    r = relative_positions(c, len(x)) if c.relative_attention and c.pos_att_type else None  # [T, T]
    return ops.softmax(pair_scores(q, k, pos_key, pos_query, r, c.span, score_scale(c)))   # [NH, T, T]


def encoder_layer(p: EncoderLayer, c: DebertaV2Config, x, rel, batch, ops, first_only=False):
    # Post-LN, as BERT's layer; only the attention scores differ. first_only: [B, H] out, as bert's.
    # The attention's output is a temporary, not held through the feed-forward's [N, I].
    residual = x[batch.first_tokens] if first_only else x                           # [N or B, H]
    x = ops.add_layer_norm(linear(p.attn_out, disentangled_attention(p, c, x, rel, batch, ops, first_only), ops),
                           residual, p.attn_norm.weight, p.attn_norm.bias, c.layer_norm_eps)   # [N or B, H]
    h = linear(p.ffn_in, x, ops, gelu=True)                                        # [N, H] -> [N, I]
    h = linear(p.ffn_out, h, ops)                                                  # [N, I] -> [N, H]
    return ops.add_layer_norm(h, x, p.ffn_norm.weight, p.ffn_norm.bias, c.layer_norm_eps)


def activation(name: str, x, ops):
    return ops.gelu(x) if name == "gelu" else np.tanh(x)


def conv_layer(p: ConvLayer, c: DebertaV2Config, embedded, layer_out, batch, ops):
    """v2-xlarge's ConvLayer: LayerNorm(layer_out + act(conv1d(embedded))), the convolution zero-padded
    at each pair's ends (transformers' padding tokens are zeroed embeddings)."""
    K = c.conv_kernel_size
    pad = (K - 1) // 2
    out = np.broadcast_to(p.bias, embedded.shape).copy()                # [N, H]
    lengths = np.repeat(batch.lengths, batch.lengths)                   # [N] the length of each token's pair
    for tap in range(K):
        shift = tap - pad                                               # this tap reads token t + shift
        inside = (batch.positions + shift >= 0) & (batch.positions + shift < lengths)   # [N] within the pair
        rows = np.flatnonzero(inside)
        out[rows] += embedded[rows + shift] @ p.weight[:, :, tap].T    # [n, H]
    out = activation(c.conv_act, out, ops)                             # [N, H]
    return ops.add_layer_norm(out, layer_out, p.norm.weight, p.norm.bias, c.layer_norm_eps)


def encoder(params: DebertaV2Params, c: DebertaV2Config, batch, ops, stages=None, first_only=False):
    """Token ids -> the last layer's hidden states, [N, H]; with first_only, at each pair's first token
    only, [B, H], the last layer computing those rows alone (as bert.run_layers; not when that layer
    is also the first, which ConvLayer follows with every row). Fills `stages` if given."""
    x = embeddings(params.embeddings, c, batch, ops)                   # [N, H]
    embedded = x
    rel = relative_table(params, c, ops)                               # [2S, H], shared by every layer
    if stages is not None:
        stages["embeddings"] = x
    last = len(params.layers) - 1
    last_first_only = first_only and stages is None and not (last == 0 and params.conv is not None)
    for i, layer in enumerate(params.layers):
        x = encoder_layer(layer, c, x, rel, batch, ops, first_only=last_first_only and i == last)  # [N, H] (last: [B, H])
        if i == 0 and params.conv is not None:
            x = conv_layer(params.conv, c, embedded, x, batch, ops)    # [N, H]
        if stages is not None:
            stages[f"layer_{i}"] = x
    return x[batch.first_tokens] if first_only and not last_first_only else x


def context_pooler(p: Linear, c: DebertaV2Config, first, ops):
    return activation(c.pooler_hidden_act, linear(p, first, ops), ops)              # [B, H]


def forward(params: DebertaV2Params, c: DebertaV2Config, batch, ops, return_stages=False):
    """Logits [B, L] for a packed batch; with return_stages, also every intermediate stage."""
    stages = {} if return_stages else None
    first = encoder(params, c, batch, ops, stages, first_only=True)              # [B, H]: the pooler reads [CLS] only
    pooled = context_pooler(params.pooler, c, first, ops)                        # [B, H]
    logits = linear(params.classifier, pooled, ops)                              # [B, H] -> [B, L]
    return with_stages(logits, stages, HEAD_STAGE, pooled)


FAMILY = Family(
    name="DeBERTa-v2", model_types=("deberta-v2",), config=DebertaV2Config, skeleton=skeleton, encoder=encoder,
    forward=forward, prefix="deberta.", top_level=("pooler.", "classifier."), head=("pooler.", "classifier."),
    classifier="classifier.", tokenizer_class="DebertaV2Tokenizer", head_stage=HEAD_STAGE, head_module="classifier",
    attention_probabilities=attention_probabilities,
    # DebertaV2PreTrainedModel._keys_to_ignore_on_load_unexpected: v3 checkpoints may carry absolute
    # position embeddings that position_biased_input false leaves unused.
    ignored_unexpected=("position_embeddings",),
)
