"""ELECTRA: ElectraForSequenceClassification's forward pass (transformers, eval mode), top to bottom.

ELECTRA is BERT (minibert/models/bert.py, whose dimension letters this file uses) in two places
of its own, besides its tensor names ("electra." for the encoder):
    E   embedding_size: the word, position and token type tables and their LayerNorm are E wide.
        Where E != H, a linear `embeddings_project` maps E -> H before the first layer
        (electra-small: E = 128, H = 256); where E == H (electra-base, -large) there is none.
- No pooler. The head, ElectraClassificationHead, is dense + GELU on the first token, then
  out_proj. That GELU is transformers' fixed get_activation("gelu") (exact erf GELU), whatever
  hidden_act says (hidden_act is the feed-forward's only). The config's summary_* fields belong to
  ElectraForMultipleChoice's sequence summary; ElectraForSequenceClassification never reads them.
Token types and positions are BERT's; the encoder layers are BERT's, unchanged.
"""

from dataclasses import dataclass

from minibert.formats.config import check_sizes
from minibert.models import bert
from minibert.models.family import Family, with_stages
from minibert.models.params import Linear, Spec, linear, linear_spec, norm_spec

HEAD_STAGE = "pooled"  # ElectraClassificationHead's GELU(dense([CLS])), before out_proj


@dataclass(frozen=True)
class ElectraConfig(bert.BertConfig):
    """BertConfig's fields and embedding_size, with ElectraConfig's defaults: not BERT's (electra-small's
    sizes), so a config.json that relies on them gets ELECTRA's."""
    embedding_size: int = 128
    hidden_size: int = 256
    num_attention_heads: int = 4
    intermediate_size: int = 1024
    model_type: str = "electra"

    def check(self):
        super().check()
        check_sizes(self, "embedding_size")


# ---------------------------------------------------------------------------------------------
# Parameters, and the table of HuggingFace tensor names


@dataclass(frozen=True)
class ClassificationHead:
    dense: Linear     # H -> H, then GELU
    out_proj: Linear  # H -> L


@dataclass(frozen=True)
class ElectraParams:
    embeddings: bert.Embeddings            # E wide
    project: Linear | None                 # E -> H; None when E == H (the checkpoint then has no such tensor)
    layers: tuple[bert.EncoderLayer, ...]
    classifier: ClassificationHead | None  # None when loaded as a bare encoder


# The tensor names, without the "electra." prefix ElectraForSequenceClassification gives the encoder;
# the head ("classifier.dense", "classifier.out_proj") has no prefix.
def skeleton(c: ElectraConfig, head: bool = True) -> ElectraParams:
    E, H, L = c.embedding_size, c.hidden_size, c.num_labels
    return ElectraParams(
        embeddings=bert.Embeddings(  # BERT's embedding tables, E wide
            word=Spec("embeddings.word_embeddings.weight", (c.vocab_size, E)),
            position=Spec("embeddings.position_embeddings.weight", (c.max_position_embeddings, E)),
            token_type=Spec("embeddings.token_type_embeddings.weight", (c.type_vocab_size, E)),
            norm=norm_spec("embeddings.LayerNorm", E),
        ),
        project=linear_spec("embeddings_project", H, E) if E != H else None,
        layers=tuple(bert.layer_skeleton(c, i) for i in range(c.num_hidden_layers)),
        classifier=ClassificationHead(dense=linear_spec("classifier.dense", H, H),
                                      out_proj=linear_spec("classifier.out_proj", L, H)) if head else None,
    )


# ---------------------------------------------------------------------------------------------
# The forward pass


def embeddings(params: ElectraParams, c: ElectraConfig, batch, ops):
    x = bert.embeddings(params.embeddings, c, batch, ops)      # word + type + position, LayerNorm: [N, E]
    if params.project is not None:
        x = linear(params.project, x, ops)                           # [N, E] -> [N, H]
    return x


def encoder(params: ElectraParams, c: ElectraConfig, batch, ops, stages=None, first_only=False):
    """Token ids -> the last layer's hidden states, [N, H]; with first_only, at each pair's first
    token only, [B, H] (bert.run_layers). Fills `stages` if given."""
    x = embeddings(params, c, batch, ops)                       # [N, H]
    return bert.run_layers(params.layers, c, x, batch, ops, stages, first_only)   # [N, H] (first_only: [B, H])


def classification_head(p: ClassificationHead, first, ops):
    # Where BERT has its pooler (dense + tanh), ELECTRA has dense + GELU, and no pooler.
    pooled = linear(p.dense, first, ops, gelu=True)               # [B, H] -> [B, H]
    return pooled, linear(p.out_proj, pooled, ops)                       # [B, H] -> [B, L], raw logits


def forward(params: ElectraParams, c: ElectraConfig, batch, ops, return_stages=False):
    """Logits [B, L] for a packed batch; with return_stages, also every intermediate stage."""
    stages = {} if return_stages else None
    first = encoder(params, c, batch, ops, stages, first_only=True)         # [B, H]: the head reads [CLS] only
    pooled, logits = classification_head(params.classifier, first, ops)    # [B, H], [B, L]
    return with_stages(logits, stages, HEAD_STAGE, pooled)


FAMILY = Family(
    name="ELECTRA", model_types=("electra",), config=ElectraConfig, skeleton=skeleton, encoder=encoder,
    forward=forward, prefix="electra.", top_level=("classifier.",), head=("classifier.",), classifier="classifier.",
    tokenizer_class="BertTokenizer",  # transformers 5's AutoTokenizer for model_type electra
    head_stage=HEAD_STAGE, head_module="classifier.out_proj",
)
