"""Pairs of texts -> token ids, as transformers' fast tokenizer makes them for a cross-encoder.

A pair becomes the tokenizer class's pair template: for BERT [CLS] query [SEP] passage [SEP],
with token type 0 for the first three parts and 1 for the last two; for RoBERTa
<s> query </s></s> passage </s>. It is truncated 'longest_first' to max_length tokens (special
tokens included, as many as the template adds): the longer side loses a token until the pair fits.

The tokenizer class is the one transformers' AutoTokenizer picks: tokenizer_config.json's
`tokenizer_class`, else the model family's (BertTokenizer for model_type bert, ...: the caller
passes it, from minibert.models.family.Family.tokenizer_class). Like transformers 5,
a class with a pipeline of its own (BertTokenizer, RobertaTokenizer, ...) takes only the
vocabulary from tokenizer.json and sets its normalization and pair template itself, from
tokenizer_config.json; a plain PreTrainedTokenizerFast (ModernBERT's) runs tokenizer.json as it
is. Token type ids reach the model only where the class's `model_input_names` (or
tokenizer_config.json's) lists them; elsewhere they are all 0, as the model then sees them.

Two things transformers does that minibert does too:
- The vocabulary comes from tokenizer.json (or vocab.txt), but a BERT tokenizer's text
  normalization (lowercasing, accent stripping, CJK splitting) follows tokenizer_config.json,
  with BertTokenizer's defaults where it is silent.
- Padding and truncation settings stored inside tokenizer.json are not inherited: some files
  (all-MiniLM-L6-v2's among them) pad every input to 128 tokens, which would waste compute
  and silently change the effective max length. minibert sets its own truncation and pads
  nothing here; batches are padded later, by the model code.
"""

import json
import os
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    normalizers,
    pre_tokenizers,
    processors,
)
from tokenizers.models import BPE, Unigram, WordPiece
from tokenizers.processors import TemplateProcessing

from minibert.errors import (
    ConfigError,
    InputError,
    ModelFormatError,
    TruncationWarning,
    show,
)
from minibert.formats.config import read_json_object

# model_max_length values above this are "no limit" placeholders (transformers writes 1e30).
_SANE_MODEL_MAX_LENGTH = 1_000_000
MIN_MAX_LENGTH = 3  # room for [CLS], [SEP], [SEP]
MAX_INPUT_CHARS_PER_WORD = 100  # WordPiece's default: a longer word is one [UNK] token
# Where a long text may be cut without changing its tokens: after a space, tab or newline. BERT's
# normalizers keep these (as a space), its pre-tokenizer splits on them, so the words before the cut are
# tokenized exactly as in the whole text (no other character is safe: a control character is deleted
# by clean_text and joins the words around it).
_BREAK = re.compile(r"[ \t\n\r]")
_warned_truncation = False
_PACKAGE_DIR = str(Path(__file__).resolve().parent.parent) + os.sep   # minibert/


