"""ModernBERT: ModernBertForSequenceClassification's forward pass (transformers, eval mode), top to bottom.

The dimension letters are BERT's (minibert/models/bert.py), plus I2 = 2 * intermediate_size, the
width of the gated feed-forward's first product (input | gate). A batch is packed as for BERT.

How ModernBERT differs from BERT, and where:
- embeddings: the token embedding and a LayerNorm; no position and no token type embeddings.
  Positions enter attention instead, as rotary embeddings of the queries and keys (RoPE), with
  one theta for the global layers and another for the sliding-window layers.
- encoder layer: pre-LN (each sublayer reads a normalized copy of the residual stream and adds
  its output to it), with no attention norm in layer 0; one fused Wqkv projection; a GeGLU
  feed-forward (Wi -> input | gate, GELU(input) * gate, Wo). Linears and norms have biases only
  where the config says so (attention_bias, mlp_bias, norm_bias, classifier_bias).
- attention: global in the layers `layer_types` calls full_attention, and in the
  sliding_attention layers a band: token i attends the keys j with |i - j| <= local_attention // 2.
- a final LayerNorm after the last layer.
- head: the first token (classifier_pooling "cls") or the mean over the pair's tokens ("mean"),
  then dense -> classifier_activation -> LayerNorm, then the classifier (always with a bias).
  Raw logits: no softmax.

Stages (return_stages), as transformers' output_hidden_states gives them: `embeddings`
(hidden_states[0], after the embedding norm), `layer_0` ... `layer_{L-1}` (hidden_states[i + 1]);
the last one is after the final norm, as transformers' hidden_states[-1] (= last_hidden_state) is.
Then `pooled` (the head's output, before the classifier) and `logits`.
"""

from dataclasses import dataclass, field

import numpy as np

from minibert.errors import ConfigError, show
from minibert.formats.config import (
    HFConfig,
    check_choice,
    check_divisible,
    check_eps,
    check_layer_types,
    check_sizes,
    check_token_id,
    is_positive_finite,
)
from minibert.models.family import ALL, FIRST, Family, with_stages
from minibert.models.params import (
    LayerNorm,
    Linear,
    Spec,
    linear,
    linear_spec,
    norm_spec,
    rows,
)

# transformers' ACT2FN["gelu"] is the exact erf GELU; the tanh approximations are other names.
SUPPORTED_ACTIVATIONS = ("gelu",)
LAYER_TYPES = ("full_attention", "sliding_attention")
HEAD_STAGE = "pooled"  # ModernBertPredictionHead: norm(act(dense(cls or mean pooling)))
# The legacy config keys the Hub's checkpoints carry, and their defaults (ModernBertConfig's BC code).
DEFAULT_GLOBAL_ATTN_EVERY_N_LAYERS = 3
LEGACY_ROPE_THETA = {"full_attention": ("global_rope_theta", 160_000.0),
                     "sliding_attention": ("local_rope_theta", 10_000.0)}


