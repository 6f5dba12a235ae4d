"""Llama: LlamaForSequenceClassification's and LlamaForCausalLM's forward pass (transformers, eval mode), top to
bottom: a decoder language model read as a reranker. The other decoder families (qwen2.py, qwen3.py, mistral.py,
gemma.py) are this decoder with other switches, as transformers derives them (Llama -> Mistral, Qwen2 -> Qwen3;
Gemma is Llama with its own norm, embedding scale and gate); each says only what differs.

Dimension letters as in bert.py, plus NKV (key/value heads, at most NH: grouped-query attention) and HD
(head_dim: NH * HD need not be H). A batch is packed as for BERT: each pair is one prompt (a chat template's
render, or the tokenizer's pair template), its tokens back to back with the others'. No dropout (inference).

How a decoder differs from the encoders, and where:
- embeddings: the token embedding alone (Gemma: times sqrt(H), `embed_scale`); positions enter attention as
  rotary embeddings (RoPE) of the queries and keys, as in ModernBERT.
- decoder layer: pre-norm with RMSNorm (no mean, no bias: x / sqrt(mean(x^2) + eps) * weight; Gemma:
  * (1 + weight), `norm_offset`), separate q, k, v projections (NH, NKV, NKV heads of HD; biases as `qkv_bias`
  and `o_bias` say), Qwen3's RMSNorm of every query and key head (`qk_norm`) before the rotation; causal
  attention (token i sees tokens j <= i of its own pair; in a layer with a sliding window only the last
  `window` of them: `attention_windows`); a gated feed-forward, down(act(gate(x)) * up(x)) with act SiLU
  (SwiGLU) or tanh-GELU (Gemma's GeGLU), as hidden_act says.
- a final RMSNorm after the last layer.
- head: the last token of each pair, not the first: causal attention leaves the last token the only one that
  has seen the whole pair. *ForSequenceClassification's `score` (H -> L, no bias) reads it (the last token that
  is not pad_token_id, as transformers picks it); a reranker scored from the language model reads a few rows of
  lm_head there (the logits of "yes" and "no", say): `lm_head_rows`, which models/chain.py's LogitScore
  multiplies by that last hidden state. Either way the last layer is computed for that one token only.

Stages (return_stages), as transformers' output_hidden_states gives them: `embeddings` (after Gemma's scale),
`layer_0` ... `layer_{L-1}` (the last after the final norm, as transformers' hidden_states[-1]), then
`last_token` (the head's input) and `logits`.
"""

from dataclasses import dataclass, field

import numpy as np

from minibert.errors import ConfigError, ModelFormatError, show
from minibert.formats.config import (
    HFConfig,
    check_choice,
    check_eps,
    check_sizes,
    check_token_id,
    is_positive_finite,
)
from minibert.models.family import LAST, Family, with_stages
from minibert.models.params import Linear, Spec, linear, linear_spec

HEAD_STAGE = "last_token"
GATES = ("silu", "gelu_pytorch_tanh")   # the gated feed-forward's activations: SwiGLU, Gemma's tanh-GELU


