"""GTE "new" (Alibaba-NLP/gte-multilingual-reranker-base): NewForSequenceClassification's forward pass
(eval mode), top to bottom.

The model's code is not in transformers: config.json's auto_map points at the Hub repository
Alibaba-NLP/new-impl (modeling.py, configuration.py: NewConfig, model_type "new"), run with
trust_remote_code. That code is the reference here (tools/goldens/gte.py says which copy, and how the
goldens were made from it); transformers 5's own `gte` model is the same math under other tensor
names and a converted config.

Dimension letters as in minibert/models/bert.py, plus I2 = 2 * intermediate_size, the width of the
gated feed-forward's first product. A batch is packed as for BERT.

How it differs from BERT, and where:
- embeddings: the token embedding, plus token type row 0 for every token (the XLM-R tokenizer gives
  no token type ids; type_vocab_size 0: no table at all), then LayerNorm. No position table: positions
  enter attention as rotary embeddings of the queries and keys (RoPE, half-split as in NeoX), 0, 1,
  2, ... within each pair, with theta = rope_theta, or NTK-scaled (rope_scaling {"type": "ntk",
  "factor": f}): theta * f, and every inverse frequency then divided by f^(2 / HD).
- encoder layer: post-LN as BERT's, with one fused qkv_proj (query | key | value, each NH heads of
  HD; pack_qkv false: three linears, stacked at load) and a gated feed-forward: up_gate_proj (no bias)
  makes up | gate, GELU(gate) * up, then down_proj.
- head: BERT's: the pooler (dense + tanh on the first token, <s>), then the classifier. Raw logits.

Stages: "embeddings", "layer_0" ... "layer_{L-1}" (the reference's hidden_states), then
    pooled   [B, H]  tanh(pooler.dense(<s>)), what the classifier reads
    logits   [B, L]

What the released checkpoints use is implemented; every other option of NewConfig (rms_norm,
absolute positions, logn attention scaling, NTK with mixed_b, another activation) is a ConfigError
naming the field. unpad_inputs and use_memory_efficient_attention choose the reference's kernels
(xformers), not its math: read and ignored. Inference only: no dropout. Every stage stays float32.
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
    is_positive_finite,
)
from minibert.models import bert
from minibert.models.family import Family, with_stages
from minibert.models.params import (
    LayerNorm,
    Linear,
    Spec,
    linear,
    linear_spec,
    norm_spec,
    rows,
    stacked,
)

# The reference's ACT2FN["gelu"] is the exact erf GELU; the tanh approximations are other names.
SUPPORTED_HIDDEN_ACTS = ("gelu",)
HEAD_STAGE = "pooled"  # NewPooler's output: tanh(dense(<s>))
ROPE_SCALING_KEYS = ("type", "factor", "mixed_b")


@dataclass(frozen=True)
class GteConfig(HFConfig):
    """NewConfig's fields (Alibaba-NLP/new-impl configuration.py), with its defaults. The dropouts and
    initializer_range have no effect on inference and are not read."""
    vocab_size: int = 30528
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    max_position_embeddings: int = 2048
    type_vocab_size: int = 1                  # 0: no token type embeddings
    layer_norm_type: str = "layer_norm"
    layer_norm_eps: float = 1e-12
    position_embedding_type: str = "rope"
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None          # {"type": "ntk", "factor": f} (and "mixed_b": refused)
    pack_qkv: bool = True                     # False: q_proj, k_proj, v_proj, stacked at load
    unpad_inputs: bool = False                # the reference's kernels only (xformers): no effect here
    use_memory_efficient_attention: bool = False
    logn_attention_scale: bool = False
    logn_attention_clip1: bool = False        # only read by logn_attention_scale
    pad_token_id: int | None = None           # PretrainedConfig's; the embedding's padding_idx (training only)
    model_type: str = "new"

    def check(self):
        check_sizes(self, "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                    "intermediate_size", "max_position_embeddings")
        check_sizes(self, "type_vocab_size", minimum=0)
        check_divisible(self, "hidden_size", "num_attention_heads")
        if self.head_dim % 2:
            raise ConfigError(f"{self.source}: rotary embeddings need an even head size, found hidden_size / "
                              f"num_attention_heads = {self.head_dim}")
        check_choice(self, "hidden_act", SUPPORTED_HIDDEN_ACTS, " (exact erf GELU, as the reference's 'gelu')")
        check_choice(self, "layer_norm_type", ("layer_norm",), " (the released checkpoints' LayerNorm)")
        check_eps(self, "layer_norm_eps")
        check_choice(self, "position_embedding_type", ("rope",), " (rotary positions, as the released checkpoints)")
        if not is_positive_finite(self.rope_theta):
            raise ConfigError(f"{self.source}: field 'rope_theta' must be a positive finite number, "
                              f"found {show(self.rope_theta)}")
        self._check_rope_scaling()
        for name in ("pack_qkv", "unpad_inputs", "use_memory_efficient_attention", "logn_attention_clip1"):
            check_choice(self, name, (True, False))
        check_choice(self, "logn_attention_scale", (False,), " (no log-n scaling of the queries)")
        check_token_id(self, "pad_token_id")

    def _check_rope_scaling(self):
        scaling = self.rope_scaling
        if scaling is None:
            return
        where = f"{self.source}: field 'rope_scaling'"
        if not isinstance(scaling, dict) or not set(scaling) <= set(ROPE_SCALING_KEYS):
            raise ConfigError(f"{where} must be null or an object with keys {', '.join(map(repr, ROPE_SCALING_KEYS))}, "
                              f"found {show(scaling)}")
        if scaling.get("type") != "ntk":
            raise ConfigError(f"{where}: unsupported type {show(scaling.get('type'))}; minibert implements 'ntk' "
                              "(the reference knows no other)")
        factor = scaling.get("factor")
        if not is_positive_finite(factor) or factor < 1:
            # Below 1 the reference's cache is shorter than max_position_embeddings and its inverse frequencies
            # change with the batch's length; no checkpoint does that.
            raise ConfigError(f"{where}: factor must be a finite number >= 1, found {show(factor)}")
        if scaling.get("mixed_b") is not None:
            raise ConfigError(f"{where}: mixed_b {show(scaling['mixed_b'])} (mixed NTK scaling) is not implemented; "
                              "minibert implements fixed NTK scaling (no mixed_b)")

    @property
    def rope(self) -> tuple[float, float]:
        """(theta, divisor) of the rotary inverse frequencies 1 / theta^(2i / HD) / divisor, as the reference
        computes them (Python doubles, rounded to float32 by the op): RotaryEmbedding's (rope_theta, 1), or
        NTKScalingRotaryEmbedding's (rope_theta * factor, factor^(2 / HD))."""
        if self.rope_scaling is None:
            return float(self.rope_theta), 1.0
        factor = self.rope_scaling["factor"]
        return float(self.rope_theta * factor), float(factor ** (2 / self.head_dim))


