"""sentence-transformers' model directories: modules.json and the files its modules point to.

sentence-transformers saves a model, SentenceTransformer or CrossEncoder alike, as a chain of
modules: one reader of that format serves minibert's SentenceEncoder and CrossEncoder (`read_pipeline`).

    modules.json                        the modules, in order: first a Transformer (its folder, usually
                                        ""), then the modules that turn its output into an embedding or a
                                        score: Pooling, Dense, LayerNorm, Normalize, Dropout (others refused)
    config_sentence_transformers.json   model_type (SentenceTransformer or CrossEncoder), prompts,
                                        default_prompt_name, activation_fn (CrossEncoder), truncate_dim
    <Transformer>/sentence_bert_config.json   transformer_task, and from older saves max_seq_length,
                                        do_lower_case
    <module>/config.json                each module's settings; Dense and LayerNorm keep their weights
                                        beside it (model.safetensors, else pytorch_model.bin)

The Transformer's task says what it hands the chain: `feature-extraction` (a bare encoder, AutoModel:
its last hidden states, "token_embeddings") or `sequence-classification` (the *ForSequenceClassification,
its logits: the scores themselves). Every module then reads and writes one entry of sentence-transformers'
feature dict: Pooling turns token_embeddings into the sentence_embedding, Dense, LayerNorm and Normalize
transform it, and a CrossEncoder's last module (a Dense) writes the "scores".

A directory without modules.json gets what sentence-transformers gives it: a SentenceEncoder mean
pooling and no normalization; a CrossEncoder its *ForSequenceClassification head (read_pipeline returns
None for it). As sentence-transformers does, a directory whose config_sentence_transformers.json does
not say "CrossEncoder" is a SentenceTransformer, and a CrossEncoder reads it as if it had no
modules.json. The math of the modules is in minibert/models/chain.py.
"""

from dataclasses import dataclass
from pathlib import Path, PureWindowsPath

from minibert.errors import ConfigError, ModelFormatError, show
from minibert.formats.config import read_json, read_json_object

SENTENCE_TRANSFORMER, CROSS_ENCODER = "SentenceTransformer", "CrossEncoder"
FEATURE_EXTRACTION, SEQUENCE_CLASSIFICATION = "feature-extraction", "sequence-classification"
TEXT_GENERATION = "text-generation"
# The feature-dict entries the modules pass along.
TOKEN_EMBEDDINGS, SENTENCE_EMBEDDING, SCORES = "token_embeddings", "sentence_embedding", "scores"
CAUSAL_LOGITS = "causal_logits"   # a text-generation Transformer's next-token logits at the last position
MESSAGE_FORMATS = ("flat", "structured")   # a chat message's content: the text, or [{"type": "text", ...}]

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
# torch activations a Dense module (or a CrossEncoder's stored activation_fn) may name, by class name, as
# sentence-transformers instantiates them: with no arguments (GELU is then the exact erf GELU).
ACTIVATIONS = ("Identity", "Tanh", "GELU", "ReLU", "Sigmoid")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")   # a module's weights, in this order


@dataclass(frozen=True)
class Pooling:
    name: str                   # its folder (modules.json "path"): the stage it makes is named so
    modes: tuple[str, ...]      # in concatenation order
    include_prompt: bool        # False: a prompt's tokens are left out of the pooling
    dimension: int | None       # the token embedding width it declares (= hidden_size)
    source: str


@dataclass(frozen=True)
class Dense:
    name: str
    in_features: int
    out_features: int
    bias: bool
    activation: str             # one of ACTIVATIONS
    output: str                 # the feature it writes: SENTENCE_EMBEDDING, or SCORES for a cross-encoder's last
    weights: Path               # its weight file
    source: str


@dataclass(frozen=True)
class LayerNorm:
    name: str
    dimension: int              # nn.LayerNorm(dimension), eps 1e-5, with weight and bias
    weights: Path
    source: str


@dataclass(frozen=True)
class Normalize:
    name: str


@dataclass(frozen=True)
class Dropout:
    name: str                   # the identity at inference


@dataclass(frozen=True)
class LogitScore:
    """A decoder reranker's score from the next-token logits at the last position: logit(true) - logit(false),
    or logit(true) alone when there is no false token (cross_encoder/modules/logit_score.py)."""
    name: str
    true_token_id: int
    false_token_id: int | None
    source: str

    @property
    def token_ids(self) -> tuple[int, ...]:
        return (self.true_token_id,) if self.false_token_id is None else (self.true_token_id, self.false_token_id)


