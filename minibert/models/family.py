"""The family contract: everything the rest of minibert may know about an architecture.

Each family file (bert.py, roberta.py, ...) ends with its `Family`, and the registry
(minibert/models/__init__.py) lists them. Loading, the runtime, the oracle, explain and the tests
ask the Family; nothing outside minibert/models/ names a model_type or a family. As
text-embeddings-inference's `Model` trait lets its router serve any model without asking which,
and as transformers keeps loader facts on the model class (base_model_prefix,
_keys_to_ignore_on_load_unexpected), a Family holds:

    the model           config (its Config class), skeleton (the HuggingFace tensor-name table),
                        encoder and forward
    its config.json     the model_type values it reads or, for a trust_remote_code model whose config.json
                        names none, the custom config classes (auto_map["AutoConfig"]) it reads
    the checkpoint      where *ForSequenceClassification puts the encoder and the head
    the tokenizer       the class AutoTokenizer picks when tokenizer_config.json names none
    the head            which tokens it reads, the name of its stage, and the transformers module
                        whose input that stage is (for traces captured from transformers)
    the tools' needs    its position numbering (the positions diagnosis) and, for a family that
                        does not attend through ops.attention, its attention probabilities (explain)
"""

from dataclasses import dataclass
from typing import Callable

FIRST, ALL, LAST = "first", "all", "last"   # what a head reads: each pair's first token, every token, its last token


def with_stages(logits, stages: dict | None, head_stage: str, head):
    """What a forward pass returns: the logits [B, L], or with stages (a dict the encoder filled) the logits
    and the stages, the head's stage and the logits added last."""
    if stages is None:
        return logits
    stages[head_stage], stages["logits"] = head, logits
    return logits, stages


def first_token_head(config) -> str:
    """The head of every family but ModernBERT with mean pooling: the first token alone."""
    return FIRST


@dataclass(frozen=True)
class Family:
    name: str                       # as the README and messages say it: "BERT"
    model_types: tuple[str, ...]    # the config.json model_type values this family reads
    config: type                    # its Config (an HFConfig): config.from_dict(raw, source)
    skeleton: Callable              # (config, head: bool) -> the parameter tree with Spec leaves
    encoder: Callable               # (params, config, batch, ops, stages=None, first_only=False) -> [N, H]
    forward: Callable               # (params, config, batch, ops, return_stages=False) -> [B, L] (, stages)

    # Checkpoint layout: *ForSequenceClassification saves the encoder under `prefix` ("bert."), and
    # the head's tensors whose names start with one of `top_level` outside it. A bare base model
    # (AutoModel) saves the encoder with no prefix.
    prefix: str
    top_level: tuple[str, ...]
    # Tensor-name prefixes (without `prefix`) of everything that is not the encoder: the classification
    # head and any pooler. Not loaded, and not checked, when the encoder is loaded alone.
    head: tuple[str, ...]
    # The prefix whose tensors make a checkpoint a cross-encoder; a checkpoint without them is a bare
    # encoder and is refused as one.
    classifier: str
    # The tokenizer class transformers' AutoTokenizer picks for the family's model_type when
    # tokenizer_config.json names none (minibert/formats/tokenizer.py says what each class does).
    tokenizer_class: str
    # The head's stage, between the last layer and the logits ("pooled", RoBERTa's "head_dense"), and the
    # module of transformers' *ForSequenceClassification whose input it is: the linear layer that makes
    # the logits (a dropout in between is the identity in eval mode).
    head_stage: str
    head_module: str
    # Substrings of checkpoint keys that transformers drops without a word when the model has no such
    # tensor (the class's _keys_to_ignore_on_load_unexpected).
    ignored_unexpected: tuple[str, ...] = ()
    # (config) -> FIRST, ALL or LAST (a decoder's): the tokens of the last layer the head reads. FIRST and LAST let
    # the last layer compute those rows alone.
    head_reads: Callable = first_token_head
    # (input_ids [N], offsets [B + 1], pad_token_id) -> positions [N], for a family whose position ids
    # are not 0, 1, 2, ... within each pair (the RoBERTa family's start at padding_idx + 1); None: 0, 1, 2, ...
    position_ids: Callable | None = None
    # (params, config, layer, x [T, H], ops) -> [NH, T, T]: the probabilities layer `layer` attends with in
    # one pair, for a family that scores its attention itself (DeBERTa's c2c + c2p + p2c). None: the
    # family attends through ops.attention, whose queries and keys explain records.
    attention_probabilities: Callable | None = None
    # For a family that transformers has no model_type for (its code ships in the model repository, run with
    # trust_remote_code): the classes config.json's auto_map["AutoConfig"] names, exactly as written there
    # ("configuration_xlm_roberta.XLMRobertaFlashConfig", or with the "<repo>--" prefix transformers adds when it
    # saves a model whose code came from another repository). The registry consults them only when config.json
    # has no model_type; such a config.json with an auto_map no family lists is read as BERT's, as every config.json
    # without a model_type is. The family's Config then has model_type "" and is known by its class (family_of).
    auto_configs: tuple[str, ...] = ()
    # A decoder reranker (Qwen3): a pair is one conversation rendered through the tokenizer's chat template
    # (minibert/formats/chat.py), the head reads each pair's last token (encoder(..., last_only=True) gives those
    # rows, [B, H]), and a *ForCausalLM is scored from a few rows of its language-model head (sentence-transformers'
    # LogitScore): lm_head_rows(tensors, config, token_ids) -> [K, H], read from the checkpoint's tensors.
    decoder: bool = False
    lm_head_rows: Callable | None = None
