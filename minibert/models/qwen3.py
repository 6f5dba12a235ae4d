"""Qwen3: Qwen3ForSequenceClassification's and Qwen3ForCausalLM's forward pass (transformers, eval mode),
top to bottom: a decoder language model read as a reranker.

Dimension letters as in bert.py, plus NKV (key/value heads, at most NH: grouped-query attention) and HD
(head_dim, a field of its own: NH * HD need not be H). A batch is packed as for BERT: each pair is one
rendered prompt, its tokens back to back with the others'.

How a decoder differs from the encoders, and where:
- embeddings: the token embedding alone; positions enter attention as rotary embeddings (RoPE) of the
  queries and keys, as in ModernBERT.
- decoder layer: pre-norm with RMSNorm (no mean, no bias: x / sqrt(mean(x^2) + eps) * weight), separate q,
  k, v projections (NH, NKV, NKV heads of HD), then Qwen3's own RMSNorm of every query and key head
  over its HD values before the rotation; causal attention (token i sees tokens j <= i of its own pair;
  in the sliding_attention layers only the last `sliding_window` of them); a SwiGLU feed-forward,
  down(silu(gate(x)) * up(x)).
- a final RMSNorm after the last layer.
- head: the last token of each pair, not the first: causal attention leaves the last token the only
  one that has seen the whole pair. Qwen3ForSequenceClassification's `score` (H -> L, no bias) reads it
  (the last token that is not pad_token_id, as transformers picks it); a reranker scored from the
  language model reads a few rows of lm_head there (the logits of "yes" and "no", say): `lm_head_rows`, which
  models/chain.py's LogitScore multiplies by that last hidden state.
  Either way the last layer is computed for that one token only.

The input is a conversation: minibert/formats/chat.py renders each pair through the tokenizer's chat
template, as sentence-transformers 6 does. A *ForCausalLM reranker's score (sentence-transformers'
LogitScore: logit("yes") - logit("no"), say) is models/chain.py's, from `lm_head_rows`.

Stages (return_stages), as transformers' output_hidden_states gives them: `embeddings`, `layer_0` ...
`layer_{L-1}` (the last after the final norm, as transformers' hidden_states[-1]), then `last_token`
(the head's input) and `logits`.
"""

from dataclasses import dataclass, field

import numpy as np

from minibert.errors import ConfigError, ModelFormatError, show
from minibert.formats.config import (
    HFConfig,
    check_choice,
    check_eps,
    check_layer_types,
    check_sizes,
    check_token_id,
    is_positive_finite,
)
from minibert.models.family import LAST, Family, with_stages
from minibert.models.params import Linear, Spec, linear, linear_spec

LAYER_TYPES = ("full_attention", "sliding_attention")
HEAD_STAGE = "last_token"


