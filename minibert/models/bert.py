"""BERT: BertForSequenceClassification's forward pass (transformers, eval mode), top to bottom.

Dimension letters, used in the shape comments of every family file:
    B   pairs in the batch             N   tokens of all pairs together (no padding)
    T   tokens of one pair             H   hidden_size
    NH  num_attention_heads            HD  head size, H // NH
    I   intermediate_size              L   num_labels

A batch is packed (minibert.models.batch.Batch): the tokens of its pairs stand back to back in one [N]
array, and pair b owns rows offsets[b]:offsets[b + 1]. Every dense layer (the projections, the
feed-forward network) runs on [N, H] at once, with no padding tokens; only attention looks at
one pair at a time. This is the same math as transformers' padded batch, where a padded key
gets an attention weight of exactly zero, with none of the work on padding.

Every function is pure: (parameters, config, arrays, op set) -> arrays. The op set is
an OpSet (minibert/ops/): the NumPy reference or the Numba kernels, with the same names; matrix
products are NumPy's. Inference only, so there is no dropout (in eval mode it is the identity).
Every stage stays float32.

RoBERTa, ELECTRA and DistilBERT run this same encoder layer; their files say how they differ.
"""

from dataclasses import dataclass

import numpy as np

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
    rows,
    stacked,
)

# transformers' ACT2FN["gelu"] is the exact erf GELU; the tanh approximations are other names.
SUPPORTED_HIDDEN_ACTS = ("gelu",)
HEAD_STAGE = "pooled"  # BertPooler's output: tanh(dense([CLS]))