# ---------------------------------------------------------------------------------------------
# Parameters, and the table of tensor names


@dataclass(frozen=True)
class Embeddings:
    word: np.ndarray                # [V, H]
    token_type: np.ndarray | None   # [TV, H]; None when type_vocab_size is 0
    norm: LayerNorm


@dataclass(frozen=True)
class EncoderLayer:
    qkv: Linear         # qkv_proj, H -> 3H: query | key | value, each NH heads of HD
    attn_out: Linear    # o_proj, H -> H
    attn_norm: LayerNorm
    mlp_in: Linear      # up_gate_proj, H -> I2: up | gate; no bias
    mlp_out: Linear     # down_proj, I -> H
    mlp_norm: LayerNorm


@dataclass(frozen=True)
class GteParams:
    embeddings: Embeddings
    layers: tuple[EncoderLayer, ...]
    pooler: Linear | None      # H -> H, then tanh; None when loaded as a bare encoder
    classifier: Linear | None  # H -> L; None when loaded as a bare encoder


def layer_skeleton(c: GteConfig, i: int) -> EncoderLayer:
    H, I = c.hidden_size, c.intermediate_size
    p = f"encoder.layer.{i}."
    if c.pack_qkv:
        qkv = linear_spec(p + "attention.qkv_proj", 3 * H, H)
    else:
        qkv = stacked(*(linear_spec(p + f"attention.{name}_proj", H, H) for name in "qkv"))
    return EncoderLayer(
        qkv=qkv,
        attn_out=linear_spec(p + "attention.o_proj", H, H),
        attn_norm=norm_spec(p + "attn_ln", H),
        mlp_in=linear_spec(p + "mlp.up_gate_proj", 2 * I, H, bias=False),
        mlp_out=linear_spec(p + "mlp.down_proj", H, I),
        mlp_norm=norm_spec(p + "mlp_ln", H),
    )


# The tensor names, without the "new." prefix that NewForSequenceClassification checkpoints give the encoder
# and its pooler (a bare NewModel has none); the classifier has no prefix. The rotary tables and position ids
# are non-persistent buffers: not in a checkpoint.
def skeleton(c: GteConfig, head: bool = True) -> GteParams:
    H, L = c.hidden_size, c.num_labels
    return GteParams(
        embeddings=Embeddings(
            word=Spec("embeddings.word_embeddings.weight", (c.vocab_size, H)),
            token_type=Spec("embeddings.token_type_embeddings.weight", (c.type_vocab_size, H))
            if c.type_vocab_size else None,
            norm=norm_spec("embeddings.LayerNorm", H)),
        layers=tuple(layer_skeleton(c, i) for i in range(c.num_hidden_layers)),
        pooler=linear_spec("pooler.dense", H, H) if head else None,
        classifier=linear_spec("classifier", L, H) if head else None,
    )


# ---------------------------------------------------------------------------------------------
# The forward pass


def embeddings(p: Embeddings, c: GteConfig, batch, ops):
    x = p.word[batch.input_ids]                      # [N] -> [N, H]
    if p.token_type is not None:
        x = x + p.token_type[batch.token_type_ids]   # [N, H]; all 0 from the XLM-R tokenizer: row 0 everywhere
    return ops.layer_norm(x, p.norm.weight, p.norm.bias, c.layer_norm_eps)