@dataclass(frozen=True)
class Qwen3Config(HFConfig):
    """Qwen3Config's fields (transformers), with its defaults; layer_types and rope_parameters as its
    __post_init__ and rope standardization derive them (read_fields)."""
    vocab_size: int = 151936
    hidden_size: int = 4096
    intermediate_size: int = 22016
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = 32
    head_dim: int = 128
    hidden_act: str = "silu"
    max_position_embeddings: int = 32768
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    use_sliding_window: bool = False
    sliding_window: int | None = 4096
    max_window_layers: int = 28
    layer_types: tuple[str, ...] = ()
    rope_parameters: dict = field(default_factory=dict)   # {"rope_type": "default", "rope_theta": float}
    pad_token_id: int | None = None
    model_type: str = "qwen3"

    type_vocab_size = 0  # no token type embeddings

    @classmethod
    def read_fields(cls, raw: dict, source: str) -> dict:
        values = {}
        kv = cls.value(raw, "num_key_value_heads")
        values["num_key_value_heads"] = cls.value(raw, "num_attention_heads") if kv is None else kv
        window = cls.value(raw, "sliding_window") if cls.value(raw, "use_sliding_window") else None
        values["sliding_window"] = window
        listed = raw.get("layer_types")
        if listed is not None and not isinstance(listed, list):
            raise ConfigError(f"{source}: field 'layer_types' must be a list, found {show(listed)}")
        layers, first_window = cls.value(raw, "num_hidden_layers"), cls.value(raw, "max_window_layers")
        if listed is None and isinstance(layers, int) and isinstance(first_window, int):
            listed = ["sliding_attention" if window is not None and i >= first_window else "full_attention"
                      for i in range(layers)]
        values["layer_types"] = tuple(listed or ())
        values["rope_parameters"] = _rope_parameters(raw, source)
        return values

    def check(self):
        check_sizes(self, "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                    "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(f"{self.source}: num_attention_heads ({self.num_attention_heads}) must be a multiple "
                              f"of num_key_value_heads ({self.num_key_value_heads})")
        if self.head_dim % 2:
            raise ConfigError(f"{self.source}: rotary embeddings need an even head_dim, found {self.head_dim}")
        check_choice(self, "hidden_act", ("silu",), " (SwiGLU, as Qwen3's MLP)")
        for name in ("attention_bias", "tie_word_embeddings", "use_sliding_window"):
            check_choice(self, name, (True, False))
        check_eps(self, "rms_norm_eps")
        check_token_id(self, "pad_token_id")
        check_layer_types(self, LAYER_TYPES)
        if "sliding_attention" in self.layer_types and not (isinstance(self.sliding_window, int)
                                                            and self.sliding_window > 0):
            raise ConfigError(f"{self.source}: sliding_attention layers need a positive sliding_window, found "
                              f"{show(self.sliding_window)}")
        rope = self.rope_parameters
        if rope.get("rope_type", "default") != "default":
            raise ConfigError(f"{self.source}: unsupported rope_parameters rope_type {show(rope.get('rope_type'))} "
                              "(rope_scaling); minibert implements 'default'")
        if not is_positive_finite(rope.get("rope_theta")):
            raise ConfigError(f"{self.source}: rope_theta must be a positive finite number, found "
                              f"{show(rope.get('rope_theta'))}")


def _rope_parameters(raw: dict, source: str) -> dict:
    """transformers 5's `rope_parameters`, or the legacy `rope_theta` and `rope_scaling` (the default theta
    10,000, as transformers' RotaryEmbeddingConfigMixin)."""
    given = raw.get("rope_parameters") or raw.get("rope_scaling") or {}
    if not isinstance(given, dict):
        raise ConfigError(f"{source}: field 'rope_parameters' must be an object, found {show(given)}")
    params = dict(given)
    params.setdefault("rope_theta", raw.get("rope_theta", 10_000.0))
    params.setdefault("rope_type", params.get("type", "default"))
    return params


# ---------------------------------------------------------------------------------------------
# Parameters, and the table of HuggingFace tensor names


@dataclass(frozen=True)
class RMSNorm:
    weight: np.ndarray  # [width]


@dataclass(frozen=True)
class DecoderLayer:
    attn_norm: RMSNorm     # input_layernorm
    q: Linear              # H -> NH * HD
    k: Linear              # H -> NKV * HD
    v: Linear              # H -> NKV * HD
    q_norm: RMSNorm        # over each head's HD values
    k_norm: RMSNorm
    attn_out: Linear       # o_proj, NH * HD -> H
    mlp_norm: RMSNorm      # post_attention_layernorm
    gate: Linear           # H -> I
    up: Linear             # H -> I
    down: Linear           # I -> H


@dataclass(frozen=True)
class Qwen3Params:
    embed: np.ndarray                 # [V, H]
    layers: tuple[DecoderLayer, ...]
    final_norm: RMSNorm
    score: Linear | None              # H -> L: Qwen3ForSequenceClassification's head; None for the decoder alone


def rms_spec(name: str, width: int) -> RMSNorm:
    return RMSNorm(Spec(f"{name}.weight", (width,)))


def layer_skeleton(c: Qwen3Config, i: int) -> DecoderLayer:
    H, I, HD = c.hidden_size, c.intermediate_size, c.head_dim
    q_width, kv_width, bias = c.num_attention_heads * HD, c.num_key_value_heads * HD, c.attention_bias
    p = f"layers.{i}."
    return DecoderLayer(
        attn_norm=rms_spec(p + "input_layernorm", H),
        q=linear_spec(p + "self_attn.q_proj", q_width, H, bias),
        k=linear_spec(p + "self_attn.k_proj", kv_width, H, bias),
        v=linear_spec(p + "self_attn.v_proj", kv_width, H, bias),
        q_norm=rms_spec(p + "self_attn.q_norm", HD),
        k_norm=rms_spec(p + "self_attn.k_norm", HD),
        attn_out=linear_spec(p + "self_attn.o_proj", H, q_width, bias),
        mlp_norm=rms_spec(p + "post_attention_layernorm", H),
        gate=linear_spec(p + "mlp.gate_proj", I, H, False),
        up=linear_spec(p + "mlp.up_proj", I, H, False),
        down=linear_spec(p + "mlp.down_proj", H, I, False),
    )


# The tensor names, without the "model." prefix that Qwen3ForSequenceClassification and Qwen3ForCausalLM give
# the decoder; `score` has none. head=False: the decoder alone (a *ForCausalLM's lm_head is read by lm_head_rows).
def skeleton(c: Qwen3Config, head: bool = True) -> Qwen3Params:
    H, V = c.hidden_size, c.vocab_size
    return Qwen3Params(
        embed=Spec("embed_tokens.weight", (V, H)),
        layers=tuple(layer_skeleton(c, i) for i in range(c.num_hidden_layers)),
        final_norm=rms_spec("norm", H),
        score=linear_spec("score", c.num_labels, H, False) if head else None,
    )


# ---------------------------------------------------------------------------------------------
# The forward pass


def rms_norm(p: RMSNorm, x, c: Qwen3Config):
    """x / sqrt(mean(x^2) + eps) * weight over the last axis; the mean of squares in float64."""
    x64 = x.astype(np.float64)
    inv = 1.0 / np.sqrt((x64 * x64).mean(axis=-1, keepdims=True) + c.rms_norm_eps)   # [.., 1]
    return (x64 * inv).astype(np.float32) * p.weight                                   # [.., width]


def head_norm(p: RMSNorm, x, heads: int, c: Qwen3Config):
    """Qwen3's q_norm / k_norm: RMSNorm of each head's HD values. [n, heads * HD] -> the same."""
    n = len(x)
    return rms_norm(p, x.reshape(n, heads, c.head_dim), c).reshape(n, heads * c.head_dim)


def attention(p: DecoderLayer, c: Qwen3Config, x, offsets, rotary, window, ops, last_only=False):
    """[N, H] -> [N, H]; with last_only, at each pair's last token only, [B, H] (see decoder)."""
    NH, NKV = c.num_attention_heads, c.num_key_value_heads
    cos, sin = rotary                                              # [N, HD / 2] each
    h_q = x[offsets[1:] - 1] if last_only else x                   # the queries' rows: [B or N, H]
    q = head_norm(p.q_norm, linear(p.q, h_q, ops), NH, c)          # [B or N, NH * HD]
    k = head_norm(p.k_norm, linear(p.k, x, ops), NKV, c)           # [N, NKV * HD]
    v = linear(p.v, x, ops)                                        # [N, NKV * HD]
    last = offsets[1:] - 1
    q = ops.apply_rotary(q, cos[last], sin[last], NH) if last_only else ops.apply_rotary(q, cos, sin, NH)
    k = ops.apply_rotary(k, cos, sin, NKV)
    # Each query head attends with key/value head (its index // (NH / NKV)), to the tokens of its own pair
    # at or before it (window: the last `sliding_window` of them, itself included).
    context = ops.attention(q, k, v, offsets, NH, window=window, kv_heads=NKV, causal=True,
                            last_only=last_only)                  # [B or N, NH * HD]
    return linear(p.attn_out, context, ops)                        # [B or N, H]


def mlp(p: DecoderLayer, x, ops):
    h = ops.swiglu(linear(p.gate, x, ops), linear(p.up, x, ops))   # SiLU(gate(x)) * up(x): [n, H] -> [n, I]
    return linear(p.down, h, ops)                                   # [n, I] -> [n, H]


def decoder_layer(p: DecoderLayer, c: Qwen3Config, x, offsets, rotary, window, ops, last_only=False):
    attended = attention(p, c, rms_norm(p.attn_norm, x, c), offsets, rotary, window, ops, last_only)  # [n, H]
    x = (x[offsets[1:] - 1] if last_only else x) + attended                                        # [n, H]
    return x + mlp(p, rms_norm(p.mlp_norm, x, c), ops)                                             # [n, H]


def decoder(params: Qwen3Params, c: Qwen3Config, batch, ops, stages=None, last_only=False):
    """Token ids -> the last hidden states after the final norm, [N, H]; with last_only, at each pair's last
    token only, [B, H]: the last layer then computes those rows alone. Fills `stages` if given."""
    x = params.embed[batch.input_ids]                                  # [N] -> [N, H]
    if stages is not None:
        stages["embeddings"] = x
    rotary = ops.rotary_tables(batch.positions, c.head_dim, c.rope_parameters["rope_theta"])   # 2 x [N, HD / 2]
    last = c.num_hidden_layers - 1
    last_only_here = last_only and stages is None
    for i, (layer, layer_type) in enumerate(zip(params.layers, c.layer_types)):
        # transformers' window counts the token itself: i sees j when i - j < sliding_window.
        window = c.sliding_window - 1 if layer_type == "sliding_attention" else None
        x = decoder_layer(layer, c, x, batch.offsets, rotary, window, ops, last_only_here and i == last)
        if i == last:
            x = rms_norm(params.final_norm, x, c)
        if stages is not None:
            stages[f"layer_{i}"] = x
    return x[batch.offsets[1:] - 1] if last_only and not last_only_here else x


def score_rows(c: Qwen3Config, batch):
    """The row each pair's score is read at: its last token that is not pad_token_id (transformers'
    Qwen3ForSequenceClassification; the first token if all are), or its last token when there is no
    pad_token_id. [B] int64."""
    if c.pad_token_id is None:
        return batch.offsets[1:] - 1
    real = batch.input_ids != c.pad_token_id                                          # [N]
    rows = np.where(real, np.arange(len(real)), -1)                                   # [N]
    last_real = np.maximum.reduceat(rows, batch.offsets[:-1]) if len(real) else rows  # [B]
    return np.maximum(last_real, batch.offsets[:-1])


def forward(params: Qwen3Params, c: Qwen3Config, batch, ops, return_stages=False):
    """Qwen3ForSequenceClassification: logits [B, L] for a packed batch; with return_stages, also every
    intermediate stage."""
    stages = {} if return_stages else None
    rows = score_rows(c, batch)
    if np.array_equal(rows, batch.offsets[1:] - 1):    # the score is read at each pair's last token
        last = decoder(params, c, batch, ops, stages, last_only=True)   # [B, H]
    else:
        last = decoder(params, c, batch, ops, stages)[rows]             # [N, H] -> [B, H]
    logits = linear(params.score, last, ops)                            # [B, L], raw logits
    return with_stages(logits, stages, HEAD_STAGE, last)


def encoder(params: Qwen3Params, c: Qwen3Config, batch, ops, stages=None, first_only=False, last_only=False):
    """The Family contract's encoder: every token's last hidden state, [N, H]; with last_only, each pair's last
    token's, [B, H] (what a decoder's head reads). A decoder has no first-token shortcut: first_only is refused."""
    if first_only:
        raise ValueError("a decoder's head reads the last token, not the first")
    return decoder(params, c, batch, ops, stages, last_only=last_only)


def lm_head_rows(tensors: dict, c: Qwen3Config, token_ids) -> np.ndarray:
    """Rows `token_ids` of Qwen3ForCausalLM's lm_head, [K, H] float32: lm_head.weight, or with tied embeddings
    the embedding itself (model.embed_tokens.weight). The other rows are never read."""
    name = "model.embed_tokens.weight" if c.tie_word_embeddings else "lm_head.weight"
    if name not in tensors:
        raise ModelFormatError(f"{c.source}: the checkpoint has no {name!r}, which a *ForCausalLM reranker's "
                               "score is read from" + ("" if c.tie_word_embeddings else
                                                       " (tie_word_embeddings is false)"))
    table = tensors[name]
    if table.shape != (c.vocab_size, c.hidden_size):
        raise ModelFormatError(f"{c.source}: tensor {name}: expected shape {[c.vocab_size, c.hidden_size]}, found "
                               f"{list(table.shape)}")
    if max(token_ids) >= c.vocab_size:
        raise ConfigError(f"{c.source}: token id {max(token_ids)} is outside the vocabulary of {c.vocab_size}")
    return np.ascontiguousarray(np.asarray(table[list(token_ids)], dtype=np.float32))


FAMILY = Family(
    name="Qwen3", model_types=("qwen3",), config=Qwen3Config, skeleton=skeleton, encoder=encoder, forward=forward,
    head_stage=HEAD_STAGE, head_module="score",
    prefix="model.", top_level=("score.", "lm_head."), head=("score.", "lm_head."), classifier="score.",
    tokenizer_class="Qwen2TokenizerFast", decoder=True, lm_head_rows=lm_head_rows, head_reads=lambda c: LAST,
)
