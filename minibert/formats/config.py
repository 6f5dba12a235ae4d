"""config.json: reading it, the checks every family's config shares, and the base of their Configs.

Each family (minibert/models/) has a frozen Config dataclass derived from `HFConfig` whose fields
are the keys of its transformers config class, each with that class's default, so a reader can
hold it next to a config.json; `from_dict` takes each field from the file, or the default where
the file leaves it out, as transformers does. A family that extends another inherits its Config
and declares only what differs (RoBERTa's pad_token_id, ELECTRA's embedding_size). The registry
(minibert/models/__init__.py) picks the family from `model_type`.

Every family's Config offers, besides its own fields, what the rest of minibert asks of a model:
    model_type, vocab_size, hidden_size, num_hidden_layers, num_labels, id2label, source
    type_vocab_size   token types the embeddings have (0: none)
    max_tokens        the longest sequence the model takes, special tokens included
"""

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from minibert.errors import ConfigError, show

MAX_SIZE = 2 ** 31 - 1  # sizes beyond this are not a model (and would overflow index arithmetic)


def check_sizes(config, *names, minimum=1):
    """Each named field is an integer in [minimum, MAX_SIZE]."""
    for name in names:
        value = getattr(config, name)
        if not is_int(value) or not minimum <= value <= MAX_SIZE:
            kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
            raise ConfigError(f"{config.source}: field {name!r} must be {kind} (at most {MAX_SIZE}), found {show(value)}")


def check_divisible(config, size: str, heads: str):
    if getattr(config, size) % getattr(config, heads):
        raise ConfigError(f"{config.source}: {size} ({getattr(config, size)}) must be divisible by "
                          f"{heads} ({getattr(config, heads)})")


def check_eps(config, name: str):
    value = getattr(config, name)
    if not is_positive_finite(value):
        raise ConfigError(f"{config.source}: field {name!r} must be a positive finite number, found {show(value)}")


def check_choice(config, name: str, allowed: tuple, what: str = ""):
    """A field minibert implements only some values of: anything else is named, never run as something else."""
    value = getattr(config, name)
    if isinstance(value, (list, dict)) or value not in allowed:
        raise ConfigError(f"{config.source}: unsupported {name} {show(value)}; minibert implements "
                          f"{', '.join(repr(a) for a in allowed)}{what}")


def check_layer_types(config, allowed: tuple):
    """config.layer_types lists every layer, each one of `allowed` (transformers' "full_attention", ...)."""
    types, n = config.layer_types, config.num_hidden_layers
    if len(types) != n or not all(t in allowed for t in types):
        raise ConfigError(f"{config.source}: layer_types must list {n} layers, each one of "
                          f"{', '.join(map(repr, allowed))}; found {show(list(types))}")


def check_token_id(config, name: str):
    value = getattr(config, name)
    if value is not None and (not is_int(value) or not 0 <= value < config.vocab_size):
        raise ConfigError(f"{config.source}: field {name!r} must be an integer in [0, vocab_size), found {show(value)}")


def check_labels(config):
    check_sizes(config, "num_labels")
    if config.id2label and len(config.id2label) != config.num_labels:
        raise ConfigError(
            f"{config.source}: id2label has {len(config.id2label)} labels but num_labels is {config.num_labels}")


def label_fields(raw: dict, source: str) -> dict:
    """num_labels and id2label as transformers reads them, and the source: the fields every family has."""
    id2label = _read_id2label(raw, source)
    # transformers: num_labels = len(id2label) when id2label is given, else num_labels, else 2.
    num_labels = len(id2label) if id2label else raw.get("num_labels", 2)
    if id2label and "num_labels" in raw and raw["num_labels"] != num_labels:
        raise ConfigError(
            f"{source}: num_labels is {show(raw['num_labels'])} but id2label has {len(id2label)} labels")
    return {"num_labels": num_labels, "id2label": id2label, "source": source}



@dataclass(frozen=True)
class HFConfig:
    """The fields every family's config has; a family's Config adds its own, with their defaults."""
    num_labels: int = 2
    id2label: dict[int, str] = field(default_factory=dict)
    source: str = "<config>"  # the file this was read from, for error messages
    model_type: str = ""

    @classmethod
    def from_dict(cls, raw: dict, source: str = "<config>"):
        """A config.json's contents: every field the file has, the class's default for the others."""
        own = {f.name for f in dataclasses.fields(HFConfig)}
        values = {f.name: raw[f.name] for f in dataclasses.fields(cls) if f.name in raw and f.name not in own}
        values.update(cls.read_fields(raw, source))
        if "model_type" in raw:
            values["model_type"] = raw["model_type"]
        return cls(**values, **label_fields(raw, source))

    @classmethod
    def value(cls, raw: dict, name: str):
        """What from_dict takes for field `name`: the file's value, else the default."""
        return raw[name] if name in raw else cls.__dataclass_fields__[name].default

    @classmethod
    def read_fields(cls, raw: dict, source: str) -> dict:
        """The fields a family reads its own way (legacy keys, parsed strings, defaults that depend on
        other fields): overrides what from_dict took. None by default."""
        return {}

    # What the rest of minibert asks of every family's config, for the families that keep HF's common
    # names (hidden_size, num_attention_heads, max_position_embeddings); a family overrides what differs.
    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def max_tokens(self) -> int:
        """The longest sequence the model takes, special tokens included."""
        return self.max_position_embeddings

    def __post_init__(self):
        check_labels(self)
        self.check()

    def check(self):
        """The family's checks of its fields, with errors that name the field and the file."""


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_positive_finite(value) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value)) and value > 0
    except OverflowError:  # an int beyond float range
        return False


def _read_id2label(raw: dict, source: str) -> dict[int, str]:
    id2label = raw.get("id2label")
    if id2label is None:
        return {}
    if not isinstance(id2label, dict):
        raise ConfigError(f"{source}: field 'id2label' must be an object, found {type(id2label).__name__}")
    out = {}
    for key, label in id2label.items():
        try:
            index = int(key)
        except (TypeError, ValueError):
            raise ConfigError(f"{source}: id2label key {show(key)} is not an integer") from None
        if not isinstance(label, str):
            raise ConfigError(f"{source}: id2label[{show(key)}] must be a string, found {show(label)}")
        out[index] = label
    if sorted(out) != list(range(len(out))):
        raise ConfigError(f"{source}: id2label keys must be 0..{len(out) - 1}, found {show(sorted(out))}")
    return out


def read_json_object(path: Path, error=ConfigError) -> dict:
    """read_json, for a file that must hold a JSON object."""
    raw = read_json(path, error)
    if not isinstance(raw, dict):
        raise error(f"{path}: expected a JSON object, found {type(raw).__name__}")
    return raw


def read_json(path: Path, error=ConfigError):
    """Read a JSON file; any failure becomes `error` naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot read: {exc}") from None
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, a too-long int, too deep nesting
        raise error(f"{path}: not valid JSON: {exc}") from None
