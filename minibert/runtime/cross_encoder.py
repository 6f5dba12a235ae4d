"""The public API: a cross-encoder that scores (query, passage) pairs.

It mirrors sentence-transformers' CrossEncoder (predict, rank) so that switching is a change
of import, with one deliberate difference: predict returns raw logits unless an activation is
asked for (sentence-transformers applies the model's stored activation by default, a sigmoid for
single-logit models that store none: `activation="stored"` does the same).

A cross-encoder is a family's *ForSequenceClassification (config.json, the checkpoint, the tokenizer),
or sentence-transformers' module chain (modules.json: a family's encoder, then Pooling, Dense, LayerNorm,
... whose last Dense writes the scores), read by minibert/runtime/load.py.
"""

import functools

import numpy as np

from minibert.errors import ConfigError, NumericalError
from minibert.formats.tokenizer import check_pair
from minibert.formats.sentence_transformers import stored_activation
from minibert.models import chain, forward
from minibert.ops import NUMPY, reference
from minibert.runtime.load import LoadedModel
from minibert.runtime.ranking import as_list, check_rank_args, ranked
from minibert.runtime.runner import (
    DEFAULT_MAX_BATCH_TOKENS,
    Progress,
    check_batch_size,
    distinct,
    length_or_none,
    listed,
    stream,
)

ACTIVATIONS = (None, "sigmoid", "softmax", "stored")