@dataclass(frozen=True)
class Pipeline:
    """What a sentence-transformers directory asks for, read and validated at load."""
    model_type: str                 # SENTENCE_TRANSFORMER or CROSS_ENCODER
    encoder_dir: Path               # the Transformer module's folder: config.json, checkpoint, tokenizer
    task: str                       # the Transformer's task: FEATURE_EXTRACTION or SEQUENCE_CLASSIFICATION
    modules: tuple                  # the modules after the Transformer, in order (Pooling, Dense, ...)
    max_seq_length: int | None      # tokens per input; None: the tokenizer's model_max_length
    do_lower_case: bool             # lowercase texts before the tokenizer's own normalization
    prompts: dict                   # name -> text, prepended to a query (CrossEncoder) or a text
    default_prompt_name: str | None
    activation_fn: str | None       # CrossEncoder: the activation it stores (one of ACTIVATIONS), if any
    truncate_dim: int | None        # SentenceTransformer: keep the first truncate_dim dimensions
    source: str                     # modules.json (or a description of the default), for messages
    # A pair goes through the tokenizer's chat template as query / document messages (formats/chat.py) in this
    # message format ("flat" or "structured"); None: the tokenizer's own pair template.
    message_format: str | None = None

    @property
    def pooling(self) -> Pooling | None:
        return next((m for m in self.modules if isinstance(m, Pooling)), None)

    @property
    def pooling_modes(self) -> tuple[str, ...]:
        return self.pooling.modes if self.pooling else ()

    @property
    def normalize(self) -> bool:
        """A Normalize module in the chain."""
        return any(isinstance(m, Normalize) for m in self.modules)

    def prompt(self, prompt_name: str | None = None, prompt: str | None = None) -> str:
        """The text put before each query (a CrossEncoder's) or text (a SentenceTransformer's), as
        sentence-transformers resolves it: an explicit prompt, else the named one, else the default one;
        "" for none. A prompt that the pooling would have to leave out (include_prompt false) is refused."""
        if prompt is None and prompt_name is not None:
            if prompt_name not in self.prompts:
                raise ConfigError(f"prompt_name {prompt_name!r} is not one of this model's prompts "
                                  f"({', '.join(map(repr, self.prompts)) or 'it has none'})")
            prompt = self.prompts[prompt_name]
        elif prompt is None:
            prompt = self.prompts.get(self.default_prompt_name, "") if self.default_prompt_name else ""
        if not isinstance(prompt, str):
            raise ConfigError(f"prompt must be a str, found {type(prompt).__name__}")
        if prompt and self.pooling is not None and not self.pooling.include_prompt:
            raise ConfigError(f"{self.pooling.source}: field 'include_prompt' is false: the pooling leaves the "
                              "prompt's tokens out, which minibert does not implement; pass prompt=\"\" for none")
        return prompt


def read_pipeline(model_dir: str | Path, *, cross_encoder: bool) -> Pipeline | None:
    """Read modules.json and the files it points to, for a SentenceEncoder (cross_encoder=False) or a
    CrossEncoder. Without modules.json: mean pooling for a SentenceEncoder, None for a CrossEncoder (its
    family's *ForSequenceClassification head)."""
    model_dir = Path(model_dir)
    modules_path = model_dir / "modules.json"
    if not modules_path.is_file():
        if cross_encoder:
            return None
        # sentence-transformers' default for a plain HuggingFace model: Transformer + mean Pooling.
        # It then reads no sentence_bert_config.json and no config_sentence_transformers.json.
        source = f"{model_dir} (no modules.json: mean pooling, as sentence-transformers)"
        return Pipeline(SENTENCE_TRANSFORMER, model_dir, FEATURE_EXTRACTION, (Pooling("pooling", ("mean",), True, None,
                        source),), None, False, {}, None, None, None, source)

    model_type = read_model_type(model_dir)
    if cross_encoder and model_type != CROSS_ENCODER:
        # sentence-transformers' CrossEncoder leaves a SentenceTransformer's modules aside and reads the directory
        # as a *ForSequenceClassification: its classifier, if the checkpoint has one (else a new random head,
        # which minibert refuses)
        return None
    if not cross_encoder and model_type != SENTENCE_TRANSFORMER:
        raise ModelFormatError(_wrong_kind(model_dir))
    entries = _read_modules(modules_path)
    kind, transformer = entries[0] if entries else (None, {})
    if kind != "Transformer":
        raise ModelFormatError(f"{modules_path}: the first module must be a sentence-transformers Transformer, found "
                               f"{show(transformer.get('type', 'nothing'))}")
    encoder_dir = model_dir / transformer["path"]
    task, max_seq_length, do_lower_case, message_format = _read_transformer_config(encoder_dir)
    modules = tuple(_read_module(model_dir, kind, entry, modules_path) for kind, entry in entries[1:])
    extras = _read_model_config(model_dir / "config_sentence_transformers.json", model_type)
    pipeline = Pipeline(model_type, encoder_dir, task, modules, max_seq_length, do_lower_case, **extras,
                        source=str(modules_path), message_format=message_format)
    _check_chain(pipeline)
    return pipeline


