"""The model configuration: HuggingFace's config.json, read once and validated at load.

Field names are those of transformers' BertConfig, so a reader can hold this file next to a
config.json. Fields a config.json leaves out take BertConfig's defaults, as transformers does.
"""

import json
import math
import reprlib
import sys
from dataclasses import dataclass, field
from pathlib import Path

from minibert.errors import ConfigError

# BertConfig's defaults (transformers), used for fields a config.json leaves out.
_DEFAULTS = {
    "vocab_size": 30522,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
    "pad_token_id": 0,
    "position_embedding_type": "absolute",
}

MAX_SIZE = 2 ** 31 - 1  # sizes beyond this are not a BERT (and would overflow index arithmetic)

# transformers' ACT2FN["gelu"] is the exact erf GELU; the tanh approximations are other names.
SUPPORTED_HIDDEN_ACTS = ("gelu",)


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    hidden_act: str
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float
    pad_token_id: int | None
    position_embedding_type: str
    num_labels: int
    id2label: dict[int, str] = field(default_factory=dict)
    source: str = "<config>"  # the file this was read from, for error messages

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def __post_init__(self):
        where = self.source
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size", "num_labels"):
            value = getattr(self, name)
            if not _is_int(value) or not 1 <= value <= MAX_SIZE:
                raise ConfigError(
                    f"{where}: field {name!r} must be a positive integer (at most {MAX_SIZE}), found {show(value)}")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"{where}: hidden_size ({self.hidden_size}) must be divisible by "
                f"num_attention_heads ({self.num_attention_heads})")
        if self.hidden_act not in SUPPORTED_HIDDEN_ACTS:
            raise ConfigError(
                f"{where}: unsupported hidden_act {show(self.hidden_act)}; minibert implements "
                f"{', '.join(SUPPORTED_HIDDEN_ACTS)} (exact erf GELU, as transformers' 'gelu')")
        eps = self.layer_norm_eps
        if not _is_positive_finite(eps):
            raise ConfigError(f"{where}: field 'layer_norm_eps' must be a positive finite number, found {show(eps)}")
        if self.position_embedding_type != "absolute":
            raise ConfigError(
                f"{where}: unsupported position_embedding_type {show(self.position_embedding_type)}; "
                "minibert implements 'absolute'")
        pad = self.pad_token_id
        if pad is not None and (not _is_int(pad) or not 0 <= pad < self.vocab_size):
            raise ConfigError(f"{where}: field 'pad_token_id' must be an integer in [0, vocab_size), found {show(pad)}")
        if self.id2label and len(self.id2label) != self.num_labels:
            raise ConfigError(
                f"{where}: id2label has {len(self.id2label)} labels but num_labels is {self.num_labels}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_positive_finite(value) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value)) and value > 0
    except OverflowError:  # an int beyond float range
        return False


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 2, 8, 4, 80, 80, 80


def show(value) -> str:
    """A repr of bounded length and depth, for values read from untrusted files (any JSON value)."""
    try:
        return _REPR.repr(value)
    except ValueError:  # an int too long to turn into text (Python's int-to-str digit limit)
        return f"<an integer of more than {getattr(sys, 'get_int_max_str_digits', lambda: 4300)()} digits>"


def load_config(model_dir: str | Path) -> BertConfig:
    """Read and validate `model_dir/config.json`."""
    path = Path(model_dir) / "config.json"
    return config_from_dict(read_json_object(path, ConfigError), source=str(path))


def config_from_dict(raw: dict, source: str = "<config>") -> BertConfig:
    model_type = raw.get("model_type", "bert")
    if model_type != "bert":
        raise ConfigError(
            f"{source}: model_type is {show(model_type)}; minibert runs BERT models (model_type 'bert') only")
    for flag in ("is_decoder", "add_cross_attention"):
        if raw.get(flag):
            raise ConfigError(f"{source}: {flag} is true; minibert runs BERT encoders only")

    id2label = _read_id2label(raw, source)
    # transformers: num_labels = len(id2label) when id2label is given, else num_labels, else 2.
    num_labels = len(id2label) if id2label else raw.get("num_labels", 2)
    if id2label and "num_labels" in raw and raw["num_labels"] != num_labels:
        raise ConfigError(
            f"{source}: num_labels is {show(raw['num_labels'])} but id2label has {len(id2label)} labels")

    values = {name: raw.get(name, default) for name, default in _DEFAULTS.items()}
    return BertConfig(**values, num_labels=num_labels, id2label=id2label, source=source)


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
