"""The one place where the server touches the model: the public CrossEncoder / SentenceEncoder API.

A Backend answers these questions for the routes and the queue: what kind of model this is
(reranker, classifier, embedding), how many tokens an input costs (and whether it would be
truncated), the raw numbers of a list of inputs (logits [n, L] or embeddings [n, D]), what
/info says, and TEI's /tokenize and /decode. Besides the public API it uses only the model's
`tokenizer` (a PairTokenizer: encode_pairs / encode_texts, max_length, and the tokenizers.Tokenizer
it wraps, copied without truncation to count an input's full length and for /tokenize, and copied
with left truncation for TEI's `truncation_direction: "left"`).

Left truncation, as TEI does it (core/src/tokenization.rs: the tokenizers library's longest_first
truncation with direction Left): the budget is shared between the two sides exactly as for right
truncation (the longer side loses tokens first), but each side loses its *first* tokens and keeps
its last ones, the query too when it is the longer side. An input to score that way is wrapped in
`Left`; the model then scores it with a shallow copy of itself whose tokenizer truncates on the left.
"""

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from minibert.errors import ConfigError
from minibert.formats.sentence_transformers import is_sentence_encoder
from minibert.formats.tokenizer import PairTokenizer
from minibert.runtime.cross_encoder import CrossEncoder
from minibert.runtime.long_passages import DEFAULT_STRIDE, cut_windows
from minibert.runtime.sentence_encoder import SentenceEncoder

RERANKER, CLASSIFIER, EMBEDDING = "reranker", "classifier", "embedding"


@dataclass(frozen=True)
class Left:
    """An input (a (query, passage) pair or a text) to be truncated on the left, as TEI's "left"."""
    item: object