class PairTokenizer:
    prompt_as_message = False   # a prompt goes before the query (formats/chat.py puts it in a system message)

    def __init__(self, tokenizer: Tokenizer, max_length: int, source: str, token_types: bool = True,
                 cuttable: bool = True):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.source = source
        self.token_types = token_types  # False: the model sees token type 0 everywhere
        self._cut = _cutter(tokenizer) if cuttable else None  # see _encode_long
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length, strategy="longest_first", direction="right", stride=0)
        self._counter = None  # a copy without truncation, to count a prefix's tokens (made when first needed)
        self._templates = {}  # sides -> the template's special tokens (see _template)

    @property
    def char_cap(self) -> int:
        """The first cut tried on a long text: max_length words of up to 100 characters, each followed by
        one space, are max_length tokens or more. Texts of other shapes (long runs of spaces, words
        of 101+ characters, which are one [UNK] each) are handled by `_encode_long`, which checks the count."""
        return self.max_length * (MAX_INPUT_CHARS_PER_WORD + 1)

    def encode_pairs(self, pairs, first_index=0) -> list[tuple[np.ndarray, np.ndarray]]:
        """[(query, passage), ...] -> [(ids [T_i], type_ids [T_i]), ...], int64, unpadded.

        first_index: the index of pairs[0] in the caller's list, for error messages.
        """
        checked = [check_pair(pair, first_index + i) for i, pair in enumerate(pairs)]
        return self._encode(checked)

    def encode_texts(self, texts, first_index=0) -> list[tuple[np.ndarray, np.ndarray]]:
        """[text, ...] -> [(ids, type_ids), ...] for single texts: [CLS] text [SEP] (<s> text </s>), all type 0."""
        return self._encode([(check_text(text, first_index + i),) for i, text in enumerate(texts)])

    def _encode(self, inputs: list[tuple[str, ...]]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Inputs of one or two sides -> arrays; a side longer than char_cap goes through `_encode_long`."""
        long = [i for i, sides in enumerate(inputs) if max(map(len, sides)) > self.char_cap]
        if long and self._cut is None:
            long = []
        if len(long) < len(inputs):
            short = sorted(set(range(len(inputs))) - set(long))
            encodings = self.tokenizer.encode_batch(
                [inputs[i] if len(inputs[i]) == 2 else inputs[i][0] for i in short], add_special_tokens=True)
            if any(e.overflowing for e in encodings):
                _warn_truncation()
            out = dict(zip(short, _arrays(encodings)))
        else:
            out = {}
        for i in long:
            out[i] = self._encode_long(inputs[i])
        if not self.token_types:
            return [(out[i][0], np.zeros_like(out[i][1])) for i in range(len(inputs))]
        return [out[i] for i in range(len(inputs))]

    def _encode_long(self, sides: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        """One input with a side of more than char_cap characters, tokenized as the tokenizer would, faster.

        Tokenizing a text of a million characters to keep its first 512 tokens costs ~0.5 s (and
        for a pair of two such texts the tokenizer's overflow pieces exhaust memory), so each side is
        tokenized here, alone and untruncated, after a cut at a space at or after char_cap characters:
        a prefix of its tokens (see _cutter). Then longest_first truncation is applied as the tokenizer
        applies it, and the special tokens ([CLS] / [SEP], <s> / </s>) are added as its template adds them.

        The cut must not change what truncation keeps: a cut side must keep at least max_length
        tokens (truncation keeps fewer), and since longest_first gives the odd token of an odd budget
        to the longer side (the passage on a tie), more tokens than the other side has whole; of two
        long sides one is therefore tokenized whole. Until that holds the cut moves twice as far:
        the cost stays linear in the text's length, and ordinary text stops at the first cut.
        """
        counter = self._untruncated()
        slots, side_types = self._template(len(sides))
        budget = self.max_length - sum(len(ids) for ids, _ in slots)
        if budget < 0:  # max_length below the template's special tokens: the tokenizer then does not truncate
            return _arrays([self.tokenizer.encode(*sides, add_special_tokens=True)])[0]
        limit = self.char_cap
        while True:
            cut = [self._cut(side, limit) for side in sides]
            whole = [len(c) == len(side) for c, side in zip(cut, sides)]
            tokens = [counter.encode(c, add_special_tokens=False).ids for c in cut]
            counts = [len(t) for t in tokens]
            if all(w or (n >= self.max_length and all(whole[j] and counts[j] < n for j in range(len(cut)) if j != i))
                   for i, (w, n) in enumerate(zip(whole, counts))):
                break
            limit *= 2
        kept = _longest_first(counts, budget)
        if not all(whole) or kept != counts:
            _warn_truncation()
        return _assemble(slots, side_types, [side[:n] for side, n in zip(tokens, kept)])

    def split_pair(self, query: str, passage: str) -> "SplitPair":
        """A pair taken apart, for scoring its passage in windows (minibert/runtime/long_passages.py).

        The query's tokens as the pair's longest_first truncation keeps them; every token of the passage,
        untruncated, with its characters in the passage; and `room`: the passage tokens that fit beside
        that query (max_length minus the query and the template's special tokens). So the pair's own
        truncation is join_pair(query_ids, passage_ids[:room]), and any other run of `room` passage tokens
        with that query is a pair of at most max_length tokens. The passage is tokenized alone, as the
        tokenizer tokenizes each side of a pair; a long query is cut first, as _encode_long cuts it.
        """
        slots, _ = self._template(2)
        budget = self.max_length - sum(len(ids) for ids, _ in slots)
        if budget < 0:
            raise ConfigError(f"max_length {self.max_length} leaves no room for a passage beside the "
                              f"{self.max_length - budget} special tokens of {self.source}'s pair template")
        encoding = self._untruncated().encode(passage, add_special_tokens=False)
        passage_ids = np.asarray(encoding.ids, dtype=np.int32)                       # [N]
        offsets = np.asarray(encoding.offsets, dtype=np.int32).reshape(-1, 2)        # [N, 2]
        del encoding
        query_ids, whole = self._prefix_tokens(query, len(passage_ids))
        kept = _longest_first([len(query_ids), len(passage_ids)], budget)[0]
        if kept < len(query_ids) or not whole:
            _warn_truncation()
        return SplitPair(np.asarray(query_ids[:kept], dtype=np.int64), passage_ids, offsets, budget - kept)

    def join_pair(self, query_ids, passage_ids) -> tuple[np.ndarray, np.ndarray]:
        """(ids [T], type_ids [T]) int64: these query and passage tokens in the pair template, with the type
        ids encode_pairs gives ([CLS] query [SEP] passage [SEP]; nothing is truncated here)."""
        slots, side_types = self._template(2)
        ids, type_ids = _assemble(slots, side_types, [query_ids, passage_ids])
        return (ids, type_ids) if self.token_types else (ids, np.zeros_like(type_ids))

    def _prefix_tokens(self, text: str, other: int) -> tuple[list[int], bool]:
        """(the tokens of `text`, or of a prefix of it, whether that is all of it): a prefix only when it has at
        least max_length tokens and more than the `other` side's whole count, so that longest_first keeps
        of it what it keeps of the whole (see _encode_long)."""
        counter, limit = self._untruncated(), self.char_cap
        while True:
            cut = text if self._cut is None else self._cut(text, limit)
            ids = counter.encode(cut, add_special_tokens=False).ids
            if len(cut) == len(text) or (len(ids) >= self.max_length and len(ids) > other):
                return ids, len(cut) == len(text)
            limit *= 2

    def _untruncated(self) -> Tokenizer:
        """A copy of the tokenizer that neither truncates nor pads (made when first needed)."""
        if self._counter is None:
            counter = Tokenizer.from_str(self.tokenizer.to_str())
            counter.no_truncation()
            counter.no_padding()
            self._counter = counter
        return self._counter

    def _template(self, n_sides: int):
        """The template's special tokens, from a probe ("a" on every side): [(ids, type ids)] before
        side 1, after side 1 (and after side 2), and each side's type id. BERT: [CLS] | [SEP] | [SEP];
        RoBERTa: <s> | </s></s> | </s>."""
        if n_sides not in self._templates:
            self._templates[n_sides] = self._probe_template(n_sides)
        return self._templates[n_sides]

    def _probe_template(self, n_sides: int):
        probe = self._untruncated().encode(*["a"] * n_sides, add_special_tokens=True)   # untruncated
        slots, sides, current = [([], [])], [], None
        for token, type_id, seq in zip(probe.ids, probe.type_ids, probe.sequence_ids):
            if seq is None:
                slots[-1][0].append(token), slots[-1][1].append(type_id)
            elif seq != current:
                current = seq
                sides.append(type_id)
                slots.append(([], []))
        if len(sides) != n_sides:
            raise ModelFormatError(f"{self.source}: the tokenizer gives no tokens for 'a'; cannot read its template")
        return slots, sides


@dataclass(frozen=True)
class SplitPair:
    """A pair taken apart by PairTokenizer.split_pair."""
    query_ids: np.ndarray      # [Q] int64: the query's tokens that truncation keeps (no special tokens)
    passage_ids: np.ndarray    # [N] int32: every token of the passage
    offsets: np.ndarray        # [N, 2] int32: each passage token's characters in the passage, start and end
    room: int                  # passage tokens that fit beside the query within max_length (may be 0)


def _assemble(slots, side_types, sides) -> tuple[np.ndarray, np.ndarray]:
    """(ids, type_ids) int64 of the template: slots[0], then each side's tokens followed by its slot."""
    ids, type_ids = [np.asarray(slots[0][0], dtype=np.int64)], [np.asarray(slots[0][1], dtype=np.int64)]
    for side, (slot_ids, slot_types) in enumerate(slots[1:]):   # side k, then the specials after it
        ids += [np.asarray(sides[side], dtype=np.int64), np.asarray(slot_ids, dtype=np.int64)]
        type_ids += [np.full(len(sides[side]), side_types[side], dtype=np.int64), np.asarray(slot_types, dtype=np.int64)]
    return np.concatenate(ids), np.concatenate(type_ids)


def _longest_first(counts: list[int], budget: int) -> list[int]:
    """Tokens kept per side, as the tokenizers library's longest_first truncation keeps them."""
    if sum(counts) <= budget:
        return counts
    if len(counts) == 1:
        return [budget]
    n1, n2 = counts
    swap = n1 > n2
    if swap:
        n1, n2 = n2, n1   # n1: the shorter side
    n2 = n1 if n1 > budget else max(n1, budget - n1)
    if n1 + n2 > budget:
        n1 = budget // 2
        n2 = n1 + budget % 2
    return [n2, n1] if swap else [n1, n2]


def _cut_after(text: str, limit: int) -> str:
    """text up to and including the first space, tab or newline at or after limit; all of it if none."""
    found = _BREAK.search(text, limit) if len(text) > limit else None
    return text[:found.end()] if found else text


def _cut_before_space(text: str, limit: int) -> str:
    """text up to (not including) the first space at or after limit that follows an ASCII letter or digit."""
    found = _SPACE_AFTER_ALNUM.search(text, limit) if len(text) > limit else None
    return text[:found.start()] if found else text


_SPACE_AFTER_ALNUM = re.compile(r"(?<=[A-Za-z0-9]) ")
_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def _cutter(tokenizer: Tokenizer):
    """The cut (text, limit) -> prefix that provably keeps a prefix of the tokens, for the pipelines where
    one is known; None for anything else, which is tokenized whole.

    - BERT's (WordPiece after the BERT pre-tokenizer, BERT or lowercase normalizers): after whitespace
      (see _BREAK).
    - RoBERTa's (BPE after ByteLevel with its GPT-2 split, no normalizer) and XLM-R's / CamemBERT's
      (Unigram after WhitespaceSplit + Metaspace, Precompiled normalizer), also with the Lowercase that
      do_lower_case puts first: before a space that follows an ASCII letter or digit. Every piece of
      the GPT-2 split ends at such a place (letters, digits and punctuation runs stop at a space, and
      whitespace runs do not reach a letter); WhitespaceSplit splits there; the normalizers map one
      grapheme at a time, and a grapheme never spans a letter or digit and the space after it; the
      BPE / Unigram model then runs on each piece alone. So the pieces, and the tokens, before the
      cut are those of the whole text. Added tokens are matched before all this; none may hold a space.
    """
    norm = tokenizer.normalizer
    parts = list(norm) if isinstance(norm, normalizers.Sequence) else [] if norm is None else [norm]
    pre = tokenizer.pre_tokenizer
    if isinstance(tokenizer.model, WordPiece) and isinstance(pre, pre_tokenizers.BertPreTokenizer) \
            and all(isinstance(n, (normalizers.BertNormalizer, normalizers.Lowercase)) for n in parts):
        return _cut_after
    if any(" " in token.content for token in tokenizer.get_added_tokens_decoder().values()):
        return None
    byte_level = isinstance(tokenizer.model, BPE) and isinstance(pre, pre_tokenizers.ByteLevel) and pre.use_regex \
        and all(isinstance(n, normalizers.Lowercase) for n in parts)
    pieces = list(pre) if isinstance(pre, pre_tokenizers.Sequence) else []
    sentencepiece = isinstance(tokenizer.model, Unigram) and len(pieces) == 2 \
        and isinstance(pieces[0], pre_tokenizers.WhitespaceSplit) and isinstance(pieces[1], pre_tokenizers.Metaspace) \
        and all(isinstance(n, (normalizers.Precompiled, normalizers.Lowercase)) for n in parts)
    probe = f"{_ALNUM} {_ALNUM}"
    if (byte_level or sentencepiece) and (norm is None or norm.normalize_str(probe).lower() == probe.lower()):
        return _cut_before_space
    return None


def _arrays(encodings) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(np.asarray(e.ids, dtype=np.int64), np.asarray(e.type_ids, dtype=np.int64)) for e in encodings]


def _warn_truncation():
    """Once per process: some text was longer than max_length tokens and lost its end.

    The warning points at the caller's line that called into minibert (predict, encode, a stream's next).
    """
    global _warned_truncation
    if not _warned_truncation:
        _warned_truncation = True
        level, frame = 1, sys._getframe(0)
        while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
            level, frame = level + 1, frame.f_back
        warnings.warn("minibert: an input was longer than max_length tokens and was truncated (this warning "
                      "is shown once; warnings.filterwarnings('ignore', category=minibert.TruncationWarning) "
                      "silences it)", TruncationWarning, stacklevel=level)


def check_text(text, index: int, what: str = "text") -> str:
    """A text must be a str that is valid Unicode (no lone surrogates)."""
    if not isinstance(text, str):
        raise InputError(f"{what} {index}: expected a str, found {type(text).__name__}")
    check_unicode(text, f"{what} {index}:")
    return text


def check_unicode(text: str, subject: str):
    """Text the tokenizer can take: valid Unicode, so no lone surrogates. `subject` starts the message."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(f"{subject} not valid Unicode text ({exc.reason} at position {exc.start})") from None


def check_pair(pair, index: int) -> tuple[str, str]:
    """A pair must be two str that are valid Unicode text (no lone surrogates)."""
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        found = f"a {type(pair).__name__} of length {len(pair)}" if isinstance(pair, (tuple, list)) \
            else f"{type(pair).__name__}"
        raise InputError(f"pair {index}: expected (query, passage), two strings; found {found}")
    for side, text in zip(("query", "passage"), pair):
        if not isinstance(text, str):
            raise InputError(f"pair {index}: the {side} must be a str, found {type(text).__name__}")
        check_unicode(text, f"pair {index}: the {side} is")
    return (pair[0], pair[1])


def read_tokenizer(model_dir: str | Path, config, default_class: str, max_length: int | None = None) -> PairTokenizer:
    """The tokenizer of a model directory, as transformers' AutoTokenizer would load it, truncating to max_length.

    config: the model's Config (its max_tokens bound max_length); default_class: the tokenizer class
    AutoTokenizer picks for the model's family when tokenizer_config.json names none."""
    model_dir = Path(model_dir)
    tc_path = model_dir / "tokenizer_config.json"
    tc = read_json_object(tc_path, ConfigError) if tc_path.is_file() else {}
    max_length = resolve_max_length(max_length, tc, config, tc_path)
    tokenizer, source, kind = build_tokenizer(model_dir, tc, default_class)
    names = tc.get("model_input_names", kind.model_input_names)
    token_types = isinstance(names, (list, tuple)) and "token_type_ids" in names
    return PairTokenizer(tokenizer, max_length, str(source), token_types, cuttable=kind.cuttable)


def build_tokenizer(model_dir: Path, tc: dict, default_class: str):
    """(tokenizers.Tokenizer, source, TokenizerClass): the pipeline of the class tokenizer_config.json names (else
    `default_class`), built from the directory's files as transformers builds it."""
    name = tc.get("tokenizer_class") or default_class
    if not isinstance(name, str) or _class_name(name) not in TOKENIZER_CLASSES:
        raise ConfigError(f"{model_dir / 'tokenizer_config.json'}: tokenizer_class {show(name)} is not one minibert "
                          f"reproduces; it knows {', '.join(sorted(TOKENIZER_CLASSES))}")
    kind = TOKENIZER_CLASSES[_class_name(name)]
    tokenizer, source = kind.build(model_dir, tc)
    return tokenizer, source, kind


@dataclass(frozen=True)
class TokenizerClass:
    """What one of transformers' tokenizer classes does with a model directory's files."""
    build: Callable            # (model_dir, tokenizer_config) -> (tokenizers.Tokenizer with its template, source)
    model_input_names: tuple   # the class's default: does the model get token_type_ids?
    cuttable: bool = False     # minibert builds the class's pipeline, so _encode_long may cut long texts


def _class_name(name: str) -> str:
    return name[:-4] if name.endswith("Fast") and name != "PreTrainedTokenizerFast" else name


def _tokenizer_json(model_dir: Path):
    """tokenizer.json as the tokenizers library reads it, or None when the directory has none."""
    json_path = model_dir / "tokenizer.json"
    if not json_path.is_file():
        return None, json_path
    try:
        return Tokenizer.from_file(str(json_path)), json_path
    except Exception as exc:  # tokenizers raises a bare Exception on a bad file
        raise ModelFormatError(f"{json_path}: cannot load tokenizer: {exc}") from None


def _no_tokenizer(model_dir: Path, wanted: str):
    spm = [name for name in ("spm.model", "sentencepiece.bpe.model", "tokenizer.model") if (model_dir / name).is_file()]
    if spm:
        raise ModelFormatError(
            f"{model_dir}: only a SentencePiece model ({spm[0]}), no tokenizer.json. minibert reads tokenizer.json; "
            "write one once with transformers: AutoTokenizer.from_pretrained(DIR).save_pretrained(DIR)")
    raise ModelFormatError(f"{model_dir}: no tokenizer: expected {wanted}")


def _bert_tokenizer(model_dir: Path, tc: dict):
    """BertTokenizer: WordPiece, BERT normalization from tokenizer_config.json, [CLS] A [SEP] B [SEP]."""
    tokenizer, source = _tokenizer_json(model_dir)
    vocab_path = model_dir / "vocab.txt"
    if tokenizer is not None:
        if isinstance(tokenizer.model, WordPiece) and isinstance(tokenizer.normalizer, normalizers.BertNormalizer):
            tokenizer.normalizer = _bert_normalizer(tc, clean_text=tokenizer.normalizer.clean_text)
    elif vocab_path.is_file():
        tokenizer, source = _from_vocab_txt(vocab_path, tc), vocab_path
    else:
        _no_tokenizer(model_dir, "tokenizer.json or vocab.txt")

    cls, sep = _token(tc, "cls_token", "[CLS]"), _token(tc, "sep_token", "[SEP]")
    tokenizer.post_processor = TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0",
        pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, _token_id(tokenizer, cls, source)), (sep, _token_id(tokenizer, sep, source))],
    )
    return tokenizer, source