def read_model_type(model_dir: str | Path) -> str:
    """config_sentence_transformers.json's model_type; SentenceTransformer when the file or field is missing."""
    path = Path(model_dir) / "config_sentence_transformers.json"
    model_type = read_json_object(path, ConfigError).get("model_type") if path.is_file() else None
    if model_type is None:
        return SENTENCE_TRANSFORMER
    if model_type not in (SENTENCE_TRANSFORMER, CROSS_ENCODER):
        raise ModelFormatError(f"{path}: model_type is {show(model_type)}; minibert reads "
                               f"{SENTENCE_TRANSFORMER!r} and {CROSS_ENCODER!r} directories")
    return model_type


def is_sentence_encoder(model_dir: str | Path) -> bool:
    """True when model_dir is a sentence-transformers SentenceTransformer: a modules.json whose
    config_sentence_transformers.json does not say CrossEncoder (a missing model_type is a
    SentenceTransformer, as sentence-transformers reads it)."""
    model_dir = Path(model_dir)
    if not (model_dir / "modules.json").is_file():
        return False
    _read_modules(model_dir / "modules.json")   # a broken modules.json is named now, not later
    return read_model_type(model_dir) == SENTENCE_TRANSFORMER


def stored_activation(pipeline: Pipeline | None, config_json: Path, num_labels: int) -> str:
    """The activation sentence-transformers' CrossEncoder applies by default (one of ACTIVATIONS): the one its
    config_sentence_transformers.json stores, else the one an older save stored in config.json, else Sigmoid
    for one label and Identity for several."""
    if pipeline is not None and pipeline.activation_fn is not None:
        return pipeline.activation_fn
    if pipeline is None:   # a save of sentence-transformers 4 / 5 (or earlier) keeps it in the model's config.json
        raw = read_json_object(config_json, ConfigError) if config_json.is_file() else {}
        saved = raw.get("sentence_transformers")
        stored = (saved.get("activation_fn") if isinstance(saved, dict) else None) \
            or raw.get("sbert_ce_default_activation_function")
        if stored is not None:
            return activation_name(stored, config_json, "activation_fn")
    return "Sigmoid" if num_labels == 1 else "Identity"


def _wrong_kind(model_dir: Path) -> str:
    return (f"{model_dir / 'config_sentence_transformers.json'}: model_type is 'CrossEncoder', not a sentence "
            "encoder; load it with minibert.CrossEncoder (`minibert score`, `rank`)")


def _read_modules(path: Path) -> list[tuple[str, dict]]:
    """modules.json -> [(class name, entry)]; a module outside sentence-transformers is refused."""
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
        if package.split(".")[0] != "sentence_transformers":
            raise ModelFormatError(f"{path}: module {index} is {module['type']!r}, custom code outside "
                                   "sentence-transformers; minibert runs sentence-transformers' own modules only")
        modules.append((name, module))
    return modules


def _read_module(model_dir: Path, kind: str, entry: dict, modules_path: Path):
    """One module after the Transformer: its config (and where its weights are), validated."""
    folder, name = model_dir / entry["path"], entry["path"]
    where = f"{modules_path}: module {name!r} ({kind})"
    if kind == "Pooling":
        return Pooling(name, *read_pooling_config(folder / "config.json"), source=str(folder / "config.json"))
    if kind in ("Normalize", "Dropout"):
        # The folder is often absent (git keeps no empty folders); then the defaults apply.
        path = folder / "config.json"
        raw = read_json_object(path, ModelFormatError) if path.is_file() else {}
        for key in ("module_input_name", "module_output_name"):
            if raw.get(key) not in (None, SENTENCE_EMBEDDING):
                raise ConfigError(f"{path}: field {key!r} is {show(raw[key])}; minibert's {kind} acts on the "
                                  f"sentence embedding ({SENTENCE_EMBEDDING!r})")
        return Normalize(name) if kind == "Normalize" else Dropout(name)
    if kind == "Dense":
        return _read_dense(folder, name)
    if kind == "LogitScore":
        return _read_logit_score(folder, name)
    if kind == "LayerNorm":
        raw = _module_config(folder, where)
        return LayerNorm(name, _positive_int(raw, "dimension", folder / "config.json"), _weights(folder, where),
                         str(folder / "config.json"))
    raise ModelFormatError(f"{where}: minibert runs the sentence-transformers modules Transformer, Pooling, Dense, "
                           "LayerNorm, Normalize, Dropout and LogitScore" + (" (a Router, routing inputs between sub-modules, "
                                                                 "is not implemented)" if kind == "Router" else ""))