@dataclass(frozen=True)
class DecoderConfig(HFConfig):
    """What every decoder family's config has (transformers' names and Llama's defaults); rope_parameters as
    transformers' rope standardization derives it (read_fields). A family's Config adds its own fields and sets
    the switches below, which say how its block differs from Llama's."""
    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None   # None: num_attention_heads (no grouping)
    head_dim: int | None = None              # None: hidden_size // num_attention_heads
    hidden_act: str = "silu"
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = False
    rope_parameters: dict = field(default_factory=dict)   # {"rope_type": "default", "rope_theta": float}
    pad_token_id: int | None = None
    model_type: str = "llama"

    type_vocab_size = 0  # no token type embeddings

    # The switches, Llama's values: each is read where it acts (layer_skeleton, rms_norm, decoder).
    qk_norm = False        # Qwen3: an RMSNorm of each query and key head
    norm_offset = 0.0      # Gemma: RMSNorm scales by (1 + weight)
    embed_scale = None     # Gemma: the embeddings times sqrt(hidden_size), a float32

    @property
    def qkv_bias(self) -> bool:
        """q_proj, k_proj and v_proj have a bias."""
        return False

    @property
    def o_bias(self) -> bool:
        """o_proj has a bias."""
        return False

    @property
    def mlp_bias(self) -> bool:
        """gate_proj, up_proj and down_proj have a bias."""
        return False

    def attention_windows(self) -> tuple:
        """Per layer: how many tokens before each query it sees, itself included (transformers' sliding_window),
        or None for all of them. Llama: None everywhere."""
        return (None,) * self.num_hidden_layers

    @classmethod
    def read_fields(cls, raw: dict, source: str) -> dict:
        values = {"rope_parameters": rope_parameters(raw, source)}
        if cls.value(raw, "num_key_value_heads") is None:
            values["num_key_value_heads"] = cls.value(raw, "num_attention_heads")
        if cls.value(raw, "head_dim") is None:
            hidden, heads = cls.value(raw, "hidden_size"), cls.value(raw, "num_attention_heads")
            values["head_dim"] = hidden // heads if isinstance(hidden, int) and isinstance(heads, int) and heads else None
        return values

    def check(self):
        check_sizes(self, "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                    "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(f"{self.source}: num_attention_heads ({self.num_attention_heads}) must be a multiple "
                              f"of num_key_value_heads ({self.num_key_value_heads})")
        if self.head_dim % 2:
            raise ConfigError(f"{self.source}: rotary embeddings need an even head_dim, found {self.head_dim}")
        check_choice(self, "hidden_act", GATES, " (the gate of the feed-forward: SwiGLU, tanh-GELU)")
        check_choice(self, "tie_word_embeddings", (True, False))
        check_eps(self, "rms_norm_eps")
        check_token_id(self, "pad_token_id")
        rope = self.rope_parameters
        if rope.get("rope_type", "default") != "default":
            raise ConfigError(f"{self.source}: unsupported rope_parameters rope_type {show(rope.get('rope_type'))} "
                              "(rope_scaling); minibert implements 'default'")
        if rope.get("partial_rotary_factor", 1.0) != 1.0:
            raise ConfigError(f"{self.source}: unsupported rope_parameters partial_rotary_factor "
                              f"{show(rope['partial_rotary_factor'])}; minibert rotates the whole head (1.0)")
        if not is_positive_finite(rope.get("rope_theta")):
            raise ConfigError(f"{self.source}: rope_theta must be a positive finite number, found "
                              f"{show(rope.get('rope_theta'))}")


def rope_parameters(raw: dict, source: str) -> dict:
    """transformers 5's `rope_parameters`, or the legacy `rope_theta` and `rope_scaling` (the default theta
    10,000, as transformers' RotaryEmbeddingConfigMixin)."""
    given = raw.get("rope_parameters") or raw.get("rope_scaling") or {}
    if not isinstance(given, dict):
        raise ConfigError(f"{source}: field 'rope_parameters' must be an object, found {show(given)}")
    params = dict(given)
    params.setdefault("rope_theta", raw.get("rope_theta", 10_000.0))
    params.setdefault("rope_type", params.get("type", "default"))
    return params


def check_window(config, window):
    """A sliding window is a positive number of tokens."""
    if not (isinstance(window, int) and not isinstance(window, bool) and window > 0):
        raise ConfigError(f"{config.source}: sliding-window layers need a positive sliding_window, found "
                          f"{show(window)}")


@dataclass(frozen=True)
class LlamaConfig(DecoderConfig):
    """LlamaConfig's own fields (transformers): biases on every attention projection, or on the MLP's."""
    attention_bias: bool = False
    mlp_bias: bool = False            # the switch of the same name is this field
    model_type: str = "llama"

    qkv_bias = property(lambda self: self.attention_bias)
    o_bias = property(lambda self: self.attention_bias)

    def check(self):
        super().check()
        for name in ("attention_bias", "mlp_bias"):
            check_choice(self, name, (True, False))


# ---------------------------------------------------------------------------------------------
# Parameters, and the table of HuggingFace tensor names


@dataclass(frozen=True)
class RMSNorm:
    weight: np.ndarray  # [width]


@dataclass(frozen=True)
class DecoderLayer:
    attn_norm: RMSNorm          # input_layernorm
    q: Linear                   # H -> NH * HD
    k: Linear                   # H -> NKV * HD
    v: Linear                   # H -> NKV * HD
    q_norm: RMSNorm | None      # over each head's HD values (qk_norm); None without
    k_norm: RMSNorm | None
    attn_out: Linear            # o_proj, NH * HD -> H
    mlp_norm: RMSNorm           # post_attention_layernorm
    gate: Linear                # H -> I
    up: Linear                  # H -> I
    down: Linear                # I -> H


@dataclass(frozen=True)
class DecoderParams:
    embed: np.ndarray                 # [V, H]
    layers: tuple[DecoderLayer, ...]
    final_norm: RMSNorm
    score: Linear | None              # H -> L: *ForSequenceClassification's head; None for the decoder alone


def rms_spec(name: str, width: int) -> RMSNorm:
    return RMSNorm(Spec(f"{name}.weight", (width,)))


def layer_skeleton(c: DecoderConfig, i: int) -> DecoderLayer:
    H, I, HD = c.hidden_size, c.intermediate_size, c.head_dim
    q_width, kv_width = c.num_attention_heads * HD, c.num_key_value_heads * HD
    p = f"layers.{i}."
    return DecoderLayer(
        attn_norm=rms_spec(p + "input_layernorm", H),
        q=linear_spec(p + "self_attn.q_proj", q_width, H, c.qkv_bias),
        k=linear_spec(p + "self_attn.k_proj", kv_width, H, c.qkv_bias),
        v=linear_spec(p + "self_attn.v_proj", kv_width, H, c.qkv_bias),
        q_norm=rms_spec(p + "self_attn.q_norm", HD) if c.qk_norm else None,
        k_norm=rms_spec(p + "self_attn.k_norm", HD) if c.qk_norm else None,
        attn_out=linear_spec(p + "self_attn.o_proj", H, q_width, c.o_bias),
        mlp_norm=rms_spec(p + "post_attention_layernorm", H),
        gate=linear_spec(p + "mlp.gate_proj", I, H, c.mlp_bias),
        up=linear_spec(p + "mlp.up_proj", I, H, c.mlp_bias),
        down=linear_spec(p + "mlp.down_proj", H, I, c.mlp_bias),
    )


# The tensor names, without the "model." prefix that *ForSequenceClassification and *ForCausalLM give the
# decoder; `score` has none. head=False: the decoder alone (a *ForCausalLM's lm_head is read by lm_head_rows).
def skeleton(c: DecoderConfig, head: bool = True) -> DecoderParams:
    H, V = c.hidden_size, c.vocab_size
    return DecoderParams(
        embed=Spec("embed_tokens.weight", (V, H)),
        layers=tuple(layer_skeleton(c, i) for i in range(c.num_hidden_layers)),
        final_norm=rms_spec("norm", H),
        score=linear_spec("score", c.num_labels, H, False) if head else None,
    )


# ---------------------------------------------------------------------------------------------
# The forward pass


def rms_norm(p: RMSNorm, x, c: DecoderConfig, ops):
    """x / sqrt(mean(x^2) + eps) * weight over the last axis (Gemma: * (1 + weight), in float32): ops.rms_norm,
    the mean of squares in float64."""
    weight = p.weight + np.float32(c.norm_offset) if c.norm_offset else p.weight       # [width]
    return ops.rms_norm(x, weight, c.rms_norm_eps)                                     # [.., width]


def head_norm(p: RMSNorm | None, x, heads: int, c: DecoderConfig, ops):
    """Qwen3's q_norm / k_norm: RMSNorm of each head's HD values, [n, heads * HD] -> the same; without
    (p None), x itself."""
    if p is None:
        return x
    n = len(x)
    return rms_norm(p, x.reshape(n * heads, c.head_dim), c, ops).reshape(n, heads * c.head_dim)


def attention(p: DecoderLayer, c: DecoderConfig, x, offsets, rotary, window, ops, last_only=False):
    """[N, H] -> [N, H]; with last_only, at each pair's last token only, [B, H] (see decoder)."""
    NH, NKV = c.num_attention_heads, c.num_key_value_heads
    cos, sin = rotary                                              # [N, HD / 2] each
    last = offsets[1:] - 1
    h_q = x[last] if last_only else x                              # the queries' rows: [B or N, H]
    q = head_norm(p.q_norm, linear(p.q, h_q, ops), NH, c, ops)     # [B or N, NH * HD]
    k = head_norm(p.k_norm, linear(p.k, x, ops), NKV, c, ops)      # [N, NKV * HD]
    v = linear(p.v, x, ops)                                        # [N, NKV * HD]
    q = ops.apply_rotary(q, cos[last], sin[last], NH) if last_only else ops.apply_rotary(q, cos, sin, NH)
    k = ops.apply_rotary(k, cos, sin, NKV)
    # Each query head attends with key/value head (its index // (NH / NKV)), to the tokens of its own pair
    # at or before it (window: the last `window` of them, itself included; ops.attention counts the others).
    context = ops.attention(q, k, v, offsets, NH, window=None if window is None else window - 1, kv_heads=NKV,
                            causal=True, last_only=last_only)    # [B or N, NH * HD]
    return linear(p.attn_out, context, ops)                        # [B or N, H]


def mlp(p: DecoderLayer, c: DecoderConfig, x, ops):
    gate, up = linear(p.gate, x, ops), linear(p.up, x, ops)          # [n, H] -> [n, I] each
    if c.hidden_act == "gelu_pytorch_tanh":
        h = ops.gelu_tanh_gate(gate, up)                             # Gemma's GeGLU: tanh-GELU(gate) * up
    else:
        h = ops.swiglu(gate, up)                                     # SwiGLU: SiLU(gate) * up
    return linear(p.down, h, ops)                                    # [n, I] -> [n, H]


def decoder_layer(p: DecoderLayer, c: DecoderConfig, x, offsets, rotary, window, ops, last_only=False):
    attended = attention(p, c, rms_norm(p.attn_norm, x, c, ops), offsets, rotary, window, ops, last_only)  # [n, H]
    x = (x[offsets[1:] - 1] if last_only else x) + attended                                             # [n, H]
    return x + mlp(p, c, rms_norm(p.mlp_norm, x, c, ops), ops)                                      # [n, H]


def decoder(params: DecoderParams, c: DecoderConfig, batch, ops, stages=None, last_only=False):
    """Token ids -> the last hidden states after the final norm, [N, H]; with last_only, at each pair's last
    token only, [B, H]: the last layer then computes those rows alone. Fills `stages` if given."""
    x = params.embed[batch.input_ids]                                  # [N] -> [N, H]
    if c.embed_scale is not None:
        x = x * c.embed_scale                                          # Gemma: * sqrt(H), rounded to float32
    if stages is not None:
        stages["embeddings"] = x
    rotary = ops.rotary_tables(batch.positions, c.head_dim, c.rope_parameters["rope_theta"])   # 2 x [N, HD / 2]
    last = c.num_hidden_layers - 1
    last_only_here = last_only and stages is None
    for i, (layer, window) in enumerate(zip(params.layers, c.attention_windows())):
        x = decoder_layer(layer, c, x, batch.offsets, rotary, window, ops, last_only_here and i == last)
        if i == last:
            x = rms_norm(params.final_norm, x, c, ops)
        if stages is not None:
            stages[f"layer_{i}"] = x
    return x[batch.offsets[1:] - 1] if last_only and not last_only_here else x


def score_rows(c: DecoderConfig, batch):
    """The row each pair's score is read at: its last token that is not pad_token_id (transformers'
    *ForSequenceClassification; the first token if all are), or its last token when there is no
    pad_token_id. [B] int64."""
    if c.pad_token_id is None:
        return batch.offsets[1:] - 1
    real = batch.input_ids != c.pad_token_id                                          # [N]
    rows = np.where(real, np.arange(len(real)), -1)                                   # [N]
    last_real = np.maximum.reduceat(rows, batch.offsets[:-1]) if len(real) else rows  # [B]
    return np.maximum(last_real, batch.offsets[:-1])


def forward(params: DecoderParams, c: DecoderConfig, batch, ops, return_stages=False):
    """*ForSequenceClassification: logits [B, L] for a packed batch; with return_stages, also every
    intermediate stage."""
    stages = {} if return_stages else None
    rows = score_rows(c, batch)
    if np.array_equal(rows, batch.offsets[1:] - 1):    # the score is read at each pair's last token
        last = decoder(params, c, batch, ops, stages, last_only=True)   # [B, H]
    else:
        last = decoder(params, c, batch, ops, stages)[rows]             # [N, H] -> [B, H]
    logits = linear(params.score, last, ops)                            # [B, L], raw logits
    return with_stages(logits, stages, HEAD_STAGE, last)


def encoder(params: DecoderParams, c: DecoderConfig, batch, ops, stages=None, first_only=False, last_only=False):
    """The Family contract's encoder: every token's last hidden state, [N, H]; with last_only, each pair's last
    token's, [B, H] (what a decoder's head reads). A decoder has no first-token shortcut: first_only is refused."""
    if first_only:
        raise ValueError("a decoder's head reads the last token, not the first")
    return decoder(params, c, batch, ops, stages, last_only=last_only)


def lm_head_rows(tensors: dict, c: DecoderConfig, token_ids) -> np.ndarray:
    """Rows `token_ids` of *ForCausalLM's lm_head, [K, H] float32: lm_head.weight, or with tied embeddings the
    embedding itself (model.embed_tokens.weight, unscaled). The other rows are never read."""
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


def decoder_family(name: str, model_type: str, config: type, tokenizer_class: str) -> Family:
    """The Family record of a decoder family: this file's forward pass, read through `config`'s switches."""
    return Family(
        name=name, model_types=(model_type,), config=config, skeleton=skeleton, encoder=encoder, forward=forward,
        head_stage=HEAD_STAGE, head_module="score",
        prefix="model.", top_level=("score.", "lm_head."), head=("score.", "lm_head."), classifier="score.",
        tokenizer_class=tokenizer_class, decoder=True, lm_head_rows=lm_head_rows, head_reads=lambda c: LAST,
    )


FAMILY = decoder_family("Llama", "llama", LlamaConfig, "LlamaTokenizerFast")