def _file_tokenizer(model_dir: Path, tc: dict):
    """PreTrainedTokenizerFast: tokenizer.json as it is, its post-processor included."""
    tokenizer, source = _tokenizer_json(model_dir)
    if tokenizer is None:
        _no_tokenizer(model_dir, "tokenizer.json")
    return tokenizer, source


def _deberta_v2_tokenizer(model_dir: Path, tc: dict):
    """DebertaV2Tokenizer (transformers 5): tokenizer.json's Unigram pieces in the class's own pipeline.

    Whitespace runs, tabs and newlines become one space, then NFC and a right strip (lowercasing
    first with do_lower_case); split_by_punct isolates punctuation; Metaspace marks the words
    ("always" prefixes a space, add_prefix_space false only the first word); [CLS] A [SEP] B [SEP]
    with token types 0 and 1. tokenizer.json's own normalizer (SentencePiece's precompiled charsmap)
    and added tokens are not used: the added tokens are tokenizer_config.json's, then the special tokens.
    """
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        _no_tokenizer(model_dir, "tokenizer.json")
    raw = read_json_object(path, ModelFormatError)
    model = raw.get("model") if isinstance(raw.get("model"), dict) else {}
    vocab = model.get("vocab")
    if model.get("type") != "Unigram" or not isinstance(vocab, list) or not all(
            isinstance(v, list) and len(v) == 2 and isinstance(v[0], str) for v in vocab):
        raise ModelFormatError(f"{path}: DebertaV2Tokenizer reads a SentencePiece Unigram model (\"type\": \"Unigram\" "
                               f"with [piece, score] pairs), found model type {show(model.get('type'))}")
    pieces = [(piece, score) for piece, score in vocab]
    specials, added = _deberta_v2_special_tokens(model_dir, tc, raw)
    unk = str(specials["unk_token"])
    unk_id = pieces.index((unk, 0.0)) if (unk, 0.0) in pieces else tc.get("unk_id", 1)  # as the class does
    try:
        tokenizer = Tokenizer(Unigram(pieces, unk_id=unk_id, byte_fallback=False))
    except Exception as exc:
        raise ModelFormatError(f"{path}: cannot build the Unigram model: {exc}") from None
    lowercase = [normalizers.Lowercase()] if tc.get("do_lower_case", False) else []
    tokenizer.normalizer = normalizers.Sequence(
        [*lowercase, normalizers.Replace(Regex(r"\s{2,}|[\n\r\t]"), " "), normalizers.NFC(),
         normalizers.Strip(left=False, right=True)])
    punct = [pre_tokenizers.Punctuation(behavior="isolated")] if tc.get("split_by_punct", False) else []
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [*punct, pre_tokenizers.Metaspace(replacement="\u2581",
                                          prepend_scheme="always" if tc.get("add_prefix_space", True) else "first")])
    # The added tokens by index, then the special tokens not among them, as transformers adds them.
    tokens = {t.content: t for t in added}
    for token in specials.values():
        tokens.setdefault(str(token), token if isinstance(token, AddedToken) else AddedToken(str(token), special=True))
    tokenizer.add_tokens(list(tokens.values()))
    cls, sep = str(specials["cls_token"]), str(specials["sep_token"])
    tokenizer.post_processor = TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0",
        pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, _token_id(tokenizer, cls, path)), (sep, _token_id(tokenizer, sep, path))],
    )
    return tokenizer, path


