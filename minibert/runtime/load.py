"""A model directory, read once: its family, config, parameters and tokenizer.

    modules.json         -> sentence-transformers' modules, if the directory has them (formats/sentence_transformers.py)
    config.json          -> the family (the registry, by model_type) and its Config
    tokenizer files      -> the tokenizer class AutoTokenizer would pick, truncating to max_length
    the checkpoint       -> the family's parameter tree, checked tensor by tensor; with modules, the encoder
                            alone and each module's own weights (a models.chain.Chain)

CrossEncoder and SentenceEncoder are both a LoadedModel: a name that is a Hub id resolved to a directory
(minibert/formats/hub.py), read by `load`, and a Runner for its forward passes.
"""

from dataclasses import dataclass
from pathlib import Path

from minibert.errors import ConfigError, ModelFormatError
from minibert.formats import sentence_transformers as st
from minibert.formats.chat import (
    ChatPairTokenizer,
    has_chat_template,
    read_chat_tokenizer,
)
from minibert.formats.checkpoint import find_checkpoint, read_checkpoint
from minibert.formats.config import read_json_object
from minibert.formats.hub import resolve_model_dir
from minibert.formats.tokenizer import PairTokenizer, lowercase_first, read_tokenizer
from minibert.models import chain, config_from_dict, family_of
from minibert.models.family import Family
from minibert.models.params import params_from_tensors, tree_from_tensors
from minibert.runtime.runner import Runner


@dataclass(frozen=True)
class Loaded:
    path: Path                 # the model directory
    family: Family
    config: object             # the family's Config
    params: object             # the family's parameter tree, with its head; or a chain.Chain
    tokenizer: PairTokenizer | ChatPairTokenizer
    pipeline: st.Pipeline | None   # sentence-transformers' modules; None: the family's own head
    width: int                 # what it gives per input: scores per pair (a cross-encoder), the embedding width


class LoadedModel:
    """What CrossEncoder and SentenceEncoder share: a model directory (or a Hub id's snapshot) read once, and
    the Runner that runs its forward passes (minibert/runtime/runner.py: the op set, cores, batch budget)."""

    def __init__(self, model_name_or_path, *, cross_encoder: bool, max_length, ops, max_batch_tokens, threads,
                 revision, token, cache_folder, local_files_only, widen=False):
        path = resolve_model_dir(model_name_or_path, revision=revision, token=token, cache_folder=cache_folder,
                                 local_files_only=local_files_only)
        model = load(path, cross_encoder=cross_encoder, max_length=max_length, widen=widen)
        self.path, self.family, self.config, self.params, self.tokenizer, self.pipeline = (
            model.path, model.family, model.config, model.params, model.tokenizer, model.pipeline)
        self.width = model.width
        self.runner = Runner(ops, threads, max_batch_tokens, self.tokenizer.max_length)

    ops = property(lambda self: self.runner.ops)
    threads = property(lambda self: self.runner.threads)
    max_batch_tokens = property(lambda self: self.runner.max_batch_tokens)