def rotary_tables(c: GteConfig, batch, ops):
    """cos, sin [N, HD / 2] of every token's position (0, 1, 2, ... within its pair)."""
    theta, divisor = c.rope
    return ops.rotary_tables(batch.positions, c.head_dim, theta, divisor)


def attention(p: EncoderLayer, c: GteConfig, x, offsets, rotary, ops, first_only=False):
    """[N, H] -> [N, H]; with first_only, at each pair's first token only, [B, H] (bert.run_layers)."""
    H, NH = c.hidden_size, c.num_attention_heads
    cos, sin = rotary                                         # [N, HD / 2] each
    if first_only:  # the first tokens' queries alone; keys and values of every token
        first = offsets[:-1]
        q = linear(rows(p.qkv, 0, H), x[first], ops)                                         # [B, H]
        k, v = np.split(linear(rows(p.qkv, H, 3 * H), x, ops), 2, axis=1)                 # 2 x [N, H]
        q = ops.apply_rotary(q, cos[first], sin[first], NH)                                   # [B, H]
    else:
        qkv = linear(p.qkv, x, ops)                         # [N, H] -> [N, 3H]: query | key | value
        q, k, v = np.split(qkv, 3, axis=1)                    # 3 x [N, H]
        q = ops.apply_rotary(q, cos, sin, NH)                 # [N, H], each head rotated by its token's position
    k = ops.apply_rotary(k, cos, sin, NH)                     # [N, H]
    # For each pair and head: softmax(q k^T / sqrt(HD)) v, over that pair's tokens only.
    context = ops.attention(q, k, v, offsets, NH, first_only=first_only)   # [N or B, H]
    return linear(p.attn_out, context, ops)                              # [N or B, H]


def gated_mlp(p: EncoderLayer, c: GteConfig, x, ops):
    """down_proj(GELU(gate) * up), where up_gate_proj makes up | gate: [., H] -> [., H]."""
    I = c.intermediate_size
    up, gate = rows(p.mlp_in, 0, I), rows(p.mlp_in, I, 2 * I)   # [I, H] each: the checkpoint's rows are up, then gate
    h = np.concatenate([linear(gate, x, ops), linear(up, x, ops)], axis=1)   # gate | up, the order ops.geglu reads: [., I2]
    h = ops.geglu(h)                                         # GELU(gate) * up: [., I2] -> [., I]
    return linear(p.mlp_out, h, ops)                       # [., I] -> [., H]


def encoder_layer(p: EncoderLayer, c: GteConfig, x, offsets, rotary, ops, first_only=False):
    """[N, H] -> [N, H]; with first_only, the output at each pair's first token only, [B, H]."""
    # Post-LN, as BERT: each sublayer's output is added to its input, then normalized.
    # The attention's output is a temporary, not held through the feed-forward's [N, I].
    residual = x[offsets[:-1]] if first_only else x                        # [N or B, H]
    x = ops.add_layer_norm(attention(p, c, x, offsets, rotary, ops, first_only), residual,
                           p.attn_norm.weight, p.attn_norm.bias, c.layer_norm_eps)   # [N or B, H]
    h = gated_mlp(p, c, x, ops)                                             # [N or B, H]
    return ops.add_layer_norm(h, x, p.mlp_norm.weight, p.mlp_norm.bias, c.layer_norm_eps)


def encoder(params: GteParams, c: GteConfig, batch, ops, stages=None, first_only=False):
    """Token ids -> the last layer's hidden states, [N, H]; with first_only, at each pair's first
    token only, [B, H] (the last layer computes those rows alone, bert.run_layers). Fills `stages` if given."""
    x = embeddings(params.embeddings, c, batch, ops)          # [N, H]
    rotary = rotary_tables(c, batch, ops)                     # 2 x [N, HD / 2], shared by every layer

    def layer(p, c, x, offsets, ops, first_only=False):
        return encoder_layer(p, c, x, offsets, rotary, ops, first_only)

    return bert.run_layers(params.layers, c, x, batch, ops, stages, first_only, layer)


def forward(params: GteParams, c: GteConfig, batch, ops, return_stages=False):
    """Logits [B, L] for a packed batch; with return_stages, also every intermediate stage."""
    stages = {} if return_stages else None
    first = encoder(params, c, batch, ops, stages, first_only=True)   # [B, H]: the pooler reads <s> only
    pooled = bert.pooler(params.pooler, first, ops)                   # tanh(dense(<s>)): [B, H]
    logits = bert.classifier(params.classifier, pooled, ops)          # [B, L], raw logits
    return with_stages(logits, stages, HEAD_STAGE, pooled)


FAMILY = Family(
    name="GTE (new)", model_types=("new",), config=GteConfig, skeleton=skeleton, encoder=encoder, forward=forward,
    prefix="new.", top_level=("classifier.",), head=("pooler.", "classifier."), classifier="classifier.",
    tokenizer_class="XLMRobertaTokenizer", head_stage=HEAD_STAGE, head_module="classifier",
)