# DebertaV2Tokenizer's special tokens and their defaults, in transformers' order (SPECIAL_TOKENS_ATTRIBUTES).
_DEBERTA_V2_SPECIALS = {"bos_token": "[CLS]", "eos_token": "[SEP]", "unk_token": "[UNK]", "sep_token": "[SEP]",
                        "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]"}


def _deberta_v2_special_tokens(model_dir: Path, tc: dict, tokenizer_json: dict):
    """({special token name: str or AddedToken}, [added AddedToken by index]) as transformers' from_pretrained
    reads them: tokenizer_config.json's added_tokens_decoder, or (older directories) special_tokens_map.json
    and tokenizer.json's added_tokens."""
    specials = {name: tc.get(name, default) for name, default in _DEBERTA_V2_SPECIALS.items()}
    if isinstance(tc.get("added_tokens_decoder"), dict):
        entries = [(int(i), t) for i, t in tc["added_tokens_decoder"].items() if str(i).isdigit()]
    else:
        stm_path = model_dir / "special_tokens_map.json"
        stm = read_json_object(stm_path, ConfigError) if stm_path.is_file() else {}
        specials.update({name: stm[name] for name in _DEBERTA_V2_SPECIALS if stm.get(name)})
        listed = tokenizer_json.get("added_tokens") if isinstance(tokenizer_json.get("added_tokens"), list) else []
        entries = [(t.get("id", 0), t) for t in listed if isinstance(t, dict)]
    added = [_added_token(t) for _, t in sorted(entries, key=lambda e: e[0])]
    by_content = {t.content: t for t in added}
    for name, value in specials.items():
        if isinstance(value, dict):  # an AddedToken serialized in special_tokens_map.json / tokenizer_config.json
            value = _added_token({**value, "special": True})
        specials[name] = by_content.get(str(value), value)
    return specials, added


