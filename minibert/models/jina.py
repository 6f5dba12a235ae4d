"""jina-reranker-v2's XLM-RoBERTa: the forward pass of the XLMRobertaForSequenceClassification in
jinaai/jina-reranker-v2-base-multilingual's own code (modeling_xlm_roberta.py and the flash-attention
modules it adapts: embedding.py, mha.py, mlp.py, block.py), on its CPU path, eval mode, top to bottom.

transformers does not contain this model: config.json names no model_type, and its auto_map points at the
repository's configuration_xlm_roberta.XLMRobertaFlashConfig, which the registry recognises (Family.auto_configs).

The maths is XLM-RoBERTa's (minibert/models/roberta.py, whose dimension letters this file uses): RoBERTa's
position ids (from pad_token_id + 1, a pad token inside a pair not counted), BERT's post-LN encoder layer
with exact GELU, RoBERTa's classification head (dense + tanh on <s>, then out_proj). How it differs:
- the tensor names: `emb_ln` for the embeddings' LayerNorm, and per layer `mixer.Wqkv` (the query, key and
  value projections fused, [q; k; v] stacked: minibert's stacked qkv as it is), `mixer.out_proj`, `norm1`,
  `mlp.fc1`, `mlp.fc2`, `norm2`;
- the embeddings add (word + position) + token type, where BERT adds (word + token type) + position;
- its attention (flash-attention's SelfAttention) scales the keys by 1/sqrt(HD) before q k^T where BERT
  scales the scores after: the same numbers when 1/sqrt(HD) is a power of two (HD = 4, 16, 64: the real
  model's 64), within a float32 rounding of the scores otherwise;
- it masks padded keys by adding -10000 where BERT adds finfo.min: either way their weight is exactly 0
  (exp underflows), the same as minibert's packed batches, which have no padded keys;
- XLMRobertaFlashConfig's defaults (layer_norm_eps 1e-12, type_vocab_size 2, pad_token_id 1, vocab_size
  30522), not RoBERTa's; the real checkpoint says 1e-5 and 1.
Stages: as RoBERTa's ("embeddings", "layer_i", "head_dense", "logits").

Inference only: no dropout (the identity in eval mode). Every stage stays float32; the weights, stored in
bfloat16 on the Hub, are widened exactly at load.
"""

import dataclasses
from dataclasses import dataclass

from minibert.errors import ConfigError
from minibert.formats.config import check_sizes, is_int
from minibert.models import bert, roberta
from minibert.models.batch import padding_idx_positions
from minibert.models.family import Family, with_stages
from minibert.models.params import linear_spec, norm_spec

HEAD_STAGE = roberta.HEAD_STAGE  # tanh(classifier.dense(<s>)), what classifier.out_proj reads
# The hidden_act values the code runs as F.gelu(approximate="tanh"); minibert implements the exact erf GELU only.
TANH_GELUS = ("gelu_new", "gelu_fast", "gelu_pytorch_tanh")


@dataclass(frozen=True)
class JinaConfig(roberta.RobertaConfig):
    """XLMRobertaFlashConfig's fields (configuration_xlm_roberta.py) and the ones modeling_xlm_roberta.py reads
    with getattr, with their defaults. BertConfig's fields have XLMRobertaFlashConfig's defaults already
    (pad_token_id 1 is RoBERTa's); its other fields change nothing at inference (the dropouts,
    initializer_range, use_cache, torch_dtype: the storage's, widened at load; emb_pooler, matryoshka_dimensions,
    truncate_dim: encode()'s sentence embeddings; lora_*, load_trained_adapters: no code here reads them)."""
    use_flash_attn: bool = True            # kernels only: flash-attention on CUDA, the same attention; ignored
    fused_bias_fc: bool = False            # kernels only: FusedDense is the same x W^T + b; ignored
    fused_dropout_add_ln: bool = False     # kernels only: Triton's dropout + add + LayerNorm; ignored
    fused_mlp: bool = False                # flash-attention's FusedMLP: a tanh GELU only; refused
    last_layer_subset: bool = False        # the last layer as a cross-attention (Wq, Wkv): pretraining; refused
    pad_vocab_size_multiple: int = 1       # the embedding table's rows: vocab_size rounded up to a multiple of it
    model_type: str = ""                   # config.json has none: the family is found by its auto_map

    @classmethod
    def read_fields(cls, raw: dict, source: str) -> dict:
        # Not RoBERTa's vocab_size default. XLMRobertaModel rounds vocab_size up to pad_vocab_size_multiple.
        vocab_size, multiple = cls.value(raw, "vocab_size"), cls.value(raw, "pad_vocab_size_multiple")
        if is_int(vocab_size) and is_int(multiple) and multiple > 0 and vocab_size % multiple:
            return {"vocab_size": vocab_size + multiple - vocab_size % multiple}
        return {}

    def check(self):
        if self.hidden_act in TANH_GELUS:
            raise ConfigError(
                f"{self.source}: unsupported hidden_act {self.hidden_act!r}: jina's XLM-RoBERTa code runs it as GELU's "
                "tanh approximation, which minibert does not implement; minibert implements 'gelu' (exact erf GELU)")
        for name, why in (("fused_mlp", "runs flash-attention's FusedMLP, whose GELU is the tanh approximation"),
                          ("last_layer_subset", "makes the last layer a cross-attention over Wq and Wkv tensors")):
            if getattr(self, name):
                raise ConfigError(f"{self.source}: {name} is {getattr(self, name)!r}: jina's XLM-RoBERTa code then "
                                  f"{why}; minibert implements the model with {name} false")
        if self.pad_token_id is None:
            raise ConfigError(f"{self.source}: field 'pad_token_id' is null; jina's XLM-RoBERTa numbers its positions "
                              "from pad_token_id + 1, so it needs one")
        check_sizes(self, "pad_vocab_size_multiple")
        super().check()


