"""A model directory, read once: its family, config, parameters and tokenizer.

    config.json          -> the family (the registry, by model_type) and its Config
    tokenizer files      -> the tokenizer class AutoTokenizer would pick, truncating to max_length
    the checkpoint       -> the family's parameter tree, checked tensor by tensor

CrossEncoder and SentenceEncoder both load through `load`; a name that is a Hub id is resolved to
a directory before (minibert/formats/hub.py).
"""

from dataclasses import dataclass
from pathlib import Path

from minibert.errors import ConfigError, ModelFormatError
from minibert.formats.checkpoint import find_checkpoint, read_checkpoint
from minibert.formats.config import read_json_object
from minibert.formats.tokenizer import PairTokenizer, lowercase_first, read_tokenizer
from minibert.models import config_from_dict, family_of
from minibert.models.family import Family
from minibert.models.params import params_from_tensors


@dataclass(frozen=True)
class Loaded:
    path: Path                 # the model directory
    family: Family
    config: object             # the family's Config
    params: object             # the family's parameter tree (no head with head=False)
    tokenizer: PairTokenizer


def load(model_dir, *, head: bool = True, max_length: int | None = None, max_seq_length: int | None = None,
         lowercase: bool = False) -> Loaded:
    """Read `model_dir`: config, tokenizer and checkpoint.

    head: True for a cross-encoder (the classification head is loaded, and required); False for the
    encoder alone (a sentence encoder: a head in the checkpoint is not used and not checked).
    max_length: tokens per input, special tokens included (None: the tokenizer's model_max_length);
    max_seq_length: a default for it from sentence_bert_config.json, capped by the model's positions.
    lowercase: lowercase texts before the tokenizer's own normalization (sentence_bert_config.json).
    """
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise ModelFormatError(f"{model_dir}: no config.json in the model directory")
    config = load_config(model_dir)
    if max_length is None and max_seq_length is not None:
        # Capped by the position table. (sentence-transformers does not cap an explicit max_seq_length:
        # a longer text then fails inside the embedding lookup.)
        max_length = min(max_seq_length, config.max_tokens)
    tokenizer = load_tokenizer(model_dir, config, max_length)
    # type_vocab_size 0: the family has no token type embeddings (DistilBERT) and never reads the ids
    if head and tokenizer.token_types and 0 < config.type_vocab_size < 2:
        raise ConfigError(
            f"{config.source}: type_vocab_size is {config.type_vocab_size}, but this model's tokenizer gives the "
            "passage token type 1, so a cross-encoder needs at least 2 token types (query = 0, passage = 1)")
    if lowercase:
        lowercase_first(tokenizer.tokenizer)
    return Loaded(model_dir, family_of(config), config, load_params(model_dir, config, head), tokenizer)


def load_config(model_dir):
    """Read and validate `model_dir/config.json`: the Config of its model family."""
    path = Path(model_dir) / "config.json"
    return config_from_dict(read_json_object(path, ConfigError), source=str(path))


def load_tokenizer(model_dir, config, max_length: int | None = None) -> PairTokenizer:
    """The tokenizer of `model_dir` for a model of this config: the class tokenizer_config.json names, else the
    one AutoTokenizer picks for the config's family."""
    return read_tokenizer(model_dir, config, family_of(config).tokenizer_class, max_length)


def load_params(model_dir, config, head: bool = True):
    """Read the checkpoint in `model_dir` and check it against `config`, tensor by tensor (head: as for load)."""
    path = find_checkpoint(Path(model_dir))
    return params_from_tensors(read_checkpoint(path), family_of(config), config, source=str(path), head=head)
