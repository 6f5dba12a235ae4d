"""The public API: a sentence encoder that embeds texts, as sentence-transformers' SentenceTransformer does.

A sentence encoder is the other half of retrieval: it embeds queries and passages one text at a
time, so passages can be embedded once and compared with a query by cosine similarity (a
cross-encoder then reranks the best few). It runs the same encoder as the cross-encoder, of any
family (`minibert.model.encoder`: BERT, RoBERTa, XLM-R ...), then replaces the head (pooler,
classifier) with a parameter-free pooling of the last hidden states:

    text --tokenize--> [CLS] text [SEP]                 input_ids [T], all token type 0 (RoBERTa: <s> text </s>)
    encoder            the last layer's hidden states   [T, H]
    pooling            cls / max / mean / ...            [H] per mode, concatenated: [D] = [P * H]
    Normalize          x / max(||x||, 1e-12), if listed  [D]

A sentence-transformers directory describes this pipeline in files, read once here (`read_pipeline`):

    modules.json                       the modules, in order: Transformer (its folder, usually ""),
                                       Pooling (a folder such as "1_Pooling"), optionally Normalize.
                                       Any other module (Dense, LayerNorm, custom code) is refused.
    <Pooling>/config.json              the pooling modes
    <Transformer>/sentence_bert_config.json   max_seq_length, do_lower_case
    config_sentence_transformers.json  truncate_dim; a default prompt is refused (not implemented)

A directory without modules.json (a plain HuggingFace BERT) gets what sentence-transformers gives
it: mean pooling, no normalization, and the tokenizer's own max length.

Dimension letters as in minibert.model: B texts in a batch, N tokens of all of them (packed, no
padding), T tokens of one text, H hidden_size, P pooling modes, D = P * H output dimension.
"""

from dataclasses import dataclass
from pathlib import Path, PureWindowsPath

import numpy as np
from tokenizers import normalizers

from minibert.config import load_config, read_json, read_json_object
from minibert.batching import (DEFAULT_MAX_BATCH_TOKENS, check_batch_size, check_max_batch_tokens, check_threads,
                               Progress, distinct, length_or_none, listed, run_forward, stream)
from minibert.errors import ConfigError, ModelFormatError, NumericalError
from minibert.hub import resolve_model_dir
from minibert.model import Batch, default_ops, encoder
from minibert.ranking import as_list, check_rank_args, ranked
from minibert.tokenize import check_text, load_tokenizer
from minibert.weights import load_params


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
# The Transformer module's own config file: the first of these that exists (sentence-transformers' list).
_TRANSFORMER_CONFIG_FILES = (
    "sentence_bert_config.json", "sentence_roberta_config.json", "sentence_distilbert_config.json",
    "sentence_camembert_config.json", "sentence_albert_config.json", "sentence_xlm-roberta_config.json",
    "sentence_xlnet_config.json",
)
NORMALIZE_EPS = 1e-12  # torch.nn.functional.normalize's default eps
_COUNT_EPS = np.float32(1e-9)  # sentence-transformers clamps token counts (and weight sums) to this


# ---------------------------------------------------------------------------------------------
# Pooling: [N, H] packed hidden states -> [B, H] per text. Text b owns rows offsets[b]:offsets[b+1].
#
# sentence-transformers pools a padded [B, T, H] batch through its attention mask; a packed batch
# holds only real tokens, so the mask is all ones and drops out of every formula below.


def cls_pooling(x, batch: Batch):
    # sentence-transformers takes the first unmasked token: with right padding, position 0 ([CLS]).
    return x[batch.offsets[:-1]]                                        # [N, H] -> [B, H]


def max_pooling(x, batch: Batch):
    # sentence-transformers sets padded positions to -inf before the max; there are none here.
    return np.maximum.reduceat(x, batch.offsets[:-1], axis=0)           # [N, H] -> [B, H]


def _token_sums(x, batch: Batch):
    return np.add.reduceat(x, batch.offsets[:-1], axis=0)               # [N, H] -> [B, H], float32