# ---------------------------------------------------------------------------------------------
# Parameters, and the table of HuggingFace tensor names: RoBERTa's tree, jina's names


def layer_skeleton(c: JinaConfig, i: int) -> bert.EncoderLayer:
    H, I = c.hidden_size, c.intermediate_size
    p = f"encoder.layers.{i}."
    return bert.EncoderLayer(
        qkv=linear_spec(p + "mixer.Wqkv", 3 * H, H),    # [q; k; v]: BERT's three, stacked in the checkpoint
        attn_out=linear_spec(p + "mixer.out_proj", H, H),
        attn_norm=norm_spec(p + "norm1", H),
        ffn_in=linear_spec(p + "mlp.fc1", I, H),
        ffn_out=linear_spec(p + "mlp.fc2", H, I),
        ffn_norm=norm_spec(p + "norm2", H),
    )


# The tensor names, without the "roberta." prefix that XLMRobertaForSequenceClassification's checkpoint gives
# the encoder; the head ("classifier.dense", "classifier.out_proj") has no prefix. The word, position and
# token type tables keep BERT's names; the embeddings' LayerNorm is `emb_ln`, beside them.
def skeleton(c: JinaConfig, head: bool = True) -> roberta.RobertaParams:
    H, L = c.hidden_size, c.num_labels
    return roberta.RobertaParams(
        embeddings=dataclasses.replace(bert.embeddings_skeleton(c), norm=norm_spec("emb_ln", H)),
        layers=tuple(layer_skeleton(c, i) for i in range(c.num_hidden_layers)),
        classifier=roberta.ClassificationHead(dense=linear_spec("classifier.dense", H, H),
                                              out_proj=linear_spec("classifier.out_proj", L, H)) if head else None,
    )


# ---------------------------------------------------------------------------------------------
# The forward pass


def embeddings(p: bert.Embeddings, c: JinaConfig, batch, ops):
    positions = padding_idx_positions(batch.input_ids, batch.offsets, c.pad_token_id)   # [N]: RoBERTa's numbering
    x = p.word[batch.input_ids] + p.position[positions]   # [N, H]; how it differs: position before token type
    x = x + p.token_type[batch.token_type_ids]            # [N, H]
    return ops.layer_norm(x, p.norm.weight, p.norm.bias, c.layer_norm_eps)


def encoder(params: roberta.RobertaParams, c: JinaConfig, batch, ops, stages=None, first_only=False):
    """Token ids -> the last layer's hidden states, [N, H]; with first_only, at each pair's first token only,
    [B, H]. Fills `stages` if given. The layers are BERT's (see the module docstring for the attention)."""
    x = embeddings(params.embeddings, c, batch, ops)                                  # [N, H]
    return bert.run_layers(params.layers, c, x, batch, ops, stages, first_only)      # [N, H] (first_only: [B, H])


def forward(params: roberta.RobertaParams, c: JinaConfig, batch, ops, return_stages=False):
    """Logits [B, L] for a packed batch; with return_stages, also every intermediate stage."""
    stages = {} if return_stages else None
    first = encoder(params, c, batch, ops, stages, first_only=True)                 # [B, H]: the head reads <s>
    hidden, logits = roberta.classification_head(params.classifier, first, ops)    # [B, H], [B, L]
    return with_stages(logits, stages, HEAD_STAGE, hidden)


FAMILY = Family(
    name="jina-reranker-v2 XLM-RoBERTa", model_types=(),
    # config.json's auto_map["AutoConfig"]: the repository's own, and as a fine-tune saved from it names it
    auto_configs=("configuration_xlm_roberta.XLMRobertaFlashConfig",
                  "jinaai/jina-reranker-v2-base-multilingual--configuration_xlm_roberta.XLMRobertaFlashConfig"),
    config=JinaConfig, skeleton=skeleton, encoder=encoder, forward=forward,
    prefix="roberta.", top_level=("classifier.",), head=("pooler.", "classifier."), classifier="classifier.",
    tokenizer_class="XLMRobertaTokenizer", head_stage=HEAD_STAGE, head_module="classifier.out_proj",
    position_ids=padding_idx_positions,
)