def _added_token(entry) -> AddedToken:
    if not isinstance(entry, dict) or not isinstance(entry.get("content"), str):
        raise ConfigError(f"an added token must be an object with a string 'content', found {show(entry)}")
    flags = {k: bool(entry[k]) for k in ("single_word", "lstrip", "rstrip", "normalized", "special") if k in entry}
    return AddedToken(entry["content"], **flags)


def _token_id(tokenizer: Tokenizer, token: str, source) -> int:
    token_id = tokenizer.token_to_id(token)
    if token_id is None:
        raise ModelFormatError(f"{source}: special token {token!r} is not in the vocabulary")
    return token_id


def _roberta_tokenizer(model_dir: Path, tc: dict):
    """RobertaTokenizer: byte-level BPE, no normalizer, <s> A </s></s> B </s> (RobertaProcessing), all type 0.

    As transformers 5 rebuilds it: the vocabulary and merges from tokenizer.json (or vocab.json +
    merges.txt), its own BPE settings, ByteLevel pre-tokenizer with tokenizer_config.json's
    add_prefix_space (default false); tokenizer.json's normalizer, pre-tokenizer and post-processor
    are not used. Added tokens (<s>, </s>, <mask>, ...) are tokenizer.json's.
    """
    bpe = {"dropout": None, "unk_token": None, "continuing_subword_prefix": "", "end_of_word_suffix": "",
           "fuse_unk": False, "byte_fallback": False, "ignore_merges": False}
    raw, source = _tokenizer_json_dict(model_dir)
    if raw is not None:
        if not isinstance(raw.get("model"), dict) or raw["model"].get("type") != "BPE":
            raise ModelFormatError(f"{source}: a RobertaTokenizer needs a BPE model, found "
                                   f"{show(raw.get('model', {}).get('type') if isinstance(raw.get('model'), dict) else None)}")
        raw["model"].update(bpe)
        tokenizer = _tokenizer_from_dict(raw, source)
    elif (model_dir / "vocab.json").is_file() and (model_dir / "merges.txt").is_file():
        source = model_dir / "vocab.json"
        try:
            vocab, merges = BPE.read_file(str(source), str(model_dir / "merges.txt"))
            tokenizer = Tokenizer(BPE(vocab, merges, **bpe))
        except Exception as exc:  # tokenizers raises a bare Exception on a bad file
            raise ModelFormatError(f"{source}, merges.txt: cannot load the BPE vocabulary: {exc}") from None
        tokenizer.add_special_tokens(_added_tokens(model_dir, tc))
    else:
        _no_tokenizer(model_dir, "tokenizer.json, or vocab.json and merges.txt")
    add_prefix_space = bool(tc.get("add_prefix_space", False))
    tokenizer.normalizer = None
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
    cls, sep = _token(tc, "cls_token", "<s>"), _token(tc, "sep_token", "</s>")
    tokenizer.post_processor = processors.RobertaProcessing(
        (sep, _token_id(tokenizer, sep, source)), (cls, _token_id(tokenizer, cls, source)),
        trim_offsets=bool(tc.get("trim_offsets", True)), add_prefix_space=add_prefix_space)
    return tokenizer, source


