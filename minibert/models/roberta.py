"""RoBERTa, XLM-RoBERTa and CamemBERT: RobertaForSequenceClassification's forward pass (transformers,
eval mode), top to bottom. XLMRobertaForSequenceClassification and CamembertForSequenceClassification
are the same model under other names (transformers generates their files from RoBERTa's); only the
tokenizer differs (byte-level BPE for RoBERTa, SentencePiece Unigram for the other two).

Dimension letters as in minibert/models/bert.py (B pairs, N packed tokens, T tokens of one pair,
H hidden_size, L num_labels, P max_position_embeddings).

The encoder is BERT's: the same embeddings (word + token type + position, then LayerNorm) and
the same post-LN encoder layer, with the same tensor names under "roberta." instead of "bert.".
It differs from BERT in two places:
- the position ids (minibert.models.batch.padding_idx_positions): a pair's tokens are numbered from
  pad_token_id + 1, and a token equal to pad_token_id gets position pad_token_id and does not
  advance the count. This is
  why RoBERTa checkpoints have max_position_embeddings = 514 for 512 tokens (8194 for 8192);
- the head: no pooler inside the encoder; RobertaClassificationHead does dense + tanh on the
  first token (<s>), then out_proj. That is BERT's pooler + classifier by other names.

Stages: "embeddings", "layer_0" ... "layer_{n-1}" (as BERT), then
    head_dense   [B, H]  tanh(dense(first token)), the classification head's hidden layer
    logits       [B, L]  out_proj of head_dense: raw logits

Inference only: no dropout (the identity in eval mode). Every stage stays float32.
"""

import dataclasses
from dataclasses import dataclass

import numpy as np

from minibert.errors import ConfigError
from minibert.models import bert
from minibert.models.batch import padding_idx_positions
from minibert.models.family import Family, with_stages
from minibert.models.params import Linear, linear, linear_spec

HEAD_STAGE = "head_dense"  # RobertaClassificationHead's hidden layer: tanh(dense(<s>))
# XLMRobertaConfig and CamembertConfig default to BERT's vocab_size; RobertaConfig has its own.
VOCAB_SIZE_DEFAULTS = {"roberta": 50265}


@dataclass(frozen=True)
class RobertaConfig(bert.BertConfig):
    """BertConfig's fields; RobertaConfig's, XLMRobertaConfig's and CamembertConfig's defaults differ in
    pad_token_id (1: <s>=0, <pad>=1, </s>=2) and vocab_size."""
    pad_token_id: int = 1        # also the position table's padding_idx: real tokens start at pad_token_id + 1
    model_type: str = "roberta"  # or "xlm-roberta", "camembert"

    @classmethod
    def read_fields(cls, raw: dict, source: str) -> dict:
        model_type = raw.get("model_type", "roberta")
        return {} if "vocab_size" in raw or model_type not in VOCAB_SIZE_DEFAULTS \
            else {"vocab_size": VOCAB_SIZE_DEFAULTS[model_type]}

    @property
    def max_tokens(self) -> int:
        # Positions pad_token_id + 1 .. pad_token_id + T must be rows of the [P, H] table.
        return self.max_position_embeddings - self.pad_token_id - 1

    def check(self):
        if self.pad_token_id is None:
            raise ConfigError(f"{self.source}: field 'pad_token_id' is null; {self.model_type} numbers its "
                              "positions from pad_token_id + 1, so it needs one")
        super().check()
        if self.max_tokens < 1:
            raise ConfigError(
                f"{self.source}: max_position_embeddings ({self.max_position_embeddings}) leaves no position for a "
                f"token: positions start at pad_token_id + 1 = {self.pad_token_id + 1}")


# ---------------------------------------------------------------------------------------------
# Parameters, and the table of HuggingFace tensor names


@dataclass(frozen=True)
class ClassificationHead:
    dense: Linear      # H -> H, then tanh
    out_proj: Linear   # H -> L


@dataclass(frozen=True)
class RobertaParams:
    embeddings: bert.Embeddings               # BERT's tensors, position table [P, H] with P = max_tokens + pad + 1
    layers: tuple[bert.EncoderLayer, ...]     # BERT's encoder layers
    classifier: ClassificationHead | None     # None when loaded as a bare encoder


# The tensor names, without the "roberta." prefix that *ForSequenceClassification checkpoints give the
# encoder; the head ("classifier.dense", "classifier.out_proj") has no prefix. A bare RobertaModel /
# XLMRobertaModel checkpoint may also hold "pooler.dense": it is not part of the encoder, and a
# cross-encoder checkpoint has none.
def skeleton(c: RobertaConfig, head: bool = True) -> RobertaParams:
    H, L = c.hidden_size, c.num_labels
    return RobertaParams(
        embeddings=bert.embeddings_skeleton(c),
        layers=tuple(bert.layer_skeleton(c, i) for i in range(c.num_hidden_layers)),
        classifier=ClassificationHead(dense=linear_spec("classifier.dense", H, H),
                                      out_proj=linear_spec("classifier.out_proj", L, H)) if head else None,
    )


# ---------------------------------------------------------------------------------------------
# The forward pass


def embeddings(p: bert.Embeddings, c: RobertaConfig, batch, ops):
    # BERT's embeddings; how RoBERTa differs: its position ids count from pad_token_id + 1, not 0
    positions = padding_idx_positions(batch.input_ids, batch.offsets, c.pad_token_id)  # [N]
    return bert.embeddings(p, c, dataclasses.replace(batch, positions=positions), ops)  # [N, H]


def encoder(params: RobertaParams, c: RobertaConfig, batch, ops, stages=None, first_only=False):
    """Token ids -> the last layer's hidden states, [N, H]; with first_only, at each pair's first
    token only, [B, H] (bert.run_layers). Fills `stages` if given."""
    x = embeddings(params.embeddings, c, batch, ops)                  # [N, H]
    return bert.run_layers(params.layers, c, x, batch, ops, stages, first_only)   # [N, H] (first_only: [B, H])


def classification_head(p: ClassificationHead, first, ops):
    """RobertaClassificationHead on the first token (<s>): (dense + tanh [B, H], logits [B, L])."""
    hidden = np.tanh(linear(p.dense, first, ops))                       # [B, H]
    return hidden, linear(p.out_proj, hidden, ops)                       # [B, H] -> [B, L], raw logits


def forward(params: RobertaParams, c: RobertaConfig, batch, ops, return_stages=False):
    """Logits [B, L] for a packed batch; with return_stages, also every intermediate stage."""
    stages = {} if return_stages else None
    first = encoder(params, c, batch, ops, stages, first_only=True)        # [B, H]: the head reads <s> only
    hidden, logits = classification_head(params.classifier, first, ops)   # [B, H], [B, L]
    return with_stages(logits, stages, HEAD_STAGE, hidden)


def _family(name: str, model_type: str, tokenizer_class: str) -> Family:
    return Family(
        name=name, model_types=(model_type,), config=RobertaConfig, skeleton=skeleton, encoder=encoder,
        forward=forward, prefix="roberta.", top_level=("classifier.",), head=("pooler.", "classifier."),
        classifier="classifier.", tokenizer_class=tokenizer_class, head_stage=HEAD_STAGE,
        head_module="classifier.out_proj", position_ids=padding_idx_positions,
    )


# One Family per model_type: the same model, each with the tokenizer class AutoTokenizer gives it.
FAMILIES = (
    _family("RoBERTa", "roberta", "RobertaTokenizer"),
    _family("XLM-RoBERTa", "xlm-roberta", "XLMRobertaTokenizer"),
    _family("CamemBERT", "camembert", "CamembertTokenizer"),
)
