"""Pairs of texts -> token ids, as transformers' fast tokenizer makes them for a cross-encoder.

A pair becomes the tokenizer class's pair template: for BERT [CLS] query [SEP] passage [SEP],
with token type 0 for the first three parts and 1 for the last two; for RoBERTa
<s> query </s></s> passage </s>. It is truncated 'longest_first' to max_length tokens (special
tokens included, as many as the template adds): the longer side loses a token until the pair fits.

The tokenizer class is the one transformers' AutoTokenizer picks: tokenizer_config.json's
`tokenizer_class`, else the family's (BertTokenizer for model_type bert, ...). Like transformers 5,
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

import os
import re
import sys
import warnings
from pathlib import Path

from dataclasses import dataclass
from typing import Callable

import numpy as np
from tokenizers import AddedToken, Regex, Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import Unigram, WordPiece
from tokenizers.processors import TemplateProcessing

from minibert.config import read_json_object, show
from minibert.errors import ConfigError, InputError, ModelFormatError, TruncationWarning

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
_PACKAGE_DIR = str(Path(__file__).resolve().parent) + os.sep


class PairTokenizer:
    def __init__(self, tokenizer: Tokenizer, max_length: int, source: str, token_types: bool = True,
                 cuttable: bool = True):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.source = source
        self.token_types = token_types  # False: the model sees token type 0 everywhere
        self._cuttable = cuttable and _cuttable(tokenizer)  # see _encode_long
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length, strategy="longest_first", direction="right", stride=0)
        self._counter = None  # a copy without truncation, to count a prefix's tokens (made when first needed)

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
        """[text, ...] -> [(ids, type_ids), ...] for single texts: [CLS] text [SEP], all type 0."""
        return self._encode([(check_text(text, first_index + i),) for i, text in enumerate(texts)])

    def _encode(self, inputs: list[tuple[str, ...]]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Inputs of one or two sides -> arrays; a side longer than char_cap goes through `_encode_long`."""
        long = [i for i, sides in enumerate(inputs) if max(map(len, sides)) > self.char_cap]
        if long and not self._cuttable:
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
        a prefix of its tokens (see _BREAK). Then longest_first truncation is applied as the tokenizer
        applies it, and [CLS] / [SEP] are added as its template adds them.

        The cut must not change what truncation keeps: a cut side must keep at least max_length
        tokens (truncation keeps fewer), and since longest_first gives the odd token of an odd budget
        to the longer side (the passage on a tie), more tokens than the other side has whole; of two
        long sides one is therefore tokenized whole. Until that holds the cut moves twice as far:
        the cost stays linear in the text's length, and ordinary text stops at the first cut.
        """
        if self._counter is None:
            self._counter = Tokenizer.from_str(self.tokenizer.to_str())
            self._counter.no_truncation()
            self._counter.no_padding()
        limit = self.char_cap
        while True:
            cut = [_cut_after(side, limit) for side in sides]
            whole = [len(c) == len(side) for c, side in zip(cut, sides)]
            tokens = [self._counter.encode(c, add_special_tokens=False).ids for c in cut]
            counts = [len(t) for t in tokens]
            if all(w or (n >= self.max_length and all(whole[j] and counts[j] < n for j in range(len(cut)) if j != i))
                   for i, (w, n) in enumerate(zip(whole, counts))):
                break
            limit *= 2
        specials = self.tokenizer.encode(*[""] * len(sides), add_special_tokens=True).ids   # [CLS] [SEP] ([SEP])
        budget = self.max_length - len(specials)
        kept = _longest_first(counts, budget)
        if not all(whole) or kept != counts:
            _warn_truncation()
        ids = [specials[0], *tokens[0][:kept[0]], specials[1]]
        type_ids = [0] * len(ids)
        if len(sides) == 2:
            ids += [*tokens[1][:kept[1]], specials[2]]
            type_ids += [1] * (kept[1] + 1)
        return np.asarray(ids, dtype=np.int64), np.asarray(type_ids, dtype=np.int64)


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


def _cuttable(tokenizer: Tokenizer) -> bool:
    """True for BERT's pipeline (WordPiece after the BERT pre-tokenizer, BERT or lowercase normalizers),
    where a cut after whitespace provably keeps the tokens before it. Anything else is tokenized whole."""
    norm = tokenizer.normalizer
    parts = list(norm) if isinstance(norm, normalizers.Sequence) else [] if norm is None else [norm]
    return isinstance(tokenizer.model, WordPiece) \
        and isinstance(tokenizer.pre_tokenizer, pre_tokenizers.BertPreTokenizer) \
        and all(isinstance(n, (normalizers.BertNormalizer, normalizers.Lowercase)) for n in parts)


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


def load_tokenizer(model_dir: str | Path, config, max_length: int | None = None) -> PairTokenizer:
    """The tokenizer of a model directory, as transformers' AutoTokenizer would load it, truncating to max_length."""
    from minibert.models import family_of

    model_dir = Path(model_dir)
    tc_path = model_dir / "tokenizer_config.json"
    tc = read_json_object(tc_path, ConfigError) if tc_path.is_file() else {}
    max_length = resolve_max_length(max_length, tc, config, tc_path)
    name = tc.get("tokenizer_class") or family_of(config).tokenizer_class
    if not isinstance(name, str) or _class_name(name) not in TOKENIZER_CLASSES:
        raise ConfigError(f"{tc_path}: tokenizer_class {show(name)} is not one minibert reproduces; it knows "
                          f"{', '.join(sorted(TOKENIZER_CLASSES))}")
    kind = TOKENIZER_CLASSES[_class_name(name)]
    tokenizer, source = kind.build(model_dir, tc)
    names = tc.get("model_input_names", kind.model_input_names)
    token_types = isinstance(names, (list, tuple)) and "token_type_ids" in names
    return PairTokenizer(tokenizer, max_length, str(source), token_types, cuttable=kind is BERT_TOKENIZER)


@dataclass(frozen=True)
class TokenizerClass:
    """What one of transformers' tokenizer classes does with a model directory's files."""
    build: Callable            # (model_dir, tokenizer_config) -> (tokenizers.Tokenizer with its template, source)
    model_input_names: tuple   # the class's default: does the model get token_type_ids?


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


BERT_TOKENIZER = TokenizerClass(_bert_tokenizer, ("input_ids", "token_type_ids", "attention_mask"))
# transformers' tokenizer classes (their names without "Fast") -> what minibert does for each.
TOKENIZER_CLASSES = {
    "BertTokenizer": BERT_TOKENIZER,
    "PreTrainedTokenizerFast": TokenizerClass(_file_tokenizer, ("input_ids", "token_type_ids", "attention_mask")),
    "TokenizersBackend": TokenizerClass(_file_tokenizer, ("input_ids", "token_type_ids", "attention_mask")),
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