def _read_logit_score(folder: Path, name: str) -> LogitScore:
    path = folder / "config.json"
    raw = _module_config(folder, f"module {name!r} (LogitScore)")
    true_id, false_id = raw.get("true_token_id"), raw.get("false_token_id")
    if isinstance(true_id, bool) or not isinstance(true_id, int) or true_id < 0:
        raise ConfigError(f"{path}: field 'true_token_id' must be a token id, found {show(true_id)}")
    if false_id is not None and (isinstance(false_id, bool) or not isinstance(false_id, int) or false_id < 0):
        raise ConfigError(f"{path}: field 'false_token_id' must be a token id or null, found {show(false_id)}")
    if raw.get("module_input_name", CAUSAL_LOGITS) != CAUSAL_LOGITS:
        raise ConfigError(f"{path}: field 'module_input_name' is {show(raw['module_input_name'])}; minibert's "
                          f"LogitScore reads the Transformer's {CAUSAL_LOGITS!r}")
    return LogitScore(name, true_id, false_id, str(path))


def causal_reranker(model_dir: Path, true_token_id: int | None, false_token_id: int | None) -> Pipeline:
    """What sentence-transformers' CrossEncoder makes of a directory without modules.json whose model is a
    *ForCausalLM: a text-generation Transformer (its chat template, if the tokenizer has one) and a LogitScore of
    the tokens "yes" and "no", whose ids the caller looked up in the vocabulary (None: not in it)."""
    if true_token_id is None or false_token_id is None:
        raise ConfigError(f"{model_dir}: a *ForCausalLM directory without modules.json is scored, as "
                          "sentence-transformers scores it, from the logits of the tokens 'yes' and 'no', but "
                          "the tokenizer has no such token; save the model with a LogitScore module that names "
                          "its tokens")
    source = f"{model_dir} (no modules.json, a *ForCausalLM: LogitScore('yes', 'no'), as sentence-transformers)"
    return Pipeline(CROSS_ENCODER, model_dir, TEXT_GENERATION, (LogitScore("logit_score", true_token_id,
                    false_token_id, source),), None, False, {}, None, None, None, source)


def _read_dense(folder: Path, name: str) -> Dense:
    path = folder / "config.json"
    raw = _module_config(folder, f"module {name!r} (Dense)")
    if raw.get("use_residual"):
        raise ConfigError(f"{path}: field 'use_residual' is true; minibert's Dense implements no residual")
    for key in ("in_features", "out_features"):
        _positive_int(raw, key, path)
    if not isinstance(raw.get("bias", True), bool):
        raise ConfigError(f"{path}: field 'bias' must be true or false, found {show(raw['bias'])}")
    # sentence-transformers' Dense defaults to nn.Tanh when the file names no activation.
    activation = activation_name(raw.get("activation_function", "torch.nn.modules.activation.Tanh"), path,
                                 "activation_function")
    if raw.get("module_input_name", SENTENCE_EMBEDDING) != SENTENCE_EMBEDDING:
        raise ConfigError(f"{path}: field 'module_input_name' is {show(raw['module_input_name'])}; minibert's Dense "
                          f"reads the sentence embedding ({SENTENCE_EMBEDDING!r})")
    output = raw.get("module_output_name", raw.get("module_input_name", SENTENCE_EMBEDDING))
    if output not in (SENTENCE_EMBEDDING, SCORES):
        raise ConfigError(f"{path}: field 'module_output_name' is {show(output)}; minibert's Dense writes "
                          f"{SENTENCE_EMBEDDING!r} or {SCORES!r}")
    return Dense(name, raw["in_features"], raw["out_features"], raw.get("bias", True), activation, output,
                 _weights(folder, f"module {name!r} (Dense)"), str(path))


