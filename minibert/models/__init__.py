"""The model families minibert runs, and the registry from config.json's `model_type` to a family.

One file per family, each the whole forward pass of its *ForSequenceClassification, top to
bottom, with its Config and its table of HuggingFace tensor names. Every family offers the same
small interface, a `Family`, so the rest of minibert (loading, batching, the public classes)
never asks which family it holds:

    config_from_dict(raw, source) -> Config       config.json, validated
    skeleton(config, head) -> parameter tree      the tensor-name table (see minibert/weights.py)
    encoder(params, config, batch, ops, stages)   token ids -> last hidden states [N, H]
    forward(params, config, batch, ops, return_stages)   -> logits [B, L] (and the stages)

The shared pieces (linear, norms, attention, activations) are in minibert/ops.py and kernels.py.
"""

from dataclasses import dataclass
from typing import Callable

from minibert.config import show
from minibert.errors import ConfigError


@dataclass(frozen=True)
class Family:
    name: str                       # as the README and messages say it: "BERT"
    model_types: tuple[str, ...]    # the config.json model_type values this family reads
    config_from_dict: Callable
    skeleton: Callable              # (config, head: bool) -> the parameter tree with Spec leaves
    encoder: Callable               # (params, config, batch, ops, stages=None) -> [N, H]
    forward: Callable               # (params, config, batch, ops, return_stages=False) -> [B, L]
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
    # tokenizer_config.json names none (see minibert/tokenize.py for what each class does).
    tokenizer_class: str
    # Substrings of checkpoint keys that transformers drops without a word when the model has no such
    # tensor (the class's _keys_to_ignore_on_load_unexpected).
    ignored_unexpected: tuple[str, ...] = ()


def _families() -> tuple[Family, ...]:
    from minibert.models import bert, deberta_v2, distilbert, electra, modernbert, roberta
    return (bert.FAMILY, *roberta.FAMILIES, electra.FAMILY, distilbert.FAMILY, deberta_v2.FAMILY, modernbert.FAMILY)


def family_for_model_type(model_type, source: str = "<config>") -> Family:
    for family in _families():
        if model_type in family.model_types:
            return family
    known = sorted(t for f in _families() for t in f.model_types)
    raise ConfigError(f"{source}: model_type is {show(model_type)}; minibert runs {', '.join(map(repr, known))}")


def family_of(config) -> Family:
    """The family a Config belongs to."""
    return family_for_model_type(config.model_type, config.source)