def _token_counts(batch: Batch):
    # A float32 count, clamped as sentence-transformers does: clamp(mask.sum(1), min=1e-9).
    return np.maximum(np.diff(batch.offsets).astype(np.float32), _COUNT_EPS)[:, None]   # [B, 1]


def mean_pooling(x, batch: Batch):
    return _token_sums(x, batch) / _token_counts(batch)                 # [B, H]


def mean_sqrt_len_pooling(x, batch: Batch):
    return _token_sums(x, batch) / np.sqrt(_token_counts(batch))        # [B, H]


def weighted_mean_pooling(x, batch: Batch):
    # Token t of a text weighs t + 1 (sentence-transformers counts from the first unmasked token).
    weights = (batch.positions + 1).astype(np.float32)[:, None]         # [N, 1]
    sums = np.add.reduceat(x * weights, batch.offsets[:-1], axis=0)     # [B, H]
    total = np.add.reduceat(weights, batch.offsets[:-1], axis=0)        # [B, 1]
    return sums / np.maximum(total, _COUNT_EPS)                         # [B, H]


def last_token_pooling(x, batch: Batch):
    return x[batch.offsets[1:] - 1]                                     # [N, H] -> [B, H]


POOLING = {
    "cls": cls_pooling,
    "max": max_pooling,
    "mean": mean_pooling,
    "mean_sqrt_len_tokens": mean_sqrt_len_pooling,
    "weightedmean": weighted_mean_pooling,
    "lasttoken": last_token_pooling,
}


def pool(x, batch: Batch, modes: tuple[str, ...]):
    """[N, H] hidden states -> [B, P * H] sentence embeddings, one block of H per mode, in order."""
    return np.concatenate([POOLING[mode](x, batch) for mode in modes], axis=1)


def l2_normalize(x):
    """torch.nn.functional.normalize(x, p=2, dim=-1): x / max(||x||_2, 1e-12), row by row."""
    norms = np.linalg.norm(x, axis=-1, keepdims=True)                   # [B, D] -> [B, 1]
    return x / np.maximum(norms, np.float32(NORMALIZE_EPS))             # [B, D]


def cos_sim(a, b):
    """Cosine similarity of every row of a [n, D] with every row of b [m, D]: [n, m] float32."""
    return l2_normalize(a) @ l2_normalize(b).T     # as sentence-transformers' util.cos_sim


# ---------------------------------------------------------------------------------------------
# The pipeline, as the model directory describes it


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


def _lowercase_first(tokenizer):
    """sentence_bert_config.json's do_lower_case, as sentence-transformers applies it.

    It puts a Lowercase normalizer in front of the tokenizer's own unless that one is already a
    Lowercase (or a Sequence holding one). A BertNormalizer does not count, even one that
    lowercases: a cased BERT then lowercases but keeps its accents (BertNormalizer strips accents
    only when it lowercases itself).
    """
    current = tokenizer.normalizer
    if isinstance(current, normalizers.Lowercase) or (
            isinstance(current, normalizers.Sequence) and any(isinstance(n, normalizers.Lowercase) for n in current)):
        return
    rest = list(current) if isinstance(current, normalizers.Sequence) else [] if current is None else [current]
    tokenizer.normalizer = normalizers.Sequence([normalizers.Lowercase(), *rest])


# ---------------------------------------------------------------------------------------------
# The public class