def load(model_dir, *, cross_encoder: bool, max_length: int | None = None, widen: bool = False) -> Loaded:
    """Read `model_dir` as a cross-encoder (pairs in, scores out) or a sentence encoder (texts in, embeddings
    out): its sentence-transformers modules if it has them, then config, tokenizer and checkpoints.

    A cross-encoder without modules.json (or whose only module is a sequence-classification Transformer) is
    its family's *ForSequenceClassification, head included; a sentence encoder without modules.json mean-pools
    its encoder. max_length: tokens per input, special tokens included (default: sentence_bert_config.json's
    max_seq_length capped by the positions, else the tokenizer's model_max_length). widen: a bfloat16 or
    float16 checkpoint's matrices are widened to float32 at load, instead of kept at their stored precision
    and widened for each product (models/params.py: the same numbers, twice the memory, faster products).
    """
    model_dir = Path(model_dir)
    pipeline = st.read_pipeline(model_dir, cross_encoder=cross_encoder)
    encoder_dir = model_dir if pipeline is None else pipeline.encoder_dir
    if not (encoder_dir / "config.json").is_file():
        raise ModelFormatError(f"{encoder_dir}: no config.json in the model directory")
    config = load_config(encoder_dir)
    if max_length is None and pipeline is not None and pipeline.max_seq_length is not None:
        # Capped by the position table. (sentence-transformers does not cap an explicit max_seq_length:
        # a longer text then fails inside the embedding lookup.)
        max_length = min(pipeline.max_seq_length, config.max_tokens)
    if family_of(config).decoder:
        tokenizer, pipeline = load_decoder_input(encoder_dir, config, pipeline, cross_encoder, max_length)
    else:
        tokenizer = load_tokenizer(encoder_dir, config, max_length)
    own_head = pipeline is None or pipeline.task == st.SEQUENCE_CLASSIFICATION
    # type_vocab_size 0: the family has no token type embeddings (DistilBERT) and never reads the ids
    if cross_encoder and tokenizer.token_types and 0 < config.type_vocab_size < 2:
        raise ConfigError(
            f"{config.source}: type_vocab_size is {config.type_vocab_size}, but this model's tokenizer gives the "
            "passage token type 1, so a cross-encoder needs at least 2 token types (query = 0, passage = 1)")
    if pipeline is not None and pipeline.do_lower_case:
        lowercase_first(tokenizer.tokenizer)
    encoder = load_params(encoder_dir, config, head=own_head, widen=widen)
    if own_head:
        return Loaded(model_dir, family_of(config), config, encoder, tokenizer, pipeline, config.num_labels)
    modules, width = [], config.hidden_size
    for module in pipeline.modules:
        if isinstance(module, st.LogitScore):   # its weights are rows of the decoder's own language-model head
            checkpoint = read_checkpoint(find_checkpoint(encoder_dir))
            modules.append((module, family_of(config).lm_head_rows(checkpoint, config, module.token_ids)))
        else:
            modules.append((module, load_module(module, width, widen)))
        width = chain.output_width(module, width)
    return Loaded(model_dir, family_of(config), config, chain.Chain(encoder, tuple(modules)), tokenizer, pipeline,
                  width)


def load_decoder_input(model_dir: Path, config, pipeline, cross_encoder: bool, max_length):
    """A decoder reranker's tokenizer and pipeline, as sentence-transformers reads them. The pair is a conversation
    rendered through the chat template when the Transformer has a 'message' modality (a saved directory's
    sentence_bert_config.json says so; a bare one has it when its tokenizer has a chat template); else it is the
    tokenizer's own pair encoding (its post-processor's special tokens, both texts cut longest-first), as for an
    encoder. Without modules.json, a *ForCausalLM is scored from the logits of "yes" and "no" (st.causal_reranker)."""
    if not cross_encoder:
        raise ConfigError(f"{config.source}: a {family_of(config).name} decoder is read as a reranker (CrossEncoder); "
                          "minibert's SentenceEncoder runs encoders")
    family = family_of(config)
    chat = pipeline.message_format is not None if pipeline is not None else has_chat_template(model_dir)
    if chat:
        tokenizer = read_chat_tokenizer(model_dir, config, family.tokenizer_class, max_length,
                                        pipeline.message_format if pipeline else None)
    else:
        tokenizer = load_tokenizer(model_dir, config, max_length)
    architectures = read_json_object(model_dir / "config.json", ConfigError).get("architectures") or []
    if pipeline is None and any(isinstance(a, str) and a.endswith("ForCausalLM") for a in architectures):
        pipeline = st.causal_reranker(model_dir, tokenizer.tokenizer.token_to_id("yes"),
                                      tokenizer.tokenizer.token_to_id("no"))
    return tokenizer, pipeline


def load_module(module, width: int, widen: bool = False):
    """The weights of one sentence-transformers module whose input is `width` wide (None: it has none)."""
    skeleton = chain.skeleton(module, width)
    if skeleton is None:
        return None
    return tree_from_tensors(read_checkpoint(module.weights), skeleton, str(module.weights), widen)


def load_config(model_dir):
    """Read and validate `model_dir/config.json`: the Config of its model family."""
    path = Path(model_dir) / "config.json"
    return config_from_dict(read_json_object(path, ConfigError), source=str(path))


def load_tokenizer(model_dir, config, max_length: int | None = None) -> PairTokenizer:
    """The tokenizer of `model_dir` for a model of this config: the class tokenizer_config.json names, else the
    one AutoTokenizer picks for the config's family."""
    return read_tokenizer(model_dir, config, family_of(config).tokenizer_class, max_length)


def load_params(model_dir, config, head: bool = True, widen: bool = False):
    """Read the checkpoint in `model_dir` and check it against `config`, tensor by tensor. head=False reads the
    encoder alone (a pooler or classifier in the checkpoint is then not used and not checked). widen: as load."""
    path = find_checkpoint(Path(model_dir))
    return params_from_tensors(read_checkpoint(path), family_of(config), config, source=str(path), head=head,
                               widen=widen)