_ROBERTA_SPECIALS = (("bos_token", "<s>"), ("eos_token", "</s>"), ("unk_token", "<unk>"), ("sep_token", "</s>"),
                     ("pad_token", "<pad>"), ("cls_token", "<s>"), ("mask_token", "<mask>"))


def _added_tokens(model_dir: Path, tc: dict) -> list:
    """The special tokens transformers adds to a tokenizer it builds from vocab files: tokenizer_config.json's
    added_tokens_decoder, then the named ones (special_tokens_map.json's, else tokenizer_config.json's, else
    the class's defaults), with their lstrip / rstrip / single_word / normalized flags."""
    map_path = model_dir / "special_tokens_map.json"
    named = read_json_object(map_path, ConfigError) if map_path.is_file() else {}
    entries = [entry for _, entry in sorted(((int(k), v) for k, v in (tc.get("added_tokens_decoder") or {}).items()),
                                            key=lambda kv: kv[0])]
    entries += [named.get(key, tc.get(key, default)) for key, default in _ROBERTA_SPECIALS]
    tokens, seen = [], set()
    for entry in entries:
        content = entry.get("content") if isinstance(entry, dict) else entry
        if not isinstance(content, str) or content in seen:
            continue
        seen.add(content)
        flags = {k: bool(entry[k]) for k in ("lstrip", "rstrip", "single_word", "normalized")
                 if isinstance(entry, dict) and k in entry}
        tokens.append(AddedToken(content, special=True, **flags))
    return tokens


