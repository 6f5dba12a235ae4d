"""The model families minibert runs, and the registry from config.json's `model_type` (or, where it names
none, its auto_map["AutoConfig"]) to a family.

One file per family, each the whole forward pass of its *ForSequenceClassification, top to
bottom, with its Config and its table of HuggingFace tensor names, ending with its `Family`
(minibert/models/family.py: the contract). This registry is the only dispatch: the rest of minibert
asks a Family, never which family it holds.

The shared pieces are below the families: the packed batch (batch.py), the parameter tree and the
mapping of checkpoint tensors onto it (params.py), sentence-transformers' pooling (pooling.py), and
the ops (minibert/ops/). Adding a family is one file here and one line in FAMILIES (see the README's
"Adding an architecture").
"""

from minibert.errors import ConfigError, show
from minibert.models import (
    bert,
    chain,
    deberta_v2,
    distilbert,
    electra,
    gemma,
    gte,
    jina,
    llama,
    mistral,
    modernbert,
    qwen2,
    qwen3,
    roberta,
)
from minibert.models.batch import Batch, check_inputs
from minibert.models.family import Family
from minibert.ops import NUMPY

FAMILIES: tuple[Family, ...] = (bert.FAMILY, *roberta.FAMILIES, electra.FAMILY, distilbert.FAMILY,
                                deberta_v2.FAMILY, modernbert.FAMILY, gte.FAMILY, jina.FAMILY,
                                llama.FAMILY, mistral.FAMILY, qwen2.FAMILY, qwen3.FAMILY, gemma.FAMILY)


def find_family(model_type, auto_config=None) -> Family | None:
    """The family that reads this model_type; when there is none (None or ""), the family that reads this
    auto_map["AutoConfig"] class (Family.auto_configs). None if no family does."""
    if model_type:
        return next((family for family in FAMILIES if model_type in family.model_types), None)
    return next((family for family in FAMILIES if auto_config is not None and auto_config in family.auto_configs),
                None)


def family_for_model_type(model_type, source: str = "<config>") -> Family:
    family = find_family(model_type)
    if family is not None:
        return family
    known = sorted(t for f in FAMILIES for t in f.model_types)
    raise ConfigError(f"{source}: model_type is {show(model_type)}; minibert runs {', '.join(map(repr, known))}")


def family_of(config) -> Family:
    """The family a Config belongs to: its model_type's; a Config without one (read by its auto_map), its class's."""
    if not config.model_type:
        family = next((f for f in FAMILIES if f.auto_configs and type(config) is f.config), None)
        if family is not None:
            return family
    return family_for_model_type(config.model_type, config.source)


def auto_config(raw: dict):
    """config.json's auto_map["AutoConfig"]: the config class a trust_remote_code model's own code defines."""
    auto_map = raw.get("auto_map")
    return auto_map.get("AutoConfig") if isinstance(auto_map, dict) else None


def config_from_dict(raw: dict, source: str = "<config>"):
    """A config.json's contents -> the Config of the family its model_type names; without a model_type, of the
    family that reads its auto_map["AutoConfig"] class, else BERT's (every config.json without one)."""
    family = find_family(None, auto_config(raw)) if "model_type" not in raw else None
    family = family or family_for_model_type(raw.get("model_type", "bert"), source)
    for flag in ("is_decoder", "add_cross_attention"):
        if raw.get(flag):
            raise ConfigError(f"{source}: {flag} is true; minibert runs encoders only")
    return family.config.from_dict(raw, source)


def encoder(params, config, batch: Batch, ops=NUMPY, stages=None):
    """Token ids -> the last layer's hidden states, [N, H] (of a chain: its encoder's). Fills `stages` if given."""
    check_inputs(config, batch)
    encoder_params = params.encoder if isinstance(params, chain.Chain) else params
    return family_of(config).encoder(encoder_params, config, batch, ops, stages)


def forward(params, config, batch: Batch, ops=NUMPY, return_stages=False):
    """Logits [B, L] for a packed batch; with return_stages, also every intermediate stage
    (`embeddings`, `layer_0`, ..., then the head's stages and `logits`). The head is the family's own
    (its *ForSequenceClassification) or, for params that are a chain.Chain, sentence-transformers'
    modules after the family's encoder (whose last output is the logits of a cross-encoder and the
    embedding of a sentence encoder)."""
    check_inputs(config, batch)
    family = family_of(config)
    if isinstance(params, chain.Chain):
        return chain.forward(family, params, config, batch, ops, return_stages)
    return family.forward(params, config, batch, ops, return_stages)
