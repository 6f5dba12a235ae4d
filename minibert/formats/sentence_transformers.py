"""sentence-transformers' model directories: modules.json and the files its modules point to.

A sentence-transformers directory describes its pipeline in files, read once here (`read_pipeline`):

    modules.json                       the modules, in order: Transformer (its folder, usually ""),
                                       Pooling (a folder such as "1_Pooling"), optionally Normalize.
                                       Any other module (Dense, LayerNorm, custom code) is refused.
    <Pooling>/config.json              the pooling modes
    <Transformer>/sentence_bert_config.json   max_seq_length, do_lower_case
    config_sentence_transformers.json  truncate_dim; a default prompt is refused (not implemented)

A directory without modules.json (a plain HuggingFace model) gets what sentence-transformers gives
it: mean pooling, no normalization, and the tokenizer's own max length. The pooling itself is
computed by minibert/models/pooling.py.
"""

from dataclasses import dataclass
from pathlib import Path, PureWindowsPath

from minibert.errors import ConfigError, ModelFormatError
from minibert.formats.config import read_json, read_json_object

# sentence-transformers' pooling mode names.
POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
# The older boolean keys of <Pooling>/config.json, in the order sentence-transformers concatenates
# the pooled vectors (whatever order the file lists the keys in).
_LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
# The Transformer module's own config file: the first of these that exists. This is sentence-transformers'
# own list, tried in this order whatever the model's architecture (so it is not a family's to declare).
_TRANSFORMER_CONFIG_FILES = (
    "sentence_bert_config.json", "sentence_roberta_config.json", "sentence_distilbert_config.json",
    "sentence_camembert_config.json", "sentence_albert_config.json", "sentence_xlm-roberta_config.json",
    "sentence_xlnet_config.json",
)


@dataclass(frozen=True)
class SentencePipeline:
    """What a sentence-transformers directory asks for, read and validated at load."""
    encoder_dir: Path              # the Transformer module's folder: config.json, checkpoint, tokenizer
    pooling_modes: tuple[str, ...]  # in concatenation order
    normalize: bool                # a Normalize module follows the pooling
    max_seq_length: int | None     # tokens per text; None: the tokenizer's model_max_length
    do_lower_case: bool            # lowercase texts before the tokenizer's own normalization
    truncate_dim: int | None       # keep the first truncate_dim dimensions (after Normalize)
    pooling_dimension: int | None  # the embedding dimension the Pooling config declares (= hidden_size)
    source: str                    # where the pooling modes come from, for messages


def read_pipeline(model_dir: str | Path) -> SentencePipeline:
    """Read modules.json and the files it points to; a directory without it gets mean pooling."""
    model_dir = Path(model_dir)
    modules_path = model_dir / "modules.json"
    if not modules_path.is_file():
        # sentence-transformers' default for a plain HuggingFace model: Transformer + mean Pooling.
        # It then reads no sentence_bert_config.json and no config_sentence_transformers.json.
        return SentencePipeline(model_dir, ("mean",), False, None, False, None, None,
                                source=f"{model_dir} (no modules.json: mean pooling, as sentence-transformers)")

    modules = _read_modules(modules_path)
    kinds = [kind for kind, _ in modules]
    if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        listed = ", ".join(f"{m.get('type')!r}" for _, m in modules) or "nothing"
        raise ModelFormatError(
            f"{modules_path}: lists {listed}; minibert runs the sentence-transformers modules "
            "Transformer, Pooling and optionally Normalize, in that order")
    transformer, pooling = modules[0][1], modules[1][1]
    encoder_dir = model_dir / transformer["path"]
    pooling_config = model_dir / pooling["path"] / "config.json"
    modes, dimension = read_pooling_config(pooling_config)
    if len(modules) == 3:
        _check_normalize(model_dir / modules[2][1]["path"] / "config.json")
    max_seq_length, do_lower_case = _read_transformer_config(encoder_dir)
    truncate_dim = _read_model_config(model_dir / "config_sentence_transformers.json")
    return SentencePipeline(encoder_dir, modes, len(modules) == 3, max_seq_length, do_lower_case,
                            truncate_dim, dimension, source=str(pooling_config))


def is_sentence_encoder(model_dir: str | Path) -> bool:
    """True when model_dir/modules.json lists a sentence-transformers Pooling module."""
    path = Path(model_dir) / "modules.json"
    if not path.is_file():
        return False
    return any(kind == "Pooling" for kind, _ in _read_modules(path))


def _read_modules(path: Path) -> list[tuple[str | None, dict]]:
    """modules.json -> [(class name or None for a module outside sentence-transformers, entry)]."""
    raw = read_json(path, ModelFormatError)
    if not isinstance(raw, list) or not all(
            isinstance(m, dict) and isinstance(m.get("type"), str) and isinstance(m.get("path"), str) for m in raw):
        raise ModelFormatError(f"{path}: expected a JSON list of modules, each with a string 'type' and 'path'")
    modules = []
    for index, module in enumerate(raw):
        folder = PureWindowsPath(module["path"])  # as sentence-transformers: no root, no '..', either syntax
        if folder.anchor or ".." in folder.parts or "\0" in module["path"]:
            raise ModelFormatError(
                f"{path}: module {index} has path {module['path']!r}; expected a folder inside the model directory")
        package, _, name = module["type"].rpartition(".")
        kind = name if package.split(".")[0] == "sentence_transformers" else None
        modules.append((kind, module))
    return modules


