"""DistilBERT: DistilBertForSequenceClassification's forward pass (transformers, eval mode), top to bottom.

DistilBERT is BERT (minibert/models/bert.py, whose dimension letters this file uses) with its own
config field names and tensor names, and these differences:
- No token types: the embeddings are word + position, then LayerNorm. (Its tokenizer may still
  make token type ids; the model never reads them.)
- Every LayerNorm has eps 1e-12, fixed in transformers' code; the config has no field for it.
- The feed-forward activation is the config's `activation`: "gelu" (exact erf) or "relu".
- No pooler. The head is pre_classifier + ReLU on the first token, then classifier.
The encoder layer is BERT's post-LN layer: LayerNorm(x + attention), then LayerNorm(x + FFN(x)).

`sinusoidal_pos_embds: true` changes only how transformers initializes the position table: the
table is an ordinary parameter, saved in the checkpoint, and from_pretrained uses the stored one.
So minibert reads it like a learned table, and a checkpoint without it is refused (missing tensor).
"""

from dataclasses import dataclass

import numpy as np

from minibert.errors import ConfigError, show
from minibert.formats.config import (
    HFConfig,
    check_choice,
    check_divisible,
    check_sizes,
    check_token_id,
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
    stacked,
)

LAYER_NORM_EPS = 1e-12  # nn.LayerNorm(dim, eps=1e-12) in every DistilBERT LayerNorm
SUPPORTED_ACTIVATIONS = ("gelu", "relu")
HEAD_STAGE = "pooled"   # ReLU(pre_classifier([CLS]))
# DistilBertConfig.attribute_map: a config.json may use the common names; where it does, they win
# (as in transformers, which sets the common name last).
ATTRIBUTE_MAP = {"hidden_size": "dim", "num_attention_heads": "n_heads", "num_hidden_layers": "n_layers"}


@dataclass(frozen=True)
class DistilBertConfig(HFConfig):
    """DistilBertConfig's fields (transformers), with its defaults."""
    vocab_size: int = 30522
    max_position_embeddings: int = 512
    sinusoidal_pos_embds: bool = False
    n_layers: int = 6
    n_heads: int = 12
    dim: int = 768
    hidden_dim: int = 4 * 768
    activation: str = "gelu"
    pad_token_id: int | None = 0
    model_type: str = "distilbert"

    @classmethod
    def read_fields(cls, raw: dict, source: str) -> dict:
        return {own: raw[common] for common, own in ATTRIBUTE_MAP.items() if common in raw}

    # The common names the rest of minibert asks for (transformers' attribute_map).
    @property
    def hidden_size(self) -> int:
        return self.dim

    @property
    def num_hidden_layers(self) -> int:
        return self.n_layers

    @property
    def num_attention_heads(self) -> int:
        return self.n_heads

    @property
    def type_vocab_size(self) -> int:
        return 0  # no token type embeddings

    @property
    def layer_norm_eps(self) -> float:
        return LAYER_NORM_EPS

    def check(self):
        check_sizes(self, "vocab_size", "dim", "n_layers", "n_heads", "hidden_dim", "max_position_embeddings")
        check_divisible(self, "dim", "n_heads")
        check_choice(self, "activation", SUPPORTED_ACTIVATIONS, " ('gelu' is the exact erf GELU)")
        check_token_id(self, "pad_token_id")
        if not isinstance(self.sinusoidal_pos_embds, bool):
            raise ConfigError(f"{self.source}: field 'sinusoidal_pos_embds' must be true or false, "
                              f"found {show(self.sinusoidal_pos_embds)}")


# ---------------------------------------------------------------------------------------------
# Parameters, and the table of HuggingFace tensor names


@dataclass(frozen=True)
class Embeddings:
    word: np.ndarray      # [V, H]
    position: np.ndarray  # [P, H]
    norm: LayerNorm


@dataclass(frozen=True)
class DistilBertParams:
    embeddings: Embeddings
    layers: tuple[bert.EncoderLayer, ...]  # BERT's layer parameters, under DistilBERT's names
    pre_classifier: Linear | None          # H -> H, then ReLU; None when loaded as a bare encoder
    classifier: Linear | None              # H -> L; None when loaded as a bare encoder