class CrossEncoder(LoadedModel):
    """A cross-encoder loaded from a HuggingFace model directory (any family minibert reads).

    Args:
        model_name_or_path: a directory with config.json, model.safetensors and
            tokenizer.json or vocab.txt (as saved by transformers' save_pretrained), or as
            sentence-transformers' CrossEncoder.save writes it (modules.json), or a Hub id "owner/name", downloaded into the HuggingFace cache (minibert.formats.hub.resolve_model_dir;
            revision, token, cache_folder and local_files_only as in sentence-transformers).
        max_length: tokens per pair, special tokens included; pairs are truncated
            longest-first. Default: tokenizer_config.json's model_max_length, capped by
            the model's max_position_embeddings.
        ops: the op set (minibert.ops.OpSet), or its name: "numpy" (the reference) or "numba" (the
            kernels). Default: the Numba kernels when numba is installed, unless MINIBERT_NO_NUMBA=1.
        max_batch_tokens: at most this many tokens (all pairs of a batch together) go through
            one forward pass; with batch_size, it bounds memory whatever the number of pairs
            (one pass per thread is in memory at a time).
        threads: cores to score on. Forward passes run in that many streams at once, each with
            BLAS at one thread (a single pair: one pass with BLAS at `threads`). Default None: as
            many as BLAS's own setting (OPENBLAS_NUM_THREADS, OMP_NUM_THREADS, ...).
    """

    def __init__(self, model_name_or_path, max_length=None, ops=None, max_batch_tokens=DEFAULT_MAX_BATCH_TOKENS,
                 threads=None, *, revision=None, token=None, cache_folder=None, local_files_only=False):
        super().__init__(model_name_or_path, cross_encoder=True, max_length=max_length, ops=ops,
                         max_batch_tokens=max_batch_tokens, threads=threads, revision=revision, token=token,
                         cache_folder=cache_folder, local_files_only=local_files_only)
        self.num_labels = self.width   # pipeline: None for the family's own head, else its module chain
        self.stored_activation = stored_activation(self.pipeline, self.path / "config.json", self.num_labels)

    @property
    def max_length(self) -> int:
        return self.tokenizer.max_length

    @property
    def id2label(self) -> dict[int, str]:
        own = dict(self.config.id2label) if self.pipeline is None else {}   # a module chain's scores have no names
        return own or {i: f"LABEL_{i}" for i in range(self.num_labels)}

    def __repr__(self):
        return (f"CrossEncoder({str(self.path)!r}, layers={self.config.num_hidden_layers}, "
                f"hidden={self.config.hidden_size}, num_labels={self.num_labels}, "
                f"max_length={self.max_length}, ops={self.ops.name})")

    def predict(self, sentences, batch_size=32, activation=None, show_progress_bar=False, *, prompt_name=None,
                prompt=None):
        """Scores for (query, passage) pairs, in input order.

        Returns float32 [n] when num_labels == 1, else [n, num_labels]: raw logits by default,
        or with activation="sigmoid" / "softmax", or "stored" (the activation sentence-transformers
        applies by default: `stored_activation`). A single pair (q, p) gives a single score.
        prompt / prompt_name: text put before each query, as sentence-transformers does: an explicit
        prompt, else one of the model's prompts by name, else its default prompt (if it has one).
        """
        self._check_predict_args(batch_size, activation)
        prefix = self._prompt(prompt_name, prompt)
        single = isinstance(sentences, (tuple, list)) and len(sentences) == 2 and isinstance(sentences[0], str)
        pairs = [sentences] if single else as_list(sentences, "a list of (query, passage) pairs")
        with Progress(show_progress_bar, "scoring", "pairs", len(pairs)) as progress:
            scores = self._scores(pairs, 0, batch_size, activation, prefix, progress)
        return scores[0] if single else scores

    def predict_iter(self, sentences, batch_size=32, activation=None, show_progress_bar=False, *, prompt_name=None,
                     prompt=None):
        """predict for an iterable of pairs of any length: yields each pair's score, in input order.

        Reads the pairs a window at a time (1024 pairs, or fewer holding 16M characters) and scores
        each window as predict would score it, so memory stays bounded whatever the number of
        pairs, and the numbers do not depend on how fast the pairs arrive. Yields a float32 scalar
        per pair when num_labels == 1, else a float32 [num_labels] array. Duplicates are scored once
        within a window. An InputError names the pair's index in the whole stream. show_progress_bar
        counts the pairs scored (of len(sentences) when it has a length).
        """
        self._check_predict_args(batch_size, activation)
        prefix = self._prompt(prompt_name, prompt)
        progress = Progress(show_progress_bar, "scoring", "pairs", length_or_none(sentences)) if show_progress_bar else None
        return stream(sentences, _pair_chars,
                      lambda window, first, bar: self._scores(window, first, batch_size, activation, prefix, bar),
                      "(query, passage) pairs", progress)

    def _prompt(self, prompt_name, prompt) -> str:
        if self.pipeline is None:   # a *ForSequenceClassification directory has no prompts of its own
            if prompt_name is not None:
                raise ConfigError(f"prompt_name {prompt_name!r}: this model has no prompts (no modules.json)")
            return prompt or ""
        return self.pipeline.prompt(prompt_name, prompt)

    def _check_predict_args(self, batch_size, activation):
        check_batch_size(batch_size)
        if activation not in ACTIVATIONS:
            raise ConfigError(f"activation must be one of {ACTIVATIONS}, found {activation!r}")
        if activation == "softmax" and self.num_labels == 1:
            raise ConfigError("softmax over a single logit is always 1.0; use the sigmoid activation for a single-logit model")

    def _scores(self, pairs: list, first_index: int, batch_size: int, activation, prefix: str = "", progress=None):
        """Scores of a list of pairs: [n] or [n, L] float32. first_index: the index of pairs[0], for messages;
        prefix: the prompt, put before each query."""
        pairs = [check_pair(pair, first_index + i) for i, pair in enumerate(pairs)]  # every pair, before any work
        encode = self.tokenizer.encode_pairs
        if prefix and self.tokenizer.prompt_as_message:   # a chat template's system message
            encode = functools.partial(encode, prompt=prefix)
        elif prefix:
            pairs = [(prefix + query, passage) for query, passage in pairs]
        pairs, where = distinct(pairs)   # a repeated pair is scored once: duplicates get exactly the same score

        logits = np.empty((len(pairs), self.num_labels), dtype=np.float32)
        for start, end, batch_logits in self.runner.run(pairs, encode, self._forward, batch_size, progress, where):
            logits[start:end] = batch_logits
        if not np.isfinite(logits).all():
            bad = first_index + np.flatnonzero(~np.isfinite(logits[where]).all(axis=1))
            raise NumericalError(f"non-finite scores (NaN or infinity) for pairs {listed(bad)}: the model's "
                                 "weights or the input overflow float32")

        scores = _activate(logits[where], self.stored_activation if activation == "stored" else activation)
        return scores[:, 0] if self.num_labels == 1 else scores

    def _forward(self, batch, ops):
        return forward(self.params, self.config, batch, ops)

    def rank(self, query, documents, top_k=None, return_documents=False, batch_size=32, activation=None,
             show_progress_bar=False, *, prompt_name=None, prompt=None):
        """Passages sorted by score, best first (ties by corpus_id): [{"corpus_id", "score"[, "text"]}]."""
        if self.num_labels != 1:
            raise ConfigError(
                f"rank needs a single-logit relevance model; this one has num_labels={self.num_labels} "
                f"({', '.join(self.id2label.values())}); use predict for per-label scores")
        documents = check_rank_args(query, documents, top_k)
        for index, document in enumerate(documents):
            check_pair((query, document), index)
        scores = self.predict([(query, d) for d in documents], batch_size=batch_size, activation=activation,
                              show_progress_bar=show_progress_bar, prompt_name=prompt_name, prompt=prompt)
        return ranked(scores, documents, top_k, return_documents)


def _pair_chars(pair) -> int:
    """Characters of a pair, for the streaming window's budget (0 for what is not a pair of str)."""
    return sum(len(side) for side in pair if isinstance(side, str)) if isinstance(pair, (tuple, list)) else 0


def _activate(logits, activation):
    """None: the logits; "sigmoid", "softmax" (across labels); or a torch.nn activation's class name
    (a stored one: "Sigmoid", "Identity", "Tanh", ...)."""
    if activation == "softmax":
        return reference.softmax(logits)
    if activation is None:
        return logits
    return chain.activation("Sigmoid" if activation == "sigmoid" else activation, logits, NUMPY)