def read_pooling_config(path: Path) -> tuple[tuple[str, ...], int | None]:
    """<Pooling>/config.json -> (the pooling modes in concatenation order, the declared dimension).

    Two formats, as sentence-transformers reads them: "pooling_mode" (a mode name or a list of
    them, in the listed order), or the older "pooling_mode_*" booleans (concatenated in the fixed
    order of _LEGACY_POOLING_KEYS; none true means mean). "pooling_mode" wins when both are given.
    (include_prompt only matters when a prompt is prepended; minibert refuses default prompts.)
    """
    if not path.is_file():
        raise ModelFormatError(f"{path}: file not found (modules.json lists a Pooling module there)")
    raw = read_json_object(path, ModelFormatError)
    for key in raw:
        if key.startswith("pooling_mode_") and key not in _LEGACY_POOLING_KEYS:
            raise ConfigError(f"{path}: field {key!r} is not a pooling mode minibert knows "
                              f"(it implements {', '.join(POOLING_MODES)})")
    if "pooling_mode" in raw:
        value = raw["pooling_mode"]
        modes = [value] if isinstance(value, str) else value
        if not isinstance(modes, list) or not modes or not all(isinstance(m, str) for m in modes):
            raise ConfigError(f"{path}: field 'pooling_mode' must be a mode name or a non-empty list of them, "
                              f"found {value!r}")
        for mode in modes:
            if mode not in POOLING_MODES:
                raise ConfigError(f"{path}: field 'pooling_mode' has {mode!r}; minibert implements "
                                  f"{', '.join(POOLING_MODES)}")
        modes = tuple(modes)
    else:
        for key in _LEGACY_POOLING_KEYS:
            if raw.get(key) not in (None, True, False):
                raise ConfigError(f"{path}: field {key!r} must be true or false, found {raw[key]!r}")
        modes = tuple(mode for key, mode in _LEGACY_POOLING_KEYS.items() if raw.get(key)) or ("mean",)
    dimension = raw.get("embedding_dimension", raw.get("word_embedding_dimension"))
    if dimension is not None and (isinstance(dimension, bool) or not isinstance(dimension, int)):
        raise ConfigError(f"{path}: field 'word_embedding_dimension' must be an integer, found {dimension!r}")
    return modes, dimension


def _check_normalize(path: Path):
    # The folder is often absent (git keeps no empty folders); then the defaults apply.
    raw = read_json(path, ModelFormatError) if path.is_file() else {}
    for key in ("module_input_name", "module_output_name"):
        if raw.get(key) not in (None, "sentence_embedding"):
            raise ConfigError(f"{path}: field {key!r} is {raw[key]!r}; minibert normalizes the sentence "
                              "embedding only ('sentence_embedding')")


def _read_transformer_config(encoder_dir: Path) -> tuple[int | None, bool]:
    """(max_seq_length, do_lower_case) from sentence_bert_config.json; (None, False) without one."""
    path = next((encoder_dir / name for name in _TRANSFORMER_CONFIG_FILES if (encoder_dir / name).is_file()), None)
    if path is None:
        return None, False
    raw = read_json_object(path, ConfigError)
    task = raw.get("transformer_task", "feature-extraction")
    if task != "feature-extraction":
        raise ModelFormatError(f"{path}: transformer_task is {task!r}; a sentence encoder is 'feature-extraction'")
    for key in ("tokenizer_args", "processor_kwargs", "processing_kwargs"):
        settings = raw.get(key) or {}
        if not isinstance(settings, dict):
            raise ConfigError(f"{path}: field {key!r} must be an object, found {type(settings).__name__}")
        settings = {k: v for k, v in settings.items() if k != "trust_remote_code"}
        if settings:
            raise ConfigError(f"{path}: field {key!r} sets {sorted(settings)}; minibert does not apply "
                              "tokenizer settings from this file")
    max_seq_length = raw.get("max_seq_length")
    if max_seq_length is not None and (isinstance(max_seq_length, bool) or not isinstance(max_seq_length, int)
                                       or max_seq_length < 3):
        raise ConfigError(f"{path}: field 'max_seq_length' must be an integer >= 3 or null, found {max_seq_length!r}")
    do_lower_case = raw.get("do_lower_case", False)
    if not isinstance(do_lower_case, bool):
        raise ConfigError(f"{path}: field 'do_lower_case' must be true or false, found {do_lower_case!r}")
    return max_seq_length, do_lower_case


def _read_model_config(path: Path) -> int | None:
    """truncate_dim from config_sentence_transformers.json; refuses what minibert does not implement."""
    if not path.is_file():
        return None
    raw = read_json_object(path, ConfigError)
    model_type = raw.get("model_type", "SentenceTransformer")
    if model_type != "SentenceTransformer":
        raise ModelFormatError(f"{path}: model_type is {model_type!r}, not a SentenceTransformer")
    prompts = raw.get("prompts") or {}
    name = raw.get("default_prompt_name")
    if name is not None and isinstance(prompts, dict) and prompts.get(name):
        raise ConfigError(f"{path}: field 'default_prompt_name' is {name!r}: sentence-transformers prepends "
                          f"{prompts[name]!r} to every text; minibert does not implement prompts yet")
    truncate_dim = raw.get("truncate_dim")
    if truncate_dim is not None and (isinstance(truncate_dim, bool) or not isinstance(truncate_dim, int)
                                     or truncate_dim < 1):
        raise ConfigError(f"{path}: field 'truncate_dim' must be a positive integer or null, found {truncate_dim!r}")
    return truncate_dim