def _sentencepiece_tokenizer(kind: str):
    """XLMRobertaTokenizer / CamembertTokenizer: SentencePiece Unigram, <s> A </s> </s> B </s>, all type 0.

    As transformers 5 rebuilds them: the Unigram pieces and scores from tokenizer.json, byte_fallback
    off, the unknown piece id 3 (XLM-R) or the unk_token's index (CamemBERT, 0 if absent); of
    tokenizer.json's normalizer only the Precompiled charsmap (SentencePiece's NFKC rules);
    WhitespaceSplit then Metaspace ("▁", prepend_scheme "always", or "never" when
    tokenizer_config.json's add_prefix_space is false). Added tokens are tokenizer.json's.
    """
    def build(model_dir: Path, tc: dict):
        raw, source = _tokenizer_json_dict(model_dir)
        if raw is None:
            _no_tokenizer(model_dir, "tokenizer.json")
        model = raw.get("model")
        if not isinstance(model, dict) or model.get("type") != "Unigram" or not isinstance(model.get("vocab"), list):
            raise ModelFormatError(f"{source}: a {kind} needs a Unigram model with a vocab list")
        unk = _token(tc, "unk_token", "<unk>")
        if kind == "XLMRobertaTokenizer":
            unk_id = 3
        else:
            unk_id = next((i for i, piece in enumerate(model["vocab"]) if piece and piece[0] == unk), 0)
        model.update({"unk_id": unk_id, "byte_fallback": False})
        charsmap = _precompiled(raw.get("normalizer"))
        raw["normalizer"] = None if charsmap is None else {"type": "Precompiled", "precompiled_charsmap": charsmap}
        tokenizer = _tokenizer_from_dict(raw, source)
        scheme = "always" if tc.get("add_prefix_space", True) else "never"
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme=scheme)])
        bos, eos = _token(tc, "bos_token", "<s>"), _token(tc, "eos_token", "</s>")
        tokenizer.post_processor = TemplateProcessing(
            single=[bos, "$A", eos], pair=[bos, "$A", eos, eos, "$B", eos],
            special_tokens=[(bos, _token_id(tokenizer, bos, source)), (eos, _token_id(tokenizer, eos, source))])
        return tokenizer, source
    return build


def _precompiled(normalizer):
    """The precompiled_charsmap of a Precompiled normalizer in tokenizer.json (alone or in a Sequence), or None."""
    if not isinstance(normalizer, dict):
        return None
    parts = normalizer.get("normalizers", []) if normalizer.get("type") == "Sequence" else [normalizer]
    return next((n["precompiled_charsmap"] for n in parts
                 if isinstance(n, dict) and n.get("type") == "Precompiled" and n.get("precompiled_charsmap")), None)


def _tokenizer_json_dict(model_dir: Path):
    """tokenizer.json as a dict (for the classes that rebuild parts of it), or None when there is none."""
    json_path = model_dir / "tokenizer.json"
    if not json_path.is_file():
        return None, json_path
    return read_json_object(json_path, ModelFormatError), json_path


def _tokenizer_from_dict(raw: dict, source) -> Tokenizer:
    try:
        return Tokenizer.from_str(json.dumps(raw))
    except Exception as exc:  # tokenizers raises a bare Exception on a bad file
        raise ModelFormatError(f"{source}: cannot load tokenizer: {exc}") from None


def _bpe_rebuilt(kind: str, bpe: dict, normalizer, pre_tokenizer):
    """A class that transformers 5 rebuilds around tokenizer.json's BPE vocabulary and merges: the class's own BPE
    settings, normalizer and pre-tokenizer; tokenizer.json's added tokens and post-processor (none: none)."""
    def build(model_dir: Path, tc: dict):
        raw, source = _tokenizer_json_dict(model_dir)
        if raw is None:
            _no_tokenizer(model_dir, "tokenizer.json")
        if not isinstance(raw.get("model"), dict) or raw["model"].get("type") != "BPE":
            raise ModelFormatError(f"{source}: a {kind} needs a BPE model (\"type\": \"BPE\")")
        settings = {"unk_token": _token(tc, "unk_token", "<unk>")} if bpe.get("unk_token") else {}
        model = {k: raw["model"][k] for k in ("type", "vocab", "merges") if k in raw["model"]}
        raw["model"] = {**model, "continuing_subword_prefix": None, "end_of_word_suffix": None,
                        "ignore_merges": False, **bpe, **settings}
        raw["normalizer"], raw["pre_tokenizer"] = None, None
        tokenizer = _tokenizer_from_dict(raw, source)
        tokenizer.normalizer, tokenizer.pre_tokenizer = normalizer(tc), pre_tokenizer(tc)
        return tokenizer, source
    return build


# Qwen2Tokenizer's pre-tokenizer pattern (transformers' tokenization_qwen2.py): digits one by one, letters with one
# leading non-letter, punctuation runs, newlines, spaces.
QWEN2_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
                 r"""\s*[\r\n]+|\s+(?!\S)|\s+""")