def _unwrap(item):
    return item.item if isinstance(item, Left) else item


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
        self._left = None   # the model with a left-truncating tokenizer, made when first needed
        self.long_passages, self.stride = long_passages, stride
        if long_passages != "truncate" and self.embedding:
            raise ConfigError(f"long_passages={long_passages!r} scores a reranker's passages in windows; this model "
                              "is a sentence encoder")
        if not self.embedding:
            model.predict([], long_passages=long_passages, stride=stride)   # checks both options now

    @classmethod
    def load(cls, path, model_id=None, max_batch_tokens=16384, threads=None, widen=False, **options) -> "Backend":
        """A sentence encoder if the directory's modules.json lists a Pooling module, else a cross-encoder.
        widen: as CrossEncoder's. options: long_passages, stride."""
        kind = SentenceEncoder if is_sentence_encoder(path) else CrossEncoder
        return cls(kind(path, max_batch_tokens=max_batch_tokens, threads=threads, widen=widen), model_id, **options)

    @property
    def id2label(self) -> dict[int, str]:
        return {} if self.embedding else self.model.id2label

    def lengths(self, inputs: list, check_truncation: bool) -> tuple[list[int], list[bool] | None]:
        """(tokens of each input as it is scored, whether each one is truncated or None if not asked).

        inputs: (query, passage) pairs for a cross-encoder, texts for a sentence encoder, each maybe
        wrapped in Left (the count is the same: truncation keeps as many tokens on either side).
        """
        inputs = [_unwrap(x) for x in inputs]
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
        if self.chat:   # a decoder reranker: the whole rendered conversation
            return self.model.tokenizer.untruncated_length(*item)
        sides = (item,) if self.embedding else tuple(item)
        return len(self.counter.encode(*sides, add_special_tokens=specials).ids)

    @property
    def chat(self) -> bool:
        """A decoder reranker, whose pairs go through a chat template: TEI's left truncation would cut the
        template's head, so it is refused (truncate_left_refusal)."""
        return self.model.tokenizer.prompt_as_message

    def truncate_left_refusal(self) -> str | None:
        """Why this model cannot truncate on the left, or None when it can."""
        if self.chat:
            return ("truncation_direction \"left\" is not implemented for a decoder reranker: its pair is one "
                    "conversation rendered by the chat template, which is cut at its end (keeping the template's tail)")
        if self.long_passages != "truncate":
            return (f"truncation_direction \"left\" does not apply: this server scores long passages whole, in "
                    f"windows (--long-passages {self.long_passages})")
        return None

    @property
    def counter(self) -> Tokenizer:
        """The model's tokenizer without truncation (or padding)."""
        if self._counter is None:
            self._counter = _copy(self.model.tokenizer.tokenizer)
        return self._counter

    def run(self, inputs: list) -> np.ndarray:
        """float32 logits [n, L] (cross-encoder) or embeddings [n, D] (sentence encoder, not normalized
        beyond its own pipeline), in one forward pass when their tokens fit max_batch_tokens (two
        when some inputs are truncated on the left and others on the right)."""
        left = [i for i, x in enumerate(inputs) if isinstance(x, Left)]
        if not left:
            return self._run(self.model, inputs)
        right = [i for i, x in enumerate(inputs) if not isinstance(x, Left)]
        out = self._run(self.left_model, [inputs[i].item for i in left])
        result = np.empty((len(inputs), out.shape[1]), dtype=out.dtype)
        result[left] = out
        if right:
            result[right] = self._run(self.model, [inputs[i] for i in right])
        return result

    def _run(self, model, inputs: list) -> np.ndarray:
        if self.embedding:
            return model.encode(inputs, batch_size=len(inputs), normalize=False)
        if self.long_passages != "truncate":   # passes of windows, bounded by the token budget (the batcher bounds the pairs)
            logits = model.predict(inputs, batch_size=self.max_batch_tokens, long_passages=self.long_passages,
                                   stride=self.stride)
        else:
            logits = model.predict(inputs, batch_size=len(inputs))
        return logits.reshape(len(inputs), -1)

    @property
    def left_model(self):
        """The model, sharing its weights, with a tokenizer that truncates on the left (TEI's "left")."""
        if self._left is None:
            own = self.model.tokenizer
            left = PairTokenizer(_copy(own.tokenizer), own.max_length, own.source, own.token_types, cuttable=False)
            left.tokenizer.enable_truncation(own.max_length, strategy="longest_first", direction="left", stride=0)
            self._left = copy.copy(self.model)
            self._left.tokenizer = left
        return self._left

    def tokenize(self, texts: list[str], add_special_tokens: bool) -> list[list[dict]]:
        """TEI's /tokenize: per text, [{"id", "text", "special", "start", "stop"}], untruncated. start and
        stop are UTF-8 byte offsets into the text and `text` those bytes (TEI's); a special token has
        its token string as text and null offsets."""
        out = []
        for text, encoding in zip(texts, self.counter.encode_batch(texts, add_special_tokens=add_special_tokens)):
            data = text.encode("utf-8")
            ends = np.cumsum([0] + [len(c.encode("utf-8")) for c in text])   # char offset -> byte offset
            tokens = []
            for token_id, token, special, (start, stop) in zip(encoding.ids, encoding.tokens,
                                                               encoding.special_tokens_mask, encoding.offsets):
                if special:
                    tokens.append({"id": token_id, "text": token, "special": True, "start": None, "stop": None})
                else:
                    start, stop = int(ends[start]), int(ends[stop])
                    tokens.append({"id": token_id, "text": data[start:stop].decode("utf-8", errors="replace"),
                                   "special": False, "start": start, "stop": stop})
            out.append(tokens)
        return out

    def decode(self, ids: list[list[int]], skip_special_tokens: bool) -> list[str]:
        """TEI's /decode: the text of each list of token ids."""
        return self.counter.decode_batch(ids, skip_special_tokens=skip_special_tokens)

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


def _copy(tokenizer: Tokenizer) -> Tokenizer:
    """A copy of a tokenizers.Tokenizer without truncation or padding."""
    out = Tokenizer.from_str(tokenizer.to_str())
    out.no_truncation()
    out.no_padding()
    return out
