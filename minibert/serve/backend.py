"""The one place where the server touches the model: the public CrossEncoder / SentenceEncoder API.

A Backend answers four questions for the routes and the queue: what kind of model this is
(reranker, classifier, embedding), how many tokens an input costs (and whether it would be
truncated), the raw numbers of a list of inputs (logits [n, L] or embeddings [n, D]), and what
/info says. Besides the public API it uses only the model's `tokenizer` (a PairTokenizer:
encode_pairs / encode_texts, max_length, and the tokenizers.Tokenizer it wraps, copied without
truncation to count an input's full length).
"""

import json
from pathlib import Path

import numpy as np

from minibert.errors import ConfigError
from minibert.formats.sentence_transformers import is_sentence_encoder
from minibert.runtime.cross_encoder import CrossEncoder
from minibert.runtime.long_passages import DEFAULT_STRIDE, cut_windows
from minibert.runtime.sentence_encoder import SentenceEncoder

RERANKER, CLASSIFIER, EMBEDDING = "reranker", "classifier", "embedding"


class Backend:
    """long_passages, stride: CrossEncoder.predict's, for every pair the server scores (a reranker's only)."""

    def __init__(self, model: CrossEncoder | SentenceEncoder, model_id: str | None = None,
                 long_passages: str = "truncate", stride: int = DEFAULT_STRIDE):
        self.model = model
        self.embedding = isinstance(model, SentenceEncoder)
        if self.embedding:
            self.kind = EMBEDDING
        else:
            self.kind = RERANKER if model.num_labels == 1 else CLASSIFIER
        self.model_id = model_id or Path(model.path).name
        self.max_input_length = model.max_seq_length if self.embedding else model.max_length
        self.max_batch_tokens = model.max_batch_tokens
        self._counter = None
        self.long_passages, self.stride = long_passages, stride
        if long_passages != "truncate" and self.embedding:
            raise ConfigError(f"long_passages={long_passages!r} scores a reranker's passages in windows; this model "
                              "is a sentence encoder")
        if not self.embedding:
            model.predict([], long_passages=long_passages, stride=stride)   # checks both options now

    @classmethod
    def load(cls, path, model_id=None, max_batch_tokens=16384, threads=None, **options) -> "Backend":
        """A sentence encoder if the directory's modules.json lists a Pooling module, else a cross-encoder.
        options: long_passages, stride."""
        kind = SentenceEncoder if is_sentence_encoder(path) else CrossEncoder
        return cls(kind(path, max_batch_tokens=max_batch_tokens, threads=threads), model_id, **options)

    @property
    def id2label(self) -> dict[int, str]:
        return {} if self.embedding else self.model.id2label

    def lengths(self, inputs: list, check_truncation: bool) -> tuple[list[int], list[bool] | None]:
        """(tokens of each input as it is scored, whether each one is truncated or None if not asked).

        inputs: (query, passage) pairs for a cross-encoder, texts for a sentence encoder.
        """
        tokenizer = self.model.tokenizer
        if self.long_passages != "truncate":
            return self._window_lengths(inputs, check_truncation)
        encoded = tokenizer.encode_texts(inputs) if self.embedding else tokenizer.encode_pairs(inputs)
        lengths = [len(ids) for ids, _ in encoded]
        if not check_truncation:
            return lengths, None
        # Only an input that fills max_length can have been cut; count those again, untruncated.
        return lengths, [n >= tokenizer.max_length and self._full_length(x) > tokenizer.max_length
                         for n, x in zip(lengths, inputs)]

    def _window_lengths(self, pairs: list, check_truncation: bool) -> tuple[list[int], list[bool] | None]:
        """lengths() with a window policy: a pair costs the tokens of all its windows; only its query can be cut."""
        tokenizer = self.model.tokenizer
        specials = len(tokenizer.join_pair([], [])[0])
        cuts = [cut_windows(tokenizer, query, passage, self.stride) for query, passage in pairs]
        lengths = [int(cut.lengths(specials).sum()) for cut in cuts]
        if not check_truncation:
            return lengths, None
        return lengths, [len(cut.query_ids) < self._full_length((query,), specials=False)
                         for cut, (query, _) in zip(cuts, pairs)]

    def _full_length(self, item, specials: bool = True) -> int:
        if self._counter is None:
            from tokenizers import Tokenizer

            self._counter = Tokenizer.from_str(self.model.tokenizer.tokenizer.to_str())
            self._counter.no_truncation()
            self._counter.no_padding()
        sides = (item,) if self.embedding else tuple(item)
        return len(self._counter.encode(*sides, add_special_tokens=specials).ids)

    def run(self, inputs: list) -> np.ndarray:
        """float32 logits [n, L] (cross-encoder) or embeddings [n, D] (sentence encoder, not normalized
        beyond its own pipeline), in one forward pass when their tokens fit max_batch_tokens."""
        if self.embedding:
            return self.model.encode(inputs, batch_size=len(inputs), normalize=False)
        if self.long_passages != "truncate":   # passes of windows, bounded by the token budget (the batcher bounds the pairs)
            logits = self.model.predict(inputs, batch_size=self.max_batch_tokens, long_passages=self.long_passages,
                                        stride=self.stride)
        else:
            logits = self.model.predict(inputs, batch_size=len(inputs))
        return logits.reshape(len(inputs), -1)

    def warm_up(self) -> None:
        self.run(["warm up"] if self.embedding else [("warm", "up")])

    def architecture(self) -> str | None:
        config = Path(self.model.path) / "config.json"
        if self.embedding:
            config = Path(self.model.pipeline.encoder_dir) / "config.json"
        try:
            raw = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        names = raw.get("architectures") or [raw.get("model_type")]
        return names[0] if names and isinstance(names[0], str) else None

    def model_type(self) -> dict:
        """TEI's model_type: {"reranker" | "classifier": {"id2label", "label2id"}} or {"embedding": {"pooling"}}."""
        if self.embedding:
            return {EMBEDDING: {"pooling": "+".join(self.model.pipeline.pooling_modes)}}
        id2label = {str(i): label for i, label in self.id2label.items()}
        return {self.kind: {"id2label": id2label, "label2id": {label: int(i) for i, label in id2label.items()}}}