@dataclass(frozen=True)
class ModernBertConfig(HFConfig):
    """ModernBertConfig's fields (transformers), with its defaults; layer_types and rope_parameters also
    from the legacy keys (read_fields)."""
    vocab_size: int = 50368
    hidden_size: int = 768
    intermediate_size: int = 1152
    num_hidden_layers: int = 22
    num_attention_heads: int = 12
    hidden_activation: str = "gelu"
    max_position_embeddings: int = 8192
    norm_eps: float = 1e-5
    norm_bias: bool = False
    pad_token_id: int | None = 50283
    attention_bias: bool = False
    local_attention: int = 128
    mlp_bias: bool = False
    classifier_pooling: str = "cls"
    classifier_bias: bool = False
    classifier_activation: str = "gelu"
    layer_types: tuple[str, ...] = ()     # per layer: "full_attention" or "sliding_attention"
    rope_parameters: dict = field(default_factory=dict)  # layer type -> {"rope_type": "default", "rope_theta": float}
    model_type: str = "modernbert"

    type_vocab_size = 0  # no token type embeddings

    @classmethod
    def read_fields(cls, raw: dict, source: str) -> dict:
        values = {}
        if "sliding_window" in raw:  # transformers' setter: sliding_window is half of local_attention
            window = raw["sliding_window"]
            if not isinstance(window, int) or isinstance(window, bool):
                raise ConfigError(f"{source}: field 'sliding_window' must be an integer, found {show(window)}")
            values["local_attention"] = 2 * window
        H, NH = cls.value(raw, "hidden_size"), cls.value(raw, "num_attention_heads")
        head_dim = raw.get("head_dim")
        if head_dim is not None and (not isinstance(H, int) or not isinstance(NH, int) or head_dim != H // max(1, NH)):
            raise ConfigError(f"{source}: head_dim {show(head_dim)} is not hidden_size / num_attention_heads; "
                              "ModernBERT's attention uses hidden_size / num_attention_heads")
        values["layer_types"] = _layer_types(raw, source, cls.value(raw, "num_hidden_layers"))
        values["rope_parameters"] = _rope_parameters(raw, source)
        return values

    @property
    def sliding_window(self) -> int:
        """How far a sliding-window layer sees on each side: |i - j| <= local_attention // 2."""
        return self.local_attention // 2

    def rope_theta(self, layer_type: str) -> float:
        return self.rope_parameters[layer_type]["rope_theta"]

    def check(self):
        check_sizes(self, "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                    "num_attention_heads", "max_position_embeddings", "local_attention")
        check_divisible(self, "hidden_size", "num_attention_heads")
        if self.head_dim % 2:
            raise ConfigError(f"{self.source}: rotary embeddings need an even head size, found hidden_size / "
                              f"num_attention_heads = {self.head_dim}")
        check_choice(self, "hidden_activation", SUPPORTED_ACTIVATIONS, " (exact erf GELU, as transformers' 'gelu')")
        check_choice(self, "classifier_activation", SUPPORTED_ACTIVATIONS, " (exact erf GELU, as transformers' 'gelu')")
        check_choice(self, "classifier_pooling", ("cls", "mean"))
        for name in ("norm_bias", "attention_bias", "mlp_bias", "classifier_bias"):
            check_choice(self, name, (True, False))
        check_eps(self, "norm_eps")
        check_token_id(self, "pad_token_id")
        check_layer_types(self, LAYER_TYPES)
        for layer_type in sorted(set(self.layer_types)):
            rope = self.rope_parameters[layer_type]
            if rope["rope_type"] != "default":
                raise ConfigError(f"{self.source}: unsupported rope_parameters[{layer_type!r}] rope_type "
                                  f"{show(rope['rope_type'])}; minibert implements 'default'")
            if not is_positive_finite(rope["rope_theta"]):
                raise ConfigError(f"{self.source}: rope_parameters[{layer_type!r}] rope_theta must be a positive "
                                  f"finite number, found {show(rope['rope_theta'])}")


def head_reads(c: ModernBertConfig) -> str:
    """cls pooling reads each pair's first token; mean pooling reads every token."""
    return FIRST if c.classifier_pooling == "cls" else ALL


def _layer_types(raw: dict, source: str, num_layers) -> tuple[str, ...]:
    """transformers 5's `layer_types`, or the legacy rule: every n-th layer from layer 0 global, the rest sliding."""
    listed = raw.get("layer_types")
    if listed is not None:
        if not isinstance(listed, list):
            raise ConfigError(f"{source}: field 'layer_types' must be a list, found {show(listed)}")
        return tuple(listed)
    every = raw.get("global_attn_every_n_layers", DEFAULT_GLOBAL_ATTN_EVERY_N_LAYERS)
    if not isinstance(every, int) or isinstance(every, bool) or every < 1:
        raise ConfigError(f"{source}: field 'global_attn_every_n_layers' must be a positive integer, found {show(every)}")
    if not isinstance(num_layers, int) or isinstance(num_layers, bool):
        return ()  # num_hidden_layers itself is reported by the config's checks
    return tuple("sliding_attention" if i % every else "full_attention" for i in range(num_layers))


def _rope_parameters(raw: dict, source: str) -> dict:
    """RoPE per layer type, as ModernBertConfig reads it: transformers 5's `rope_parameters`
    ({"full_attention": {...}, "sliding_attention": {...}}), a legacy `rope_scaling` merged into both,
    and the legacy `global_rope_theta` / `local_rope_theta` (or their defaults) where no theta is given."""
    given = raw.get("rope_parameters") or {}
    if not isinstance(given, dict) or not set(given) <= set(LAYER_TYPES):
        raise ConfigError(f"{source}: field 'rope_parameters' must map {' and '.join(map(repr, LAYER_TYPES))} to "
                          f"their parameters, found {show(given)}")
    scaling = raw.get("rope_scaling")
    if scaling is not None and not isinstance(scaling, dict):
        raise ConfigError(f"{source}: field 'rope_scaling' must be an object or null, found {show(scaling)}")
    out = {}
    for layer_type in LAYER_TYPES:
        params = given.get(layer_type, {})
        if not isinstance(params, dict):
            raise ConfigError(f"{source}: rope_parameters[{layer_type!r}] must be an object, found {show(params)}")
        params = {**params, **(scaling or {})}
        legacy_key, default = LEGACY_ROPE_THETA[layer_type]
        params.setdefault("rope_theta", raw.get(legacy_key, default))
        params.setdefault("rope_type", params.get("type", "default"))
        out[layer_type] = params
    return out


# ---------------------------------------------------------------------------------------------
# Parameters, and the table of HuggingFace tensor names


@dataclass(frozen=True)
class Embeddings:
    tok: np.ndarray     # [V, H]
    norm: LayerNorm


@dataclass(frozen=True)
class EncoderLayer:
    attn_norm: LayerNorm | None  # None in layer 0 (nn.Identity: the embeddings were just normalized)
    qkv: Linear         # Wqkv, H -> 3H: query | key | value, each NH heads of HD
    attn_out: Linear    # Wo, H -> H
    mlp_norm: LayerNorm
    mlp_in: Linear      # Wi, H -> I2: input | gate
    mlp_out: Linear     # Wo, I -> H


@dataclass(frozen=True)
class Head:
    dense: Linear       # H -> H
    norm: LayerNorm


@dataclass(frozen=True)
class ModernBertParams:
    embeddings: Embeddings
    layers: tuple[EncoderLayer, ...]
    final_norm: LayerNorm
    head: Head | None          # None when loaded as a bare encoder
    classifier: Linear | None  # H -> L; None when loaded as a bare encoder


def layer_skeleton(c: ModernBertConfig, i: int) -> EncoderLayer:
    H, I = c.hidden_size, c.intermediate_size
    p = f"layers.{i}."
    return EncoderLayer(
        attn_norm=norm_spec(p + "attn_norm", H, c.norm_bias) if i else None,
        qkv=linear_spec(p + "attn.Wqkv", 3 * H, H, c.attention_bias),
        attn_out=linear_spec(p + "attn.Wo", H, H, c.attention_bias),
        mlp_norm=norm_spec(p + "mlp_norm", H, c.norm_bias),
        mlp_in=linear_spec(p + "mlp.Wi", 2 * I, H, c.mlp_bias),
        mlp_out=linear_spec(p + "mlp.Wo", H, I, c.mlp_bias),
    )


# The tensor names, without the "model." prefix that ModernBertForSequenceClassification checkpoints give
# the encoder; the head and the classifier have no prefix.
def skeleton(c: ModernBertConfig, head: bool = True) -> ModernBertParams:
    H, L = c.hidden_size, c.num_labels
    return ModernBertParams(
        embeddings=Embeddings(tok=Spec("embeddings.tok_embeddings.weight", (c.vocab_size, H)),
                              norm=norm_spec("embeddings.norm", H, c.norm_bias)),
        layers=tuple(layer_skeleton(c, i) for i in range(c.num_hidden_layers)),
        final_norm=norm_spec("final_norm", H, c.norm_bias),
        head=Head(dense=linear_spec("head.dense", H, H, c.classifier_bias),
                  norm=norm_spec("head.norm", H, c.norm_bias)) if head else None,
        classifier=linear_spec("classifier", L, H) if head else None,
    )


# ---------------------------------------------------------------------------------------------
# The forward pass


def layer_norm(p: LayerNorm, x, c: ModernBertConfig, ops):
    bias = p.bias if p.bias is not None else np.zeros_like(p.weight)  # a bias-free norm: + 0 changes nothing
    return ops.layer_norm(x, p.weight, bias, c.norm_eps)


def embeddings(p: Embeddings, c: ModernBertConfig, batch, ops):
    x = p.tok[batch.input_ids]        # [N] -> [N, H]; no positions (rotary, in attention) and no token types
    return layer_norm(p.norm, x, c, ops)


def rotary_tables(c: ModernBertConfig, batch, ops) -> dict:
    """cos, sin [N, HD / 2] of every token's position, for each layer type's theta."""
    return {t: ops.rotary_tables(batch.positions, c.head_dim, c.rope_theta(t)) for t in sorted(set(c.layer_types))}


def attention(p: EncoderLayer, c: ModernBertConfig, x, offsets, rotary, window, ops, first_only=False):
    """[N, H] -> [N, H]; with first_only, at each pair's first token only, [B, H] (see encoder)."""
    H, NH = c.hidden_size, c.num_attention_heads
    cos, sin = rotary                                        # [N, HD / 2] each
    if first_only:  # the first tokens' queries alone; keys and values of every token
        first = offsets[:-1]
        q = linear(rows(p.qkv, 0, H), x[first], ops)                                                       # [B, H]
        k, v = np.split(linear(rows(p.qkv, H, 3 * H), x, ops),
                        2, axis=1)                            # 2 x [N, H]
        q = ops.apply_rotary(q, cos[first], sin[first], NH)  # [B, H]
    else:
        qkv = linear(p.qkv, x, ops)                          # [N, H] -> [N, 3H]: query | key | value
        q, k, v = np.split(qkv, 3, axis=1)                   # 3 x [N, H]
        q = ops.apply_rotary(q, cos, sin, NH)                # [N, H], each head rotated by its token's position
    k = ops.apply_rotary(k, cos, sin, NH)                    # [N, H]
    # For each pair and head: softmax(q k^T / sqrt(HD)) v over that pair's tokens (window: |i - j| <= w only).
    context = ops.attention(q, k, v, offsets, NH, window=window, first_only=first_only)  # [N or B, H]
    return linear(p.attn_out, context, ops)                  # [N or B, H]


def mlp(p: EncoderLayer, x, ops):
    h = linear(p.mlp_in, x, ops)       # [N, H] -> [N, I2]: input | gate
    h = ops.geglu(h)                   # GELU(input) * gate: [N, I2] -> [N, I]
    return linear(p.mlp_out, h, ops)   # [N, I] -> [N, H]


def encoder_layer(p: EncoderLayer, c: ModernBertConfig, x, offsets, rotary, window, ops, first_only=False):
    # Pre-LN, where BERT is post-LN: each sublayer reads a normalized copy and adds to the residual stream.
    h = x if p.attn_norm is None else layer_norm(p.attn_norm, x, c, ops)   # [N, H]
    attended = attention(p, c, h, offsets, rotary, window, ops, first_only)  # [N or B, H]
    x = (x[offsets[:-1]] if first_only else x) + attended                  # [N or B, H]
    return x + mlp(p, layer_norm(p.mlp_norm, x, c, ops), ops)              # [N or B, H]


def encoder(params: ModernBertParams, c: ModernBertConfig, batch, ops, stages=None, first_only=False):
    """Token ids -> the last hidden states after the final norm, [N, H]; with first_only, at each pair's
    first token only, [B, H]: the last layer then computes those rows alone, as bert.run_layers does
    (cls pooling reads nothing else). Fills `stages` if given (every row of every layer)."""
    x = embeddings(params.embeddings, c, batch, ops)      # [N, H]
    if stages is not None:
        stages["embeddings"] = x
    rotary = rotary_tables(c, batch, ops)
    last = c.num_hidden_layers - 1
    last_first_only = first_only and stages is None
    for i, (layer, layer_type) in enumerate(zip(params.layers, c.layer_types)):
        window = c.sliding_window if layer_type == "sliding_attention" else None
        x = encoder_layer(layer, c, x, batch.offsets, rotary[layer_type], window, ops,
                          first_only=last_first_only and i == last)      # [N, H] (last: [B, H])
        if i == last:
            x = layer_norm(params.final_norm, x, c, ops)  # transformers' last hidden_states has it too
        if stages is not None:
            stages[f"layer_{i}"] = x
    return x[batch.first_tokens] if first_only and not last_first_only else x


def pool(c: ModernBertConfig, x, batch):
    """[N, H] -> [B, H]: each pair's first token, or the mean of its tokens (summed in float64)."""
    if c.classifier_pooling == "cls":
        return x[batch.first_tokens]
    if not len(batch.lengths):
        return np.zeros((0, x.shape[1]), np.float32)
    sums = np.add.reduceat(x.astype(np.float64), batch.offsets[:-1], axis=0)   # [B, H]
    return (sums / batch.lengths[:, None]).astype(np.float32)


def head(p: Head, c: ModernBertConfig, pooled, ops):
    h = ops.gelu(linear(p.dense, pooled, ops))   # dense + classifier_activation: [B, H]
    return layer_norm(p.norm, h, c, ops)         # [B, H]


def forward(params: ModernBertParams, c: ModernBertConfig, batch, ops, return_stages=False):
    """Logits [B, L] for a packed batch; with return_stages, also every intermediate stage."""
    stages = {} if return_stages else None
    if head_reads(c) == FIRST:          # the head reads each pair's first token alone
        pooled_in = encoder(params, c, batch, ops, stages, first_only=True)   # [B, H]
    else:
        pooled_in = pool(c, encoder(params, c, batch, ops, stages), batch)    # [N, H] -> [B, H]
    pooled = head(params.head, c, pooled_in, ops)                       # [B, H]
    logits = linear(params.classifier, pooled, ops)                              # [B, L], raw logits
    return with_stages(logits, stages, HEAD_STAGE, pooled)


FAMILY = Family(
    name="ModernBERT", model_types=("modernbert",), config=ModernBertConfig, skeleton=skeleton, encoder=encoder,
    forward=forward, head_stage=HEAD_STAGE, head_module="classifier", head_reads=head_reads,
    # "decoder." is ModernBertForMaskedLM's output layer: skipped when the encoder is loaded alone.
    prefix="model.", top_level=("head.", "classifier."), head=("head.", "classifier.", "decoder."),
    classifier="classifier.", tokenizer_class="PreTrainedTokenizerFast",
)