@dataclass(frozen=True)
class BertConfig(HFConfig):
    """BertConfig's fields (transformers), with its defaults."""
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int | None = 0
    position_embedding_type: str = "absolute"
    model_type: str = "bert"

    def check(self):
        check_sizes(self, "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                    "intermediate_size", "max_position_embeddings", "type_vocab_size")
        check_divisible(self, "hidden_size", "num_attention_heads")
        check_choice(self, "hidden_act", SUPPORTED_HIDDEN_ACTS, " (exact erf GELU, as transformers' 'gelu')")
        check_eps(self, "layer_norm_eps")
        check_choice(self, "position_embedding_type", ("absolute",))
        check_token_id(self, "pad_token_id")


# ---------------------------------------------------------------------------------------------
# Parameters, and the table of HuggingFace tensor names


@dataclass(frozen=True)
class Embeddings:
    word: np.ndarray        # [V, H]
    position: np.ndarray    # [P, H]
    token_type: np.ndarray  # [TV, H]
    norm: LayerNorm


@dataclass(frozen=True)
class EncoderLayer:
    qkv: Linear        # H -> 3H: the query, key and value projections stacked, in that order
    attn_out: Linear   # H -> H
    attn_norm: LayerNorm
    ffn_in: Linear     # H -> I
    ffn_out: Linear    # I -> H
    ffn_norm: LayerNorm


@dataclass(frozen=True)
class BertParams:
    embeddings: Embeddings
    layers: tuple[EncoderLayer, ...]
    pooler: Linear | None      # H -> H, then tanh; None when loaded as a bare encoder
    classifier: Linear | None  # H -> L; None when loaded as a bare encoder


def embeddings_skeleton(c, prefix: str = "embeddings.") -> Embeddings:
    H = c.hidden_size
    return Embeddings(
        word=Spec(f"{prefix}word_embeddings.weight", (c.vocab_size, H)),
        position=Spec(f"{prefix}position_embeddings.weight", (c.max_position_embeddings, H)),
        token_type=Spec(f"{prefix}token_type_embeddings.weight", (c.type_vocab_size, H)),
        norm=norm_spec(f"{prefix}LayerNorm", H),
    )


def layer_skeleton(c, i: int) -> EncoderLayer:
    """The tensor names of BERT's encoder layer i (also RoBERTa's and ELECTRA's)."""
    H, I = c.hidden_size, c.intermediate_size
    p = f"encoder.layer.{i}."
    return EncoderLayer(
        qkv=stacked(linear_spec(p + "attention.self.query", H, H),
                    linear_spec(p + "attention.self.key", H, H),
                    linear_spec(p + "attention.self.value", H, H)),
        attn_out=linear_spec(p + "attention.output.dense", H, H),
        attn_norm=norm_spec(p + "attention.output.LayerNorm", H),
        ffn_in=linear_spec(p + "intermediate.dense", I, H),
        ffn_out=linear_spec(p + "output.dense", H, I),
        ffn_norm=norm_spec(p + "output.LayerNorm", H),
    )


# The tensor names, without the "bert." prefix that BertForSequenceClassification checkpoints give the
# encoder and its pooler; the classifier has no prefix.
def skeleton(c: BertConfig, head: bool = True) -> BertParams:
    H, L = c.hidden_size, c.num_labels
    return BertParams(
        embeddings=embeddings_skeleton(c),
        layers=tuple(layer_skeleton(c, i) for i in range(c.num_hidden_layers)),
        pooler=linear_spec("pooler.dense", H, H) if head else None,
        classifier=linear_spec("classifier", L, H) if head else None,
    )


# ---------------------------------------------------------------------------------------------
# The forward pass


def embeddings(p: Embeddings, c: BertConfig, batch, ops):
    x = p.word[batch.input_ids]                  # [N] -> [N, H]
    x = x + p.token_type[batch.token_type_ids]   # [N, H]
    x = x + p.position[batch.positions]          # [N, H]
    return ops.layer_norm(x, p.norm.weight, p.norm.bias, c.layer_norm_eps)


def self_attention(p: EncoderLayer, c, x, offsets, ops, first_only=False):
    """Multi-head self-attention of every pair's tokens, [N, H] -> [N, H]; with first_only, the
    output at each pair's first token only, [B, H]: its query alone, against every key and value."""
    H = c.hidden_size
    if first_only:
        q = linear(rows(p.qkv, 0, H), x[offsets[:-1]], ops)                 # [B, H]
        k, v = np.split(linear(rows(p.qkv, H, 3 * H), x, ops), 2, axis=1)          # 2 x [N, H]
    else:
        qkv = linear(p.qkv, x, ops)                  # [N, H] -> [N, 3H]: query | key | value
        q, k, v = np.split(qkv, 3, axis=1)             # 3 x [N, H]
    # For each pair and head: softmax(q k^T / sqrt(HD)) v, over that pair's tokens only.
    context = ops.attention(q, k, v, offsets, c.num_attention_heads, first_only=first_only)  # [N or B, H]
    return linear(p.attn_out, context, ops)                                               # [N or B, H]


def encoder_layer(p: EncoderLayer, c, x, offsets, ops, first_only=False):
    """[N, H] -> [N, H]; with first_only, the output at each pair's first token only, [B, H]."""
    # Post-LN: each sublayer's output is added to its input, then normalized.
    # The attention's output is a temporary, not held through the feed-forward's [N, I].
    residual = x[offsets[:-1]] if first_only else x                        # [N or B, H]
    x = ops.add_layer_norm(self_attention(p, c, x, offsets, ops, first_only), residual,
                           p.attn_norm.weight, p.attn_norm.bias, c.layer_norm_eps)   # [N or B, H]
    h = linear(p.ffn_in, x, ops, gelu=True)                               # [., H] -> [., I]
    h = linear(p.ffn_out, h, ops)                                         # [., I] -> [., H]
    return ops.add_layer_norm(h, x, p.ffn_norm.weight, p.ffn_norm.bias, c.layer_norm_eps)


def encoder(params: BertParams, c: BertConfig, batch, ops, stages=None, first_only=False):
    """Token ids -> the last layer's hidden states, [N, H]; with first_only, at each pair's first
    token only, [B, H]. Fills `stages` if given."""
    x = embeddings(params.embeddings, c, batch, ops)          # [N, H]
    return run_layers(params.layers, c, x, batch, ops, stages, first_only, encoder_layer)


def run_layers(encoder_layers, c, x, batch, ops, stages=None, first_only=False, layer=encoder_layer):
    """The embeddings through every encoder layer: [N, H] -> [N, H], or [B, H] with first_only;
    stages "embeddings", "layer_i".

    A head that reads only the first token of each pair needs the last layer at those rows alone:
    there only their queries, attention outputs, LayerNorms and feed-forward networks are computed,
    against keys and values of every token. That is exact, and saves about a sixth of a 6-layer
    model's work. With stages, every row of every layer is computed and kept.
    """
    if stages is not None:
        stages["embeddings"] = x
    last_first_only = first_only and stages is None
    for i, encoder_layer_i in enumerate(encoder_layers):
        x = layer(encoder_layer_i, c, x, batch.offsets, ops,
                  first_only=last_first_only and i == len(encoder_layers) - 1)   # [N, H] (last: [B, H])
        if stages is not None:
            stages[f"layer_{i}"] = x
    return x[batch.first_tokens] if first_only and not last_first_only else x


def pooler(p: Linear, first, ops):
    return np.tanh(linear(p, first, ops))              # dense + tanh on [CLS]: [B, H]


def classifier(p: Linear, pooled, ops):
    return linear(p, pooled, ops)                      # [B, H] -> [B, L], raw logits


def forward(params: BertParams, c: BertConfig, batch, ops, return_stages=False):
    """Logits [B, L] for a packed batch; with return_stages, also every intermediate stage."""
    stages = {} if return_stages else None
    first = encoder(params, c, batch, ops, stages, first_only=True)   # [B, H]: the head reads [CLS] only
    pooled = pooler(params.pooler, first, ops)                        # [B, H]
    logits = classifier(params.classifier, pooled, ops)               # [B, L]
    return with_stages(logits, stages, HEAD_STAGE, pooled)


FAMILY = Family(
    name="BERT", model_types=("bert",), config=BertConfig, skeleton=skeleton, encoder=encoder, forward=forward,
    prefix="bert.", top_level=("classifier.",), head=("pooler.", "classifier."), classifier="classifier.",
    tokenizer_class="BertTokenizer", head_stage=HEAD_STAGE, head_module="classifier",
)