def layer_skeleton(c: DistilBertConfig, i: int) -> bert.EncoderLayer:
    H, I = c.dim, c.hidden_dim
    p = f"transformer.layer.{i}."
    return bert.EncoderLayer(
        qkv=stacked(linear_spec(p + "attention.q_lin", H, H),
                    linear_spec(p + "attention.k_lin", H, H),
                    linear_spec(p + "attention.v_lin", H, H)),
        attn_out=linear_spec(p + "attention.out_lin", H, H),
        attn_norm=norm_spec(p + "sa_layer_norm", H),
        ffn_in=linear_spec(p + "ffn.lin1", I, H),
        ffn_out=linear_spec(p + "ffn.lin2", H, I),
        ffn_norm=norm_spec(p + "output_layer_norm", H),
    )


# The tensor names, without the "distilbert." prefix DistilBertForSequenceClassification gives the
# encoder; pre_classifier and classifier have no prefix.
def skeleton(c: DistilBertConfig, head: bool = True) -> DistilBertParams:
    H, L = c.dim, c.num_labels
    return DistilBertParams(
        embeddings=Embeddings(
            word=Spec("embeddings.word_embeddings.weight", (c.vocab_size, H)),
            position=Spec("embeddings.position_embeddings.weight", (c.max_position_embeddings, H)),
            norm=norm_spec("embeddings.LayerNorm", H),
        ),
        layers=tuple(layer_skeleton(c, i) for i in range(c.n_layers)),
        pre_classifier=linear_spec("pre_classifier", H, H) if head else None,
        classifier=linear_spec("classifier", L, H) if head else None,
    )


# ---------------------------------------------------------------------------------------------
# The forward pass


def embeddings(p: Embeddings, c: DistilBertConfig, batch, ops):
    x = p.word[batch.input_ids]            # [N] -> [N, H]
    x = x + p.position[batch.positions]    # [N, H]; no token types, unlike BERT
    return ops.layer_norm(x, p.norm.weight, p.norm.bias, LAYER_NORM_EPS)


def feed_forward_in(p: Linear, c: DistilBertConfig, x, ops):
    if c.activation == "relu":
        return ops.relu(linear(p, x, ops))              # [N, H] -> [N, I]
    return linear(p, x, ops, gelu=True)                 # [N, H] -> [N, I]


def encoder_layer(p: bert.EncoderLayer, c: DistilBertConfig, x, offsets, ops, first_only=False):
    # BERT's post-LN layer (bert.encoder_layer), with the config's activation and eps 1e-12.
    residual = x[offsets[:-1]] if first_only else x                        # [N or B, H]
    x = ops.add_layer_norm(bert.self_attention(p, c, x, offsets, ops, first_only), residual,
                           p.attn_norm.weight, p.attn_norm.bias, LAYER_NORM_EPS)   # [N or B, H]
    h = feed_forward_in(p.ffn_in, c, x, ops)                                # [N, H] -> [N, I]
    h = linear(p.ffn_out, h, ops)                                         # [N, I] -> [N, H]
    return ops.add_layer_norm(h, x, p.ffn_norm.weight, p.ffn_norm.bias, LAYER_NORM_EPS)


def encoder(params: DistilBertParams, c: DistilBertConfig, batch, ops, stages=None, first_only=False):
    """Token ids -> the last layer's hidden states, [N, H]; with first_only, at each pair's first
    token only, [B, H] (bert.run_layers). Fills `stages` if given."""
    x = embeddings(params.embeddings, c, batch, ops)          # [N, H]
    return bert.run_layers(params.layers, c, x, batch, ops, stages, first_only, encoder_layer)


def forward(params: DistilBertParams, c: DistilBertConfig, batch, ops, return_stages=False):
    """Logits [B, L] for a packed batch; with return_stages, also every intermediate stage."""
    stages = {} if return_stages else None
    first = encoder(params, c, batch, ops, stages, first_only=True)             # [B, H]: the head reads [CLS] only
    # Where BERT has its pooler (dense + tanh), DistilBERT has pre_classifier + ReLU.
    pooled = ops.relu(linear(params.pre_classifier, first, ops))                                  # [B, H]
    logits = linear(params.classifier, pooled, ops)                              # [B, L], raw logits
    return with_stages(logits, stages, HEAD_STAGE, pooled)


FAMILY = Family(
    name="DistilBERT", model_types=("distilbert",), config=DistilBertConfig, skeleton=skeleton, encoder=encoder,
    forward=forward, prefix="distilbert.", top_level=("pre_classifier.", "classifier."),
    head=("pre_classifier.", "classifier."), classifier="classifier.",
    tokenizer_class="BertTokenizer",  # transformers 5's AutoTokenizer for model_type distilbert
    head_stage=HEAD_STAGE, head_module="classifier",
)