class SentenceEncoder:
    """A BERT sentence encoder loaded from a sentence-transformers (or plain HuggingFace) directory.

    Args:
        model_name_or_path: a directory as sentence-transformers saves it (modules.json,
            1_Pooling/config.json, sentence_bert_config.json, config.json, model.safetensors,
            tokenizer.json or vocab.txt); without modules.json, mean pooling is used. Or a Hub id
            "owner/name", as for CrossEncoder (revision, token, cache_folder, local_files_only).
        max_length: tokens per text, special tokens included. Default: sentence_bert_config.json's
            max_seq_length, capped by max_position_embeddings; without one, the tokenizer's
            model_max_length, capped the same way.
        ops: `minibert.ops` (NumPy) or `minibert.kernels` (Numba). Default: Numba when installed,
            unless MINIBERT_NO_NUMBA=1.
        max_batch_tokens: at most this many tokens go through one forward pass.
        threads: cores to encode on, as for CrossEncoder (streams of forward passes, BLAS at one
            thread in each). Default None: as many as BLAS's own setting.
    """

    def __init__(self, model_name_or_path, max_length=None, ops=None, max_batch_tokens=DEFAULT_MAX_BATCH_TOKENS,
                 threads=None, *, revision=None, token=None, cache_folder=None, local_files_only=False):
        path = resolve_model_dir(model_name_or_path, revision=revision, token=token, cache_folder=cache_folder,
                                 local_files_only=local_files_only)
        self.path = path
        self.pipeline = read_pipeline(path)
        encoder_dir = self.pipeline.encoder_dir
        if not (encoder_dir / "config.json").is_file():
            raise ModelFormatError(f"{encoder_dir}: no config.json in the model directory")
        self.config = load_config(encoder_dir)
        declared = self.pipeline.pooling_dimension
        if declared is not None and declared != self.config.hidden_size:
            raise ConfigError(f"{self.pipeline.source}: field 'word_embedding_dimension' is {declared}, but "
                              f"{self.config.source} has hidden_size {self.config.hidden_size}")
        if max_length is None and self.pipeline.max_seq_length is not None:
            # Capped by the position table. (sentence-transformers 6.2 does not cap an explicit
            # max_seq_length: a longer text then fails inside the embedding lookup.)
            max_length = min(self.pipeline.max_seq_length, self.config.max_tokens)
        self.tokenizer = load_tokenizer(encoder_dir, self.config, max_length)
        if self.pipeline.do_lower_case:
            _lowercase_first(self.tokenizer.tokenizer)
        self.params = load_params(encoder_dir, self.config, head=False)
        self.ops = ops if ops is not None else default_ops()
        check_max_batch_tokens(max_batch_tokens, self.max_seq_length)
        check_threads(threads)
        self.max_batch_tokens, self.threads = max_batch_tokens, threads

    @property
    def max_seq_length(self) -> int:
        """Tokens per text, special tokens included (longer texts are truncated)."""
        return self.tokenizer.max_length

    def get_embedding_dimension(self) -> int:
        """D, the length of one embedding (after truncate_dim)."""
        dimension = len(self.pipeline.pooling_modes) * self.config.hidden_size
        return min(dimension, self.pipeline.truncate_dim or dimension)

    def __repr__(self):
        p = self.pipeline
        return (f"SentenceEncoder({str(self.path)!r}, layers={self.config.num_hidden_layers}, "
                f"hidden={self.config.hidden_size}, pooling={'+'.join(p.pooling_modes)}, normalize={p.normalize}, "
                f"dimension={self.get_embedding_dimension()}, max_seq_length={self.max_seq_length}, "
                f"ops={self.ops.__name__})")

    def encode(self, texts, batch_size=32, normalize=False, show_progress_bar=False):
        """Embeddings of texts, in input order: float32 [n, D]; a single str gives [D].

        The pipeline's Normalize module (when modules.json lists one) always applies;
        normalize=True normalizes once more, at the end, as sentence-transformers'
        normalize_embeddings does (after truncate_dim).
        """
        self._check_encode_args(batch_size, normalize)
        single = isinstance(texts, str)
        texts = [texts] if single else as_list(texts, "a str or a list of str")
        with Progress(show_progress_bar, "embedding", "texts", len(texts)) as progress:
            embeddings = self._embeddings(texts, 0, batch_size, normalize, progress)
        return embeddings[0] if single else embeddings

    def encode_iter(self, texts, batch_size=32, normalize=False, show_progress_bar=False):
        """encode for an iterable of texts of any length: yields each text's embedding, float32 [D], in order.

        Reads the texts a window at a time (1024 texts, or fewer holding 16M characters) and
        embeds each window as encode would, so memory stays bounded whatever the number of texts.
        show_progress_bar counts the texts embedded (of len(texts) when it has a length).
        """
        self._check_encode_args(batch_size, normalize)
        progress = Progress(show_progress_bar, "embedding", "texts", length_or_none(texts)) if show_progress_bar else None
        return stream(texts, lambda text: len(text) if isinstance(text, str) else 0,
                      lambda window, first, bar: self._embeddings(window, first, batch_size, normalize, bar), "str",
                      progress)

    def _check_encode_args(self, batch_size, normalize):
        check_batch_size(batch_size)
        if not isinstance(normalize, bool):
            raise ConfigError(f"normalize must be True or False, found {normalize!r}")

    def _embeddings(self, texts: list, first_index: int, batch_size: int, normalize: bool, progress=None):
        """Embeddings [n, D] of a list of texts; first_index: the index of texts[0], for messages."""
        texts = [check_text(text, first_index + i) for i, text in enumerate(texts)]  # every text, before any work
        texts, where = distinct(texts)   # a repeated text is embedded once: duplicates get exactly the same embedding
        embeddings = self._embed(texts, batch_size, progress, where)[where]   # [n, P * H]
        # The order of sentence-transformers' encode: modules (Normalize among them), truncate, normalize.
        embeddings = embeddings[:, :self.get_embedding_dimension()]                      # [n, D]
        if normalize:
            embeddings = l2_normalize(embeddings)
        if not np.isfinite(embeddings).all():
            bad = first_index + np.flatnonzero(~np.isfinite(embeddings).all(axis=1))
            raise NumericalError(f"non-finite embeddings (NaN or infinity) for texts {listed(bad)}: the model's "
                                 "weights or the input overflow float32")
        return embeddings

    def similarity(self, a, b):
        """Cosine similarity of every row of a [n, D] with every row of b [m, D]: [n, m] float32."""
        return cos_sim(np.atleast_2d(a), np.atleast_2d(b))

    def rank(self, query, documents, top_k=None, return_documents=False, batch_size=32, show_progress_bar=False):
        """Documents by cosine similarity to the query, best first (ties by corpus_id).

        The same output as CrossEncoder.rank: [{"corpus_id", "score"[, "text"]}].
        """
        documents = check_rank_args(query, documents, top_k)
        for index, document in enumerate(documents):
            check_text(document, index, "document")
        if not documents:
            return []
        # Each distinct document is scored once: the similarity product too, so that duplicates tie exactly.
        unique, where = distinct(documents)
        query_embedding = self.encode([query], batch_size=batch_size)                    # [1, D]
        document_embeddings = self.encode(documents, batch_size=batch_size,              # [n, D]
                                          show_progress_bar=show_progress_bar)           # (the bar counts all n)
        firsts = np.unique(where, return_index=True)[1]                                  # [m] first row of each
        scores = cos_sim(query_embedding, document_embeddings[firsts])[0][where]         # [n]
        return ranked(scores, documents, top_k, return_documents)

    def _embed(self, texts: list[str], batch_size: int, progress=None, where=None):
        """Distinct, checked texts -> pooled (and, if listed, normalized) embeddings [n, P * H]."""
        p = self.pipeline
        out = np.empty((len(texts), len(p.pooling_modes) * self.config.hidden_size), dtype=np.float32)

        def embed(batch):
            hidden = encoder(self.params, self.config, batch, ops=self.ops)             # [N, H]
            pooled = pool(hidden, batch, p.pooling_modes)                               # [B, P * H]
            return l2_normalize(pooled) if p.normalize else pooled

        for start, end, embedded in run_forward(texts, self.tokenizer.encode_texts, embed, batch_size,
                                                self.max_batch_tokens, self.threads, self.ops.limit_threads,
                                                progress, where):
            out[start:end] = embedded
        return out