# Qwen2Tokenizer (Qwen2, Qwen3): byte-level BPE, NFC, Qwen's split pattern then bytes; no special tokens added
# (tokenizer.json's post-processor, which for Qwen adds none).
QWEN2_TOKENIZER = TokenizerClass(_bpe_rebuilt(
    "Qwen2Tokenizer", {"dropout": None, "fuse_unk": False, "byte_fallback": False, "unk_token": None},
    lambda tc: normalizers.NFC(),
    lambda tc: pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=bool(tc.get("add_prefix_space") or False), use_regex=False)])),
    ("input_ids", "attention_mask"))
# GemmaTokenizer: a SentencePiece-style BPE with byte fallback: spaces become "▁" (no prefix space), split after
# each space; unknown characters become their UTF-8 bytes (<0x..>); <bos> as tokenizer.json's post-processor says.
GEMMA_TOKENIZER = TokenizerClass(_bpe_rebuilt(
    "GemmaTokenizer", {"dropout": None, "fuse_unk": True, "byte_fallback": True, "unk_token": True},
    lambda tc: normalizers.Replace(" ", "\u2581"),
    lambda tc: pre_tokenizers.Split(" ", behavior="merged_with_previous", invert=False)),
    ("input_ids", "attention_mask"))

BERT_TOKENIZER = TokenizerClass(_bert_tokenizer, ("input_ids", "token_type_ids", "attention_mask"), cuttable=True)
# transformers' tokenizer classes (their names without "Fast") -> what minibert does for each.
TOKENIZER_CLASSES = {
    "BertTokenizer": BERT_TOKENIZER,
    "ElectraTokenizer": BERT_TOKENIZER,  # transformers 5 has no ElectraTokenizer: AutoTokenizer loads BertTokenizer
    # BertTokenizer's pipeline (a subclass, do_lower_case defaulting to True as BERT's), no token types
    "DistilBertTokenizer": TokenizerClass(_bert_tokenizer, ("input_ids", "attention_mask"), cuttable=True),
    "PreTrainedTokenizerFast": TokenizerClass(_file_tokenizer, ("input_ids", "token_type_ids", "attention_mask")),
    "TokenizersBackend": TokenizerClass(_file_tokenizer, ("input_ids", "token_type_ids", "attention_mask")),
    "RobertaTokenizer": TokenizerClass(_roberta_tokenizer, ("input_ids", "attention_mask"), cuttable=True),
    "XLMRobertaTokenizer": TokenizerClass(_sentencepiece_tokenizer("XLMRobertaTokenizer"), ("input_ids", "attention_mask"),
                                          cuttable=True),
    "CamembertTokenizer": TokenizerClass(_sentencepiece_tokenizer("CamembertTokenizer"), ("input_ids", "attention_mask"),
                                         cuttable=True),
    "Qwen2Tokenizer": QWEN2_TOKENIZER,
    "GemmaTokenizer": GEMMA_TOKENIZER,
    "DebertaV2Tokenizer": TokenizerClass(_deberta_v2_tokenizer, ("input_ids", "attention_mask", "token_type_ids")),
}


def resolve_max_length(max_length, tc: dict, config, tc_path: Path) -> int:
    """An explicit max_length must fit the model; the default is min(model_max_length, positions)."""
    limit = config.max_tokens
    if max_length is not None:
        if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)) \
                or not MIN_MAX_LENGTH <= max_length <= limit:
            raise ConfigError(
                f"max_length must be an integer in [{MIN_MAX_LENGTH}, {limit}] "
                f"(the positions of {config.source}), found {max_length!r}")
        return int(max_length)
    declared = tc.get("model_max_length")
    if isinstance(declared, int) and not isinstance(declared, bool) \
            and MIN_MAX_LENGTH <= declared <= _SANE_MODEL_MAX_LENGTH:
        return min(declared, limit)
    return limit


def _token(tc: dict, key: str, default: str) -> str:
    value = tc.get(key, default)
    if isinstance(value, dict):  # an AddedToken serialized as {"content": ...}
        value = value.get("content", default)
    return str(value)


def _bert_normalizer(tc: dict, clean_text: bool = True):
    # BertTokenizer's defaults: lowercase, strip accents when lowercasing, split CJK characters.
    return normalizers.BertNormalizer(
        clean_text=clean_text,
        handle_chinese_chars=bool(tc.get("tokenize_chinese_chars", True)),
        strip_accents=tc.get("strip_accents"),
        lowercase=bool(tc.get("do_lower_case", True)),
    )


def _from_vocab_txt(path: Path, tc: dict) -> Tokenizer:
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelFormatError(f"{path}: cannot read vocabulary: {exc}") from None
    if lines and lines[-1] == "":
        lines.pop()  # the file's final newline
    vocab = {}
    for index, token in enumerate(lines):
        vocab[token] = index  # as transformers: a repeated token keeps its last index
    unk = _token(tc, "unk_token", "[UNK]")
    if unk not in vocab:
        raise ModelFormatError(f"{path}: the unknown token {unk!r} is not in the vocabulary")
    tokenizer = Tokenizer(WordPiece(vocab, unk_token=unk, max_input_chars_per_word=100))
    tokenizer.normalizer = _bert_normalizer(tc)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = [_token(tc, key, default) for key, default in (
        ("unk_token", "[UNK]"), ("sep_token", "[SEP]"), ("pad_token", "[PAD]"),
        ("cls_token", "[CLS]"), ("mask_token", "[MASK]"))]
    tokenizer.add_special_tokens([s for s in specials if s in vocab])
    return tokenizer


def lowercase_first(tokenizer: Tokenizer) -> None:
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
