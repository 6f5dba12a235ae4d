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
from minibert.runtime.long_passages import DEFAULT_STRIDE, aggregate, check_policy, cut_windows
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
        widen: False (the default) keeps a bfloat16 or float16 checkpoint's matrices at their stored
            precision, memory-mapped (half the memory of float32), each widened to float32 just for its
            product; True widens them all at load (twice the memory, faster products). The scores are the
            same either way, bit for bit. A float32 checkpoint is float32 either way.
    """

    def __init__(self, model_name_or_path, max_length=None, ops=None, max_batch_tokens=DEFAULT_MAX_BATCH_TOKENS,
                 threads=None, *, widen=False, revision=None, token=None, cache_folder=None, local_files_only=False):
        super().__init__(model_name_or_path, cross_encoder=True, max_length=max_length, ops=ops,
                         max_batch_tokens=max_batch_tokens, threads=threads, revision=revision, token=token,
                         cache_folder=cache_folder, local_files_only=local_files_only, widen=widen)
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
                prompt=None, long_passages="truncate", stride=DEFAULT_STRIDE):
        """Scores for (query, passage) pairs, in input order.

        Returns float32 [n] when num_labels == 1, else [n, num_labels]: raw logits by default,
        or with activation="sigmoid" / "softmax", or "stored" (the activation sentence-transformers
        applies by default: `stored_activation`). A single pair (q, p) gives a single score.
        prompt / prompt_name: text put before each query, as sentence-transformers does: an explicit
        prompt, else one of the model's prompts by name, else its default prompt (if it has one).
        long_passages: "truncate" (a pair is cut to max_length tokens) or, for a single-logit model, a
        passage too long for max_length is scored whole, in windows (minibert/runtime/long_passages.py)
        that each fill what the query leaves of max_length, consecutive windows sharing `stride` tokens
        (at most half a window), its logit the best window's ("max"), the first window's ("first": the
        truncate score) or their mean ("mean"); the activation then applies to that logit.
        """
        self._check_predict_args(batch_size, activation, long_passages, stride)
        prefix = self._prompt(prompt_name, prompt)
        single = isinstance(sentences, (tuple, list)) and len(sentences) == 2 and isinstance(sentences[0], str)
        pairs = [sentences] if single else as_list(sentences, "a list of (query, passage) pairs")
        with Progress(show_progress_bar, "scoring", "pairs", len(pairs)) as progress:
            scores = self._scores(pairs, 0, batch_size, activation, prefix, progress, long_passages, stride)
        return scores[0] if single else scores

    def predict_iter(self, sentences, batch_size=32, activation=None, show_progress_bar=False, *, prompt_name=None,
                     prompt=None, long_passages="truncate", stride=DEFAULT_STRIDE):
        """predict for an iterable of pairs of any length: yields each pair's score, in input order.

        Reads the pairs a window at a time (1024 pairs, or fewer holding 16M characters) and scores
        each window as predict would score it, so memory stays bounded whatever the number of
        pairs, and the numbers do not depend on how fast the pairs arrive. Yields a float32 scalar
        per pair when num_labels == 1, else a float32 [num_labels] array. Duplicates are scored once
        within a window. An InputError names the pair's index in the whole stream. show_progress_bar
        counts the pairs scored (of len(sentences) when it has a length). long_passages, stride: as for
        predict (the windows of the pairs read together share the forward passes).
        """
        self._check_predict_args(batch_size, activation, long_passages, stride)
        prefix = self._prompt(prompt_name, prompt)
        progress = Progress(show_progress_bar, "scoring", "pairs", length_or_none(sentences)) if show_progress_bar else None
        return stream(sentences, _pair_chars,
                      lambda window, first, bar: self._scores(window, first, batch_size, activation, prefix, bar,
                                                              long_passages, stride),
                      "(query, passage) pairs", progress)

    def passage_windows(self, query: str, passage: str, stride=DEFAULT_STRIDE) -> list[dict]:
        """How a window policy cuts this pair's passage: [{"span": (start, end), "tokens": n}], one per window
        in order; span: the window's characters, passage[start:end]; tokens: the window pair's length,
        special tokens and query included (at most max_length). A passage that fits is one window."""
        check_policy("max", stride)
        if self.tokenizer.prompt_as_message:
            raise ConfigError("passage windows are not implemented for a decoder reranker (its pair is one conversation "
                              "rendered by the chat template)")
        query, passage = check_pair((query, passage), 0)
        cut = cut_windows(self.tokenizer, query, passage, stride)
        specials = len(self.tokenizer.join_pair([], [])[0])   # the template's special tokens
        return [{"span": (int(start), int(end)), "tokens": int(n)}
                for (start, end), n in zip(cut.spans, cut.lengths(specials))]

    def _prompt(self, prompt_name, prompt) -> str:
        if self.pipeline is None:   # a *ForSequenceClassification directory has no prompts of its own
            if prompt_name is not None:
                raise ConfigError(f"prompt_name {prompt_name!r}: this model has no prompts (no modules.json)")
            return prompt or ""
        return self.pipeline.prompt(prompt_name, prompt)

    def _check_predict_args(self, batch_size, activation, long_passages="truncate", stride=DEFAULT_STRIDE):
        check_batch_size(batch_size)
        if activation not in ACTIVATIONS:
            raise ConfigError(f"activation must be one of {ACTIVATIONS}, found {activation!r}")
        if activation == "softmax" and self.num_labels == 1:
            raise ConfigError("softmax over a single logit is always 1.0; use the sigmoid activation for a single-logit model")
        check_policy(long_passages, stride)
        if long_passages != "truncate" and self.tokenizer.prompt_as_message:
            raise ConfigError(f"long_passages={long_passages!r} is not implemented for a decoder reranker (its pair is "
                              "one conversation rendered by the chat template); use long_passages='truncate'")
        if long_passages != "truncate" and self.num_labels != 1:
            # a per-label max would take each label from another window: no window would have those scores
            raise ConfigError(
                f"long_passages={long_passages!r} needs a single-logit relevance model; this one has num_labels="
                f"{self.num_labels} ({', '.join(self.id2label.values())}), whose labels are not one relevance "
                "to aggregate over windows: use long_passages='truncate'")

    def _scores(self, pairs: list, first_index: int, batch_size: int, activation, prefix: str = "", progress=None,
                long_passages="truncate", stride=DEFAULT_STRIDE):
        """Scores of a list of pairs: [n] or [n, L] float32. first_index: the index of pairs[0], for messages;
        prefix: the prompt, put before each query (a decoder's chat template makes it a system message);
        long_passages, stride: as for predict."""
        if long_passages != "truncate":
            return self._window_scores(pairs, first_index, batch_size, activation, prefix, progress, long_passages,
                                       stride)[0]
        encode = self.tokenizer.encode_pairs
        if prefix and self.tokenizer.prompt_as_message:   # a chat template's system message, not text before the query
            encode, prefix = functools.partial(encode, prompt=prefix), ""
        pairs, where = self._distinct_pairs(pairs, first_index, prefix)
        logits = np.empty((len(pairs), self.num_labels), dtype=np.float32)
        for start, end, batch_logits in self.runner.run(pairs, encode, self._forward, batch_size, progress, where):
            logits[start:end] = batch_logits
        return self._activated(logits, np.isfinite(logits).all(axis=1), where, first_index, activation)

    def _window_scores(self, pairs: list, first_index: int, batch_size: int, activation, prefix: str, progress,
                       policy: str, stride: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(scores [n], the window each score comes from [n], its span [n, 2] (characters in the passage),
        the windows of each passage [n]) of a list of pairs scored by a window policy.

        Every pair's window 0 is scored first, in the forward passes truncate would run for the same pairs
        (so "first" is truncate's score bit for bit and "max" is never below it), then the other windows of
        all pairs together, packed into shared passes. A window pair is built from its token ids only when
        its chunk of TOKENIZE_CHUNK windows is tokenized, so memory holds the passages' token ids, not their
        windows'.
        """
        pairs, where = self._distinct_pairs(pairs, first_index, prefix)
        cuts = [cut_windows(self.tokenizer, query, passage, stride) for query, passage in pairs]
        counts = np.array([len(cut) for cut in cuts] if policy != "first" else [1] * len(cuts), dtype=np.int64)
        firsts = np.cumsum(counts) - counts                                       # [d] each pair's window 0
        last = np.cumsum(counts - 1) - 1                                          # [d] its last in the rest

        def encode(items, _first):
            return [cuts[pair].tokens(self.tokenizer, window) for pair, window in items]

        logits = np.empty(int(counts.sum()), dtype=np.float32)                    # [sum(counts)] pair by pair
        rest = np.ones(len(logits), dtype=bool)
        rest[firsts] = False
        for items, out, done in (
                ([(pair, 0) for pair in range(len(pairs))], firsts, [d for d in where if counts[d] == 1]),
                ([(pair, w) for pair in range(len(pairs)) for w in range(1, counts[pair])], np.flatnonzero(rest),
                 [last[d] for d in where if counts[d] > 1])):
            # done: for the progress bar, a caller's pair counts when its last window is scored
            for start, end, batch_logits in self.runner.run(items, encode, self._forward, batch_size, progress,
                                                            np.asarray(done, dtype=np.int64)):
                logits[out[start:end]] = batch_logits[:, 0]
        finite = np.logical_and.reduceat(np.isfinite(logits), firsts) if len(pairs) else np.ones(0, dtype=bool)
        aggregated, best = aggregate(logits, counts, policy)              # [d], [d]
        spans = np.array([cut.spans[b] for cut, b in zip(cuts, best)], dtype=np.int64).reshape(-1, 2)
        total = np.array([len(cut) for cut in cuts], dtype=np.int64)
        scores = self._activated(aggregated[:, None], finite, where, first_index, activation)
        return scores, best[where], spans[where], total[where]

    def _distinct_pairs(self, pairs: list, first_index: int, prefix: str) -> tuple[list, np.ndarray]:
        """(the distinct checked pairs, the prompt before each query; where [n]: pairs[i] is distinct[where[i]])."""
        pairs = [check_pair(pair, first_index + i) for i, pair in enumerate(pairs)]  # every pair, before any work
        if prefix:
            pairs = [(prefix + query, passage) for query, passage in pairs]
        return distinct(pairs)   # a repeated pair is scored once: duplicates get exactly the same score

    def _activated(self, logits: np.ndarray, finite: np.ndarray, where: np.ndarray, first_index: int, activation):
        """The callers' scores [n] or [n, L] from the distinct pairs' logits [d, L] (finite [d]: all of a
        pair's logits are finite; a pair that is not is a NumericalError)."""
        if not finite.all():
            bad = first_index + np.flatnonzero(~finite[where])
            raise NumericalError(f"non-finite scores (NaN or infinity) for pairs {listed(bad)}: the model's "
                                 "weights or the input overflow float32")
        scores = _activate(logits[where], self.stored_activation if activation == "stored" else activation)
        return scores[:, 0] if self.num_labels == 1 else scores

    def _forward(self, batch, ops):
        return forward(self.params, self.config, batch, ops)

    def rank(self, query, documents, top_k=None, return_documents=False, batch_size=32, activation=None,
             show_progress_bar=False, *, prompt_name=None, prompt=None, long_passages="truncate",
             stride=DEFAULT_STRIDE):
        """Passages sorted by score, best first (ties by corpus_id): [{"corpus_id", "score"[, "text"]}].

        With a window policy (long_passages, stride: as for predict) each hit also says where its score
        comes from: "window" (its index), "span" ((start, end): its characters, document[start:end]) and
        "windows" (how many the document was cut into). For "mean", the best window."""
        if self.num_labels != 1:
            raise ConfigError(
                f"rank needs a single-logit relevance model; this one has num_labels={self.num_labels} "
                f"({', '.join(self.id2label.values())}); use predict for per-label scores")
        documents = check_rank_args(query, documents, top_k)
        for index, document in enumerate(documents):
            check_pair((query, document), index)
        pairs = [(query, d) for d in documents]
        if long_passages == "truncate":
            scores = self.predict(pairs, batch_size=batch_size, activation=activation, stride=stride,
                                  show_progress_bar=show_progress_bar, prompt_name=prompt_name, prompt=prompt)
            return ranked(scores, documents, top_k, return_documents)
        self._check_predict_args(batch_size, activation, long_passages, stride)
        prefix = self._prompt(prompt_name, prompt)
        with Progress(show_progress_bar, "scoring", "pairs", len(pairs)) as progress:
            scores, best, spans, counts = self._window_scores(pairs, 0, batch_size, activation, prefix, progress,
                                                              long_passages, stride)
        hits = ranked(scores, documents, top_k, return_documents)
        for hit in hits:
            i = hit["corpus_id"]
            hit.update(window=int(best[i]), span=(int(spans[i, 0]), int(spans[i, 1])), windows=int(counts[i]))
        return hits


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
