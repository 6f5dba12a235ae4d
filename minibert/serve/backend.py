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

from minibert.formats.sentence_transformers import is_sentence_encoder
from minibert.runtime.cross_encoder import CrossEncoder
from minibert.runtime.sentence_encoder import SentenceEncoder

RERANKER, CLASSIFIER, EMBEDDING = "reranker", "classifier", "embedding"


class Backend:
    def __init__(self, model: CrossEncoder | SentenceEncoder, model_id: str | None = None):
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

    @classmethod
    def load(cls, path, model_id=None, max_batch_tokens=16384, threads=None) -> "Backend":
        """A sentence encoder if the directory's modules.json lists a Pooling module, else a cross-encoder."""
        kind = SentenceEncoder if is_sentence_encoder(path) else CrossEncoder
        return cls(kind(path, max_batch_tokens=max_batch_tokens, threads=threads), model_id)

    @property
    def id2label(self) -> dict[int, str]:
        return {} if self.embedding else self.model.id2label

    def lengths(self, inputs: list, check_truncation: bool) -> tuple[list[int], list[bool] | None]:
        """(tokens of each input as it is scored, whether each one is truncated or None if not asked).

        inputs: (query, passage) pairs for a cross-encoder, texts for a sentence encoder.
        """
        tokenizer = self.model.tokenizer
        encoded = tokenizer.encode_texts(inputs) if self.embedding else tokenizer.encode_pairs(inputs)
        lengths = [len(ids) for ids, _ in encoded]
        if not check_truncation:
            return lengths, None
        # Only an input that fills max_length can have been cut; count those again, untruncated.
        return lengths, [n >= tokenizer.max_length and self._full_length(x) > tokenizer.max_length
                         for n, x in zip(lengths, inputs)]

    def _full_length(self, item) -> int:
        if self._counter is None:
            from tokenizers import Tokenizer

            self._counter = Tokenizer.from_str(self.model.tokenizer.tokenizer.to_str())
            self._counter.no_truncation()
            self._counter.no_padding()
        sides = (item,) if self.embedding else tuple(item)
        return len(self._counter.encode(*sides, add_special_tokens=True).ids)

    def run(self, inputs: list) -> np.ndarray:
        """float32 logits [n, L] (cross-encoder) or embeddings [n, D] (sentence encoder, not normalized
        beyond its own pipeline), in one forward pass when their tokens fit max_batch_tokens."""
        if self.embedding:
            return self.model.encode(inputs, batch_size=len(inputs), normalize=False)
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