def activation_name(path_name, source, field: str) -> str:
    """A torch activation's class path ("torch.nn.modules.activation.GELU", "torch.nn.GELU") -> "GELU"."""
    name = path_name.rpartition(".")[2] if isinstance(path_name, str) else None
    if not isinstance(path_name, str) or not path_name.startswith("torch.") or name not in ACTIVATIONS:
        raise ConfigError(f"{source}: field {field!r} is {show(path_name)}; minibert implements the torch.nn "
                          f"activations {', '.join(ACTIVATIONS)}")
    return name


def _module_config(folder: Path, where: str) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise ModelFormatError(f"{path}: file not found ({where} is listed in modules.json)")
    return read_json_object(path, ModelFormatError)


def _weights(folder: Path, where: str) -> Path:
    path = next((folder / name for name in WEIGHT_FILES if (folder / name).is_file()), None)
    if path is None:
        raise ModelFormatError(f"{folder}: no weights for {where}: expected {' or '.join(WEIGHT_FILES)}")
    return path


def _positive_int(raw: dict, key: str, path: Path) -> int:
    value = raw.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{path}: field {key!r} must be a positive integer, found {show(value)}")
    return value


def read_pooling_config(path: Path) -> tuple[tuple[str, ...], bool, int | None]:
    """<Pooling>/config.json -> (the pooling modes in concatenation order, include_prompt, the declared dimension).

    Two formats, as sentence-transformers reads them: "pooling_mode" (a mode name or a list of
    them, in the listed order), or the older "pooling_mode_*" booleans (concatenated in the fixed
    order of _LEGACY_POOLING_KEYS; none true means mean). "pooling_mode" wins when both are given.
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
    include_prompt = raw.get("include_prompt", True)
    if not isinstance(include_prompt, bool):
        raise ConfigError(f"{path}: field 'include_prompt' must be true or false, found {show(include_prompt)}")
    dimension = raw.get("embedding_dimension", raw.get("word_embedding_dimension"))
    if dimension is not None and (isinstance(dimension, bool) or not isinstance(dimension, int)):
        raise ConfigError(f"{path}: field 'word_embedding_dimension' must be an integer, found {dimension!r}")
    return modes, include_prompt, dimension


# What each task's Transformer hands the chain, as sentence_bert_config.json's modality_config and
# module_output_name say it (the defaults of sentence-transformers 6 when the file leaves them out).
_TASK_OUTPUTS = {FEATURE_EXTRACTION: ("last_hidden_state", TOKEN_EMBEDDINGS), SEQUENCE_CLASSIFICATION: ("logits", SCORES),
                 TEXT_GENERATION: ("logits", CAUSAL_LOGITS)}


def _read_transformer_config(encoder_dir: Path) -> tuple[str, int | None, bool, str | None]:
    """(task, max_seq_length, do_lower_case, message format) from sentence_bert_config.json (or an older name of
    it); (feature-extraction, None, False, None) without one."""
    path = next((encoder_dir / name for name in _TRANSFORMER_CONFIG_FILES if (encoder_dir / name).is_file()), None)
    if path is None:
        return FEATURE_EXTRACTION, None, False, None
    raw = read_json_object(path, ConfigError)
    task = raw.get("transformer_task", FEATURE_EXTRACTION)
    if task not in _TASK_OUTPUTS:
        raise ConfigError(f"{path}: transformer_task is {show(task)}; minibert runs the Transformer tasks "
                          f"{', '.join(map(repr, _TASK_OUTPUTS))}")
    message_format = _check_modalities(raw, task, path)
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
    return task, max_seq_length, do_lower_case, message_format


def _check_modalities(raw: dict, task: str, path: Path) -> str | None:
    """Text in, the task's own output out, and a chat template's 'message' modality for a text-generation
    Transformer (its message format returned; None without one): anything else (images, another output) is
    named."""
    method_output, module_output = _TASK_OUTPUTS[task]
    modalities = raw.get("modality_config", {"text": {"method": "forward", "method_output_name": method_output}})
    allowed = {"text", "message"} if task == TEXT_GENERATION else {"text"}
    entries = modalities.values() if isinstance(modalities, dict) else ()
    if not isinstance(modalities, dict) or "text" not in modalities or not set(modalities) <= allowed \
            or not all(isinstance(e, dict) and e.get("method", "forward") == "forward"
                       and e.get("method_output_name", method_output) == method_output for e in entries):
        raise ConfigError(f"{path}: field 'modality_config' is {show(modalities)}; minibert runs text through the "
                          f"model's forward, reading {method_output!r} (a chat template's 'message' modality "
                          f"for a {TEXT_GENERATION!r} Transformer only)")
    if raw.get("module_output_name", module_output) != module_output:
        raise ConfigError(f"{path}: field 'module_output_name' is {show(raw['module_output_name'])}; the "
                          f"{task} Transformer writes {module_output!r}")
    if "message" not in modalities:
        return None
    message_format = modalities["message"].get("format", "structured")
    if message_format not in MESSAGE_FORMATS:
        raise ConfigError(f"{path}: modality_config's message format is {show(message_format)}; sentence-transformers "
                          f"writes {' or '.join(map(repr, MESSAGE_FORMATS))}")
    return message_format


def _read_model_config(path: Path, model_type: str) -> dict:
    """prompts, default_prompt_name, activation_fn and truncate_dim from config_sentence_transformers.json."""
    raw = read_json_object(path, ConfigError) if path.is_file() else {}
    prompts = raw.get("prompts") or {}
    if not isinstance(prompts, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in prompts.items()):
        raise ConfigError(f"{path}: field 'prompts' must map prompt names to strings, found {show(prompts)}")
    name = raw.get("default_prompt_name")
    if name is not None and name not in prompts:
        raise ConfigError(f"{path}: field 'default_prompt_name' is {show(name)}, which is not in 'prompts' "
                          f"({', '.join(map(repr, prompts)) or 'none'})")
    activation = raw.get("activation_fn") if model_type == CROSS_ENCODER else None
    if activation is not None:
        activation = activation_name(activation, path, "activation_fn")
    truncate_dim = raw.get("truncate_dim") if model_type == SENTENCE_TRANSFORMER else None
    if truncate_dim is not None and (isinstance(truncate_dim, bool) or not isinstance(truncate_dim, int)
                                     or truncate_dim < 1):
        raise ConfigError(f"{path}: field 'truncate_dim' must be a positive integer or null, found {truncate_dim!r}")
    return {"prompts": dict(prompts), "default_prompt_name": name, "activation_fn": activation,
            "truncate_dim": truncate_dim}


def _check_chain(p: Pipeline) -> None:
    """The modules make sense in this order: what each reads exists, and the output is the one the model needs."""
    if p.task == SEQUENCE_CLASSIFICATION:
        if p.model_type != CROSS_ENCODER or p.modules:
            raise ModelFormatError(f"{p.encoder_dir / 'sentence_bert_config.json'}: transformer_task is "
                                   f"{SEQUENCE_CLASSIFICATION!r}: a Transformer that makes the scores itself is read "
                                   "as a CrossEncoder's only module")
        return
    if p.task == TEXT_GENERATION:
        if p.model_type != CROSS_ENCODER or len(p.modules) != 1 or not isinstance(p.modules[0], LogitScore):
            raise ModelFormatError(f"{p.source}: a {TEXT_GENERATION!r} Transformer is read as a CrossEncoder "
                                   "followed by one LogitScore module (a decoder reranker)")
        return
    if any(isinstance(m, LogitScore) for m in p.modules):
        raise ModelFormatError(f"{p.source}: a LogitScore module reads a {TEXT_GENERATION!r} Transformer's "
                               f"{CAUSAL_LOGITS!r}; this Transformer's task is {p.task!r}")
    produced = TOKEN_EMBEDDINGS
    for module in p.modules:
        if produced == SCORES:
            raise ModelFormatError(f"{p.source}: module {module.name!r} comes after the scores were written")
        if isinstance(module, Pooling):
            if produced != TOKEN_EMBEDDINGS:
                raise ModelFormatError(f"{p.source}: module {module.name!r} (Pooling) needs token embeddings; "
                                       "only one Pooling, right after the Transformer, is implemented")
            produced = SENTENCE_EMBEDDING
        elif produced == TOKEN_EMBEDDINGS:
            raise ModelFormatError(f"{p.source}: module {module.name!r} needs the sentence embedding, but no Pooling "
                                   "comes before it")
        elif isinstance(module, Dense):
            produced = module.output
    wanted = SCORES if p.model_type == CROSS_ENCODER else SENTENCE_EMBEDDING
    if produced != wanted:
        raise ModelFormatError(f"{p.source}: the modules end with {produced!r}; a {p.model_type}'s modules must end "
                               f"with {wanted!r}" + (" (its last Dense writes module_output_name 'scores')"
                                                      if wanted == SCORES else ""))
