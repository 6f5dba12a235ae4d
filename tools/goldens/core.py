"""What every family's fixtures share, written once: texts, tokenizer builders, re-randomization, the
run with stage capture, the checks against transformers, the files and the command line.

A golden is an ordinary HuggingFace model directory (config.json, model.safetensors, tokenizer files)
of a tiny random model, plus what transformers computed from it, so that minibert's tests can say
which stage went wrong, not just that the score did:

- golden.npz: int64 and float32 arrays PACKED over the valid (non-pad) tokens of the padded batch;
  pair b owns rows lengths[:b].sum() : lengths[:b + 1].sum():
      lengths [B]; input_ids, token_type_ids [N]   the tokenizer's ids (type ids 0 where it makes none)
      embeddings [N, H]                             hidden_states[0], what the first layer reads
      layer_0 .. layer_{L-1} [N, H]                 hidden_states[i + 1]
      <the head stage> [B, H]                       what the family's head makes before the last linear
      logits [B, num_labels]                        no activation
- golden.json: provenance, the config, the pairs (the tests read their texts from it), max_length,
  the tokens as strings, ranking groups, and tokenizer_cases (token ids at more truncation lengths).
A token-ids-only fixture has no weights and no golden.npz: config.json, tokenizer files, golden.json.

The reference ids are those of transformers' AutoTokenizer on the written directory, called as
sentence-transformers' CrossEncoder calls it; the stages are those of the model read back from disk,
eager attention, float32. sdpa and sentence-transformers' own CrossEncoder must agree within ATOL.
Same seeds, same bytes, but for golden.json's "date" (SOURCE_DATE_EPOCH pins it).
"""

from __future__ import annotations

import argparse
import datetime
import filecmp
import io
import itertools
import json
import math
import os
import platform
import shutil
import tempfile
import zipfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from pydoc_data.topics import topics

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import tokenizers
import torch
import transformers
from tokenizers import Tokenizer, normalizers, pre_tokenizers, trainers
from tokenizers.models import BPE
from tokenizers.normalizers import BertNormalizer
from tokenizers.pre_tokenizers import BertPreTokenizer
from transformers import AutoModelForSequenceClassification, AutoTokenizer

FORMAT_VERSION = 1
REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
ATOL = RTOL = 1e-5  # what tests/test_goldens.py uses; sdpa and sentence-transformers are held to it here
TOKENIZATION = "tokenizer(queries, passages, padding=True, truncation='longest_first', max_length=max_length)"


# ----------------------------------------------------------------------------------------------
# texts

# Text outside pydoc's ASCII, so that some accented letters and CJK characters are in the vocabularies
# (and others, like emoji and Hangul, are not: they become unknown tokens).
EXTRA_CORPUS = (
    "café résumé naïve über Straße São Paulo crème brûlée Ångström déjà vu façade "
    "日本 東京 中文 文本 北京 大学 ñandú año señor Größe Ärger Öl"
)
PYDOC = [topics[k] for k in sorted(topics)]  # English that ships with CPython: no download, same text everywhere
CORPUS = PYDOC + [EXTRA_CORPUS] * 3


def topic(name: str, start: int, n_chars: int) -> str:
    """A slice of a pydoc topic's body (title and underline dropped), whitespace collapsed."""
    _title, underline, body = topics[name].split("\n", 2)
    assert set(underline) == {"*"}, f"pydoc topic {name!r} has no underlined title"
    return " ".join(body.split())[start : start + n_chars]


LONG_WORD = "supercalifragilistic" * 6  # 120 chars > WordPiece's max_input_chars_per_word=100: one [UNK]

# For one-label models: pairs 0-4 are RANK_GROUP, one query over five passages; the rest are edges of
# truncation and normalization.
RANKING_PAIRS = [
    ("how do I define a function?", "A function definition defines a user-defined function object."),
    ("how do I define a function?", "The for statement is used to iterate over the elements of a sequence."),
    ("how do I define a function?", "Functions are defined with the def keyword, a name and parameters."),
    ("how do I define a function?", "Raising an exception with the raise statement."),
    ("how do I define a function?", "Comparison operators compare the values of two objects."),
    # 5: both sides longer than max_length: longest_first trims the longer one first
    (topic("if", 0, 400), topic("while", 0, 400)),
    # 6: long query, short passage: only the query is cut
    (topic("with", 0, 320), "Context managers."),
    # 7: short query, long passage: only the passage is cut
    ("what is a lambda?", topic("lambda", 0, 400)),
    # 8: accents (an uncased normalizer strips them)
    ("Café naïve résumé?", "Über die Straße: crème brûlée, São Paulo, Ångström."),
    # 9: CJK (split per character), some in the vocab, some not
    ("日本語のテキスト", "中文文本 and 東京 mixed with English words"),
    # 10: emoji (unknown), a skin-tone modifier
    ("python 🐍 snakes 🙂", "rocket 🚀 launch 👍🏽 done"),
    # 11: combining marks (decomposed accents)
    ("e\u0301cole cafe\u0301", "n\u0303 a\u0308 o\u0302 plain"),
    # 12: empty passage
    ("what does the pass statement do?", ""),
    # 13: whitespace-only passage (an ideographic space too)
    ("whitespace", " \t\n  \u3000 "),
    # 14: out of vocabulary: a word longer than 100 chars, symbols
    (f"{LONG_WORD} words", "Ω ∮ zxqv"),
    # 15: control and format characters (BERT's clean_text removes them), CRLF, NUL
    ("zero\u200bwidth soft\u00adhyphen", "tab\tseparated\r\nlines\x00null"),
    # 16: code and punctuation
    ("def f(x): return x**2  # square", "lambda x: x[0] if x else None; print(f'{x!r}')"),
    # 17: duplicate of 0
    ("how do I define a function?", "A function definition defines a user-defined function object."),
    # 18: the same long text on both sides: equal lengths, a longest_first tie
    (topic("try", 0, 300), topic("try", 0, 300)),
]
RANK_GROUP = [[0, 1, 2, 3, 4]]

# For models with several labels (no ranking): case, script and emptiness edges.
LABEL_PAIRS = [
    ("What is an Exception?", "Exceptions are a means of breaking out of the normal flow of control."),
    ("what is an exception?", "EXCEPTIONS ARE A MEANS OF BREAKING OUT OF THE NORMAL FLOW OF CONTROL."),
    (topic("class", 0, 300), topic("import", 0, 300)),  # both sides truncated
    ("Import System", topic("import", 200, 400)),
    # a cased vocabulary keeps accents: letters it lacks become unknown
    ("Café Größe naïve", "Ärger über Öl, año señor, déjà vu façade"),
    ("北京大学 中文", "日本 東京 and 한국어 text"),  # Hangul is in no vocabulary
    ("emoji 😀 test", "flags 🇫🇷 and zwj 👩\u200d💻 sequences"),
    ("e\u0301 combining", "A\u030a and o\u0308"),  # combining marks stay when cased
    ("an empty passage follows", ""),
    ("", "an empty query precedes this passage"),
    ("whitespace only", "\n\n\t \u2003 "),
    (f"{LONG_WORD}", "Unknown words like qzxv and Ω."),
    ("an empty passage follows", ""),  # duplicate of 8
    ("Numbers 3.14159 and 2**10 = 1024", "Literals: 0x1F, 1e-7, 1_000_000, -42j"),
    (topic("for", 0, 500), "short"),
]


# ----------------------------------------------------------------------------------------------
# tokenizer builders: all deterministic (the tokenizers trainers, but BpeTrainer, break ties
# differently from run to run), ties broken by the string


def ranked(counter: Counter, n: int, taken: set) -> list[tuple[str, int]]:
    """The n most frequent entries of length > 1 not in `taken`, ties broken by the string."""
    items = sorted((kv for kv in counter.items() if kv[0] not in taken and len(kv[0]) > 1), key=lambda kv: (-kv[1], kv[0]))
    return items[:n]


@cache
def wordpiece_vocab(lowercase: bool, specials: tuple[str, ...], size: int) -> tuple[str, ...]:
    """Specials, every character (bare and ##), then frequent words, prefixes and ##suffixes.

    Holding every character in both forms, it tokenizes every word made of known characters; the
    frequent pieces make the splits realistic."""
    normalizer = BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase)
    pre = BertPreTokenizer()
    words = Counter(w for text in CORPUS for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(text)))
    char_counts = Counter()
    for w, n in words.items():
        for ch in w:
            char_counts[ch] += n
    chars = sorted(char_counts, key=lambda ch: (-char_counts[ch], ch))
    vocab = [*specials, *chars, *("##" + ch for ch in chars)]
    budget = size - len(vocab)
    assert budget > 0, f"{len(vocab)} characters leave no room in a {size} vocab"

    prefixes, suffixes = Counter(), Counter()
    for w, n in words.items():
        for i in range(2, len(w) - 1):
            prefixes[w[:i]] += n
            suffixes["##" + w[i:]] += n
    taken = set(vocab)
    whole = [w for w, _ in ranked(Counter({w: n for w, n in words.items() if len(w) > 1}), budget * 6 // 10, taken)]
    taken.update(whole)
    starts = [w for w, _ in ranked(prefixes, budget * 2 // 10, taken)]
    taken.update(starts)
    ends = [w for w, _ in ranked(suffixes, budget - len(whole) - len(starts), taken)]
    vocab += whole + starts + ends
    assert len(vocab) == len(set(vocab)) == size
    return tuple(vocab)


def trained_byte_bpe(specials: list[str], vocab_size: int) -> Tokenizer:
    """A byte-level BPE trained on the corpus by tokenizers' BpeTrainer, which gives the same merges every run."""
    tok = Tokenizer(BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    return tok


@cache
def byte_bpe_merges(n_merges: int, train_words: int) -> tuple[tuple[str, str], ...]:
    """Byte-level BPE merges learned here from the corpus's `train_words` most frequent words: the most
    frequent adjacent pair first, ties broken by its text."""
    pre = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    counts = Counter(w for text in CORPUS for w, _ in pre.pre_tokenize_str(text))
    symbols = [(list(w), n) for w, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:train_words]]
    merges = []
    for _ in range(n_merges):
        pairs = Counter()
        for parts, n in symbols:
            for a, b in itertools.pairwise(parts):
                pairs[a, b] += n
        if not pairs:
            break
        best = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        merges.append(best)
        for parts, _ in symbols:
            i = 0
            while i < len(parts) - 1:
                if parts[i] == best[0] and parts[i + 1] == best[1]:
                    parts[i:i + 2] = [best[0] + best[1]]
                i += 1
    return tuple(merges)


def unigram_pieces(specials: list[str], size: int) -> list[tuple[str, float]]:
    """SentencePiece-style Unigram pieces in one pool: specials (score 0), then every character
    (bare and after the "▁" mark), whole words, word starts and word ends, by frequency; score
    log(count / words), and 8 less for a single character, so that a word's pieces beat its letters."""
    pre = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace()])
    words = Counter(w for text in CORPUS for w, _ in pre.pre_tokenize_str(text))
    counts = Counter()
    for w, n in words.items():
        for ch in w:
            counts[ch] += n
        counts[w] += n
        for i in range(2, len(w) - 1):
            counts[w[:i]] += n
            counts[w[i:]] += n
    total = sum(words.values())
    chars = sorted({ch for w in words for ch in w})
    rest = [w for w, _ in ranked(counts, size - len(specials) - len(chars), set(specials) | set(chars))]

    def score(piece):
        return round(math.log(max(counts[piece], 1) / total) - (8.0 if len(piece) == 1 else 0.0), 4)

    return [(s, 0.0) for s in specials] + [(p, score(p)) for p in sorted(chars + rest, key=lambda p: (-counts[p], p))]


def shared_unigram_pieces(specials: list[str], lowercase: bool, size: int, mark: str) -> list[tuple[str, float]]:
    """Unigram pieces in fixed shares: specials (score 0), the mark, every character (4 less than its log
    frequency: always there, rarely chosen), then half the rest whole marked words, a quarter marked
    prefixes, the remainder suffixes, each scored by log frequency."""
    norm = normalizers.Sequence([*([normalizers.Lowercase()] if lowercase else []), normalizers.NFC()])
    words = Counter(w for text in CORPUS for w in norm.normalize_str(text).split())
    chars, wholes, prefixes, suffixes = Counter(), Counter(), Counter(), Counter()
    for w, n in words.items():
        for ch in w:
            chars[ch] += n
        wholes[mark + w] += n
        for i in range(2, min(len(w), 8)):
            prefixes[mark + w[:i]] += n
            suffixes[w[-i:]] += n
    total = sum(chars.values())
    pieces = [(s, 0.0) for s in specials]
    pieces += [(mark, math.log(0.5 * len(words) / total))]
    pieces += [(ch, math.log(n / total) - 4.0) for ch, n in sorted(chars.items(), key=lambda kv: (-kv[1], kv[0]))]
    taken = {p for p, _ in pieces}
    budget = size - len(pieces)
    for counter, n in ((wholes, int(budget * 0.5)), (prefixes, int(budget * 0.25)), (suffixes, None)):
        chosen = ranked(counter, size - len(pieces) if n is None else n, taken)
        pieces += [(p, math.log(c / total)) for p, c in chosen]
        taken.update(p for p, _ in chosen)
    assert len(pieces) == len({p for p, _ in pieces}) == size
    return [(p, round(s, 6)) for p, s in pieces]


@cache
def precompiled_charsmap(rules: tuple[tuple[str, str], ...]) -> bytes:
    """A SentencePiece Precompiled normalization charsmap, compiled by sentencepiece from a few rules
    (real XLM-R carries a large one for NFKC); the throwaway model it trains for it needs a little text."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2

    def codepoints(s):
        return " ".join(f"{ord(c):X}" for c in s)

    with tempfile.TemporaryDirectory() as tmp:
        tsv, text = Path(tmp) / "rules.tsv", Path(tmp) / "text.txt"
        tsv.write_text("".join(f"{codepoints(a)}\t{codepoints(b)}\n" for a, b in rules), encoding="utf-8")
        text.write_text("\n".join(PYDOC)[:100_000], encoding="utf-8")
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(input=str(text), model_writer=model, vocab_size=200, minloglevel=2,
                                       normalization_rule_tsv=str(tsv), num_threads=1)
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model.getvalue())
    return proto.normalizer_spec.precompiled_charsmap


def tokenizer_files(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.startswith(("tokenizer", "vocab", "merges", "special")))


# ----------------------------------------------------------------------------------------------
# re-randomization


@dataclass(frozen=True)
class Scale:
    """mean + std * z, z ~ N(0, 1) per element, plus a per-row offset ~ N(0, row_std) where row_std > 0."""
    std: float
    mean: float = 0.0
    row_std: float = 0.0

    def draw(self, shape: torch.Size, g: torch.Generator) -> torch.Tensor:
        value = self.std * torch.randn(shape, generator=g, dtype=torch.float32)
        if self.mean:
            value = self.mean + value
        if self.row_std:
            value = value + self.row_std * torch.randn((shape[0], 1), generator=g, dtype=torch.float32)
        return value


# Linear weights 0.2 make attention scores ~N(0, 0.04 H): peaked, not one-hot, softmaxes at H ~ 32.
# The layer that makes the logits gets 0.5, so that the logits spread and rankings mean something.
# Norm weights 1 +- 0.2 and biases +-0.1: default init (ones, zeros) would hide swapped or missing ones.
# Embeddings 0.02 (HF's initializer_range); each word row also gets an offset of its own, the same on
# every dimension, so the embedding norm sees a variance ~1e-3 and a mean ~10x its spread, as real
# checkpoints can: a wrong eps (1e-7 vs 1e-12: ~3e-4) or a one-pass variance (~2e-4) then shows in the
# `embeddings` stage while torch's own float32 error stays ~4e-6 (larger offsets push it towards 1e-5).
NORM_WEIGHT, BIAS, LINEAR, LOGITS = Scale(0.2, mean=1.0), Scale(0.1), Scale(0.2), Scale(0.5)
EMBEDDING, WORD_EMBEDDING = Scale(0.02), Scale(0.02, row_std=0.25)


def randomize_(model: torch.nn.Module, seed: int, logits_layer: str = "classifier",
               exceptions: Mapping[str, Scale | None] = {}) -> None:
    """Re-draw EVERY parameter from a torch.Generator seeded with `seed`, in named_modules order, at the
    scale of its module's kind (LOGITS for the `logits_layer` module's weight); `exceptions` maps a
    parameter's name to its own scale, or to None: kept as built, no draw. Padding rows too:
    nn.Embedding(padding_idx) zeroes them, and a zero row hides a missing one."""
    unknown = set(exceptions) - {name for name, _ in model.named_parameters()}
    assert not unknown, f"no such parameters: {sorted(unknown)}"
    g = torch.Generator().manual_seed(seed)
    logits, word_embeddings = model.get_submodule(logits_layer), model.get_input_embeddings()
    assert logits.out_features == model.config.num_labels, f"{logits_layer} does not make the logits"
    with torch.no_grad():
        for module_name, module in model.named_modules():
            for name, p in module.named_parameters(recurse=False):
                full = f"{module_name}.{name}"
                scale = exceptions[full] if full in exceptions else default_scale(module, name, logits, word_embeddings)
                if scale is not None:
                    p.copy_(scale.draw(p.shape, g))
    kept = {name for name, scale in exceptions.items() if scale is None}
    for name, p in model.named_parameters():
        constant = p.numel() > 1 and bool(torch.all(p == p.flatten()[0]))
        assert name in kept or (not constant and bool(torch.any(p != 0))), f"{name} was not re-randomized"
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Embedding) and m.padding_idx is not None and f"{name}.weight" not in kept:
            assert m.weight[m.padding_idx].abs().sum() > 0, f"{name}: the padding row is still zero"


def default_scale(module: torch.nn.Module, name: str, logits_layer, word_embeddings) -> Scale:
    if isinstance(module, torch.nn.LayerNorm):
        return NORM_WEIGHT if name == "weight" else BIAS
    if isinstance(module, torch.nn.Embedding):
        return WORD_EMBEDDING if module is word_embeddings else EMBEDDING
    if isinstance(module, (torch.nn.Linear, torch.nn.Conv1d)):
        return BIAS if name == "bias" else LOGITS if module is logits_layer else LINEAR
    raise AssertionError(f"{name} of a {type(module).__name__}: no scale for that kind of module")


# ----------------------------------------------------------------------------------------------
# fixtures and families


@dataclass(frozen=True, kw_only=True)
class Fixture:
    """One fixture directory; a family subclasses this for its own knobs."""
    name: str
    seed: int
    config: dict                             # keyword arguments of the family's config class
    pairs: list = ()
    max_length_arg: int | None = None        # what minibert's CrossEncoder gets; None: the default rule
    model_max_length: int = 512              # tokenizer_config.json's
    tokenizer_case_lengths: tuple = ()       # max_length args of golden.json's tokenizer_cases (None: default)
    rank_groups: list = ()                   # groups of pairs whose one-label scores must not tie
    weights: bool = True                     # False: config, tokenizer files and token ids only


@dataclass(frozen=True)
class Head:
    """The stage between the last layer and the logits: the input (reads=True) or the output of a module."""
    stage: str    # its name in golden.npz
    module: str   # the module hooked, a name of model.named_modules()
    reads: bool = False


class ReferenceUnavailable(Exception):
    """A family whose reference is not transformers' own code (custom code from the Hub) runs it from a
    scratch environment of its own; when that environment is not set up, its build raises this, with what
    is missing and how to set it up. Its fixtures are then neither written nor checked: main and check
    say so and exit non-zero, never counting them as reproduced."""


class Family:
    """What a spec module (tools/goldens/<family>.py) defines as FAMILY: its fixtures and what its
    models are particular in. make_golden calls these; a family builds differently by overriding build."""
    fixtures: tuple[Fixture, ...] = ()
    subdir = "goldens"  # its fixtures are <fixtures root>/<subdir>/<name>/
    head: Head
    logits_layer = "classifier"  # the linear that makes the logits

    @property
    def name(self) -> str:
        return type(self).__module__

    @property
    def generator(self) -> str:
        return f"tools/goldens/{self.name}.py"

    def path(self, fx: Fixture) -> Path:
        return Path(self.subdir, fx.name)

    def build(self, fx: Fixture, out: Path) -> None:
        make_golden(self, fx, out)

    def write_tokenizer(self, fx: Fixture, out: Path) -> dict[str, int]:
        """Write the tokenizer files; return the vocabulary (token -> id)."""
        raise NotImplementedError

    def config(self, fx: Fixture, vocab: dict[str, int]) -> transformers.PretrainedConfig:
        raise NotImplementedError

    def scale_exceptions(self, fx: Fixture) -> dict[str, Scale | None]:
        """Parameters that randomize_'s scales by module kind do not fit (None: kept as built)."""
        return {}

    def after_save(self, fx: Fixture, out: Path) -> None:
        """Rewrite what save_pretrained wrote, where the family's checkpoints differ from it."""

    def max_tokens(self, fx: Fixture) -> int:
        """The most tokens the position table allows: the default max_length is min(model_max_length, this)."""
        return fx.config["max_position_embeddings"]

    def check(self, run: Run) -> None:
        """Family-only assertions on a run."""

    def tokenizer_summary(self, fx: Fixture, out: Path, hf_tok) -> dict:
        raise NotImplementedError

    def golden_json(self, run: Run) -> dict:
        raise NotImplementedError

    def notes(self, run: Run) -> str:
        """More to print about a run, after the pairs at the limit."""
        return ""


# ----------------------------------------------------------------------------------------------
# one golden


def make_golden(family: Family, fx: Fixture, out: Path) -> None:
    fresh_dir(out)
    config = family.config(fx, family.write_tokenizer(fx, out))
    if not fx.weights:
        config.save_pretrained(out)
        write_tokenizer_golden(family, fx, out)
        return
    torch.manual_seed(fx.seed)  # construction draws from the global RNG; randomize_ re-draws everything
    model = AutoModelForSequenceClassification.from_config(config).eval()
    randomize_(model, fx.seed, family.logits_layer, family.scale_exceptions(fx))
    model.save_pretrained(out, safe_serialization=True)
    family.after_save(fx, out)

    run = Run.from_disk(family, fx, out, config)  # everything below is read back, as minibert reads it
    family.check(run)
    write_npz(out / "golden.npz", run.arrays)
    write_json(out / "golden.json", family.golden_json(run))
    print(run.summary(family.notes(run)))


@dataclass
class Run:
    """The written model run by transformers on a fixture's pairs, and what golden.json says of it."""
    family: Family
    fx: Fixture
    out: Path
    config: transformers.PretrainedConfig
    hf_tok: object
    model: torch.nn.Module           # eager attention, float32
    enc: dict                        # the padded batch
    max_length: int
    hidden: list                     # hidden_states
    arrays: dict
    sdpa: float | str                # max |sdpa - eager| logits, or why there is no sdpa
    st_check: str
    rank_margins: list

    @classmethod
    def from_disk(cls, family: Family, fx: Fixture, out: Path, config) -> Run:
        hf_tok = AutoTokenizer.from_pretrained(out)
        model = load_model(out, "eager")
        max_length = effective_max_length(family, fx, fx.max_length_arg)
        enc = hf_encode(hf_tok, fx.pairs, max_length)
        hidden, head, logits = run_model(model, enc, family.head)
        assert len(hidden) == config.num_hidden_layers + 1
        mask = enc["attention_mask"].bool()
        assert mask.shape[1] == int(mask.sum(1).max()) <= max_length, "padding=True pads to the longest pair"
        arrays = pack(enc, hidden, family.head.stage, head, logits)
        return cls(family, fx, out, config, hf_tok, model, enc, max_length, hidden, arrays,
                   sdpa=sdpa_vs_eager(out, enc, logits, family.head),
                   st_check=crosscheck_sentence_transformers(out, fx, max_length, arrays["logits"]),
                   rank_margins=rank_margins(fx, arrays["logits"]))

    @property
    def mask(self) -> torch.Tensor:
        return self.enc["attention_mask"].bool()

    @property
    def stages(self) -> list[str]:
        return ["embeddings", *(f"layer_{i}" for i in range(self.config.num_hidden_layers)), self.family.head.stage, "logits"]

    @property
    def tokens(self) -> list[list[str]]:
        return [self.hf_tok.convert_ids_to_tokens(ids[m].tolist()) for ids, m in zip(self.enc["input_ids"], self.mask)]

    # golden.json's blocks, which every family's golden.json holds in its own order

    def provenance(self) -> dict:
        return provenance(self.fx, "model", self.family.generator)

    def checks(self) -> dict:
        return {"attn_implementation": "eager", "dtype": "float32", "sdpa_vs_eager_max_abs_diff": self.sdpa,
                "sentence_transformers_vs_golden_max_abs_diff": self.st_check}

    def inputs(self) -> dict:
        return {
            "max_length_arg": self.fx.max_length_arg,
            "max_length": self.max_length,
            "tokenization": TOKENIZATION,
            "tolerance": {"atol": ATOL, "rtol": RTOL},
            "arrays": {name: {"shape": list(arr.shape), "dtype": str(arr.dtype)} for name, arr in self.arrays.items()},
            "pairs": [list(p) for p in self.fx.pairs],
            "tokens": self.tokens,
        }

    def results(self) -> dict:
        return {"rank_groups": self.fx.rank_groups, "rank_group_min_margin": self.rank_margins,
                "tokenizer_cases": tokenizer_cases(self.family, self.fx, self.hf_tok)}

    def summary(self, notes: str = "") -> str:
        lengths = self.mask.sum(1)
        c = self.config
        sdpa = f"{self.sdpa:.1e}" if isinstance(self.sdpa, float) else self.sdpa
        size = sum(p.stat().st_size for p in self.out.iterdir()) / 1024
        headline = (
            f"{self.fx.name}: {type(self.model).__name__} + {type(self.hf_tok).__name__}, B={len(lengths)} "
            f"T={self.mask.shape[1]} N={int(lengths.sum())} max_length={self.max_length} "
            f"({int((lengths == self.max_length).sum())} pairs at the limit{notes}), H={c.hidden_size} "
            f"L={c.num_hidden_layers} labels={c.num_labels}, sdpa-eager={sdpa}, sentence-transformers={self.st_check}, "
            f"{size:.0f} KiB"
        )
        stds = "  ".join(f"{k}={self.arrays[k].std():.2f}" for k in self.stages)
        logits = np.array2string(self.arrays["logits"][:4].ravel(), precision=4)
        return f"{headline}\n    std: {stds}\n    logits[:4]: {logits}"


def write_tokenizer_golden(family: Family, fx: Fixture, out: Path) -> None:
    """golden.json of a token-ids-only fixture; its tokens are those of tokenizer_cases[0]."""
    hf_tok = AutoTokenizer.from_pretrained(out)
    cases = tokenizer_cases(family, fx, hf_tok)
    write_json(out / "golden.json", {
        **provenance(fx, "tokenizer", family.generator),
        "tokenizer": family.tokenizer_summary(fx, out, hf_tok),
        "tokenization": "tokenizer(queries, passages, truncation='longest_first', max_length=max_length)",
        "pairs": [list(p) for p in fx.pairs],
        "tokens": [hf_tok.convert_ids_to_tokens(ids) for ids in cases[0]["input_ids"]],
        "tokenizer_cases": cases,
    })
    print(f"{fx.name}: {len(fx.pairs)} pairs, max_length {[c['max_length'] for c in cases]}, no weights")


def load_model(out: Path, attn_implementation: str) -> torch.nn.Module:
    model = AutoModelForSequenceClassification.from_pretrained(out, attn_implementation=attn_implementation,
                                                               dtype=torch.float32).eval()
    assert not model.training and model.dtype == torch.float32
    return model


def effective_max_length(family: Family, fx: Fixture, max_length_arg: int | None) -> int:
    return max_length_arg if max_length_arg is not None else min(fx.model_max_length, family.max_tokens(fx))


def hf_encode(hf_tok, pairs: list, max_length: int) -> dict:
    """Tokenize as sentence-transformers' CrossEncoder does."""
    queries, passages = [q for q, _ in pairs], [p for _, p in pairs]
    return hf_tok(queries, passages, padding=True, truncation="longest_first", max_length=max_length, return_tensors="pt")


def run_model(model: torch.nn.Module, enc: dict, head: Head) -> tuple[list, torch.Tensor, torch.Tensor]:
    """hidden_states, the head stage and the logits of one forward pass on what the tokenizer made."""
    captured = []
    module = model.get_submodule(head.module)
    if head.reads:
        hook = module.register_forward_pre_hook(lambda mod, args: captured.append(args[0]))
    else:
        hook = module.register_forward_hook(lambda mod, args, out: captured.append(out))
    try:
        with torch.no_grad():
            out = model(**enc, output_hidden_states=True)
    finally:
        hook.remove()
    (stage,) = captured
    return list(out.hidden_states), stage, out.logits


def type_ids(enc: dict) -> torch.Tensor | list:
    """The tokenizer's token type ids, or zeros where its class makes none (what the model then sees)."""
    if "token_type_ids" in enc:
        return enc["token_type_ids"]
    ids = enc["input_ids"]
    return torch.zeros_like(ids) if isinstance(ids, torch.Tensor) else [[0] * len(row) for row in ids]


def pack(enc: dict, hidden: list, head_stage: str, head: torch.Tensor, logits: torch.Tensor) -> dict[str, np.ndarray]:
    """golden.npz's arrays: the token stages packed over the valid tokens, the pair stages as they are."""
    mask = enc["attention_mask"].bool()
    arrays = {
        "lengths": mask.sum(1).numpy().astype(np.int64),
        "input_ids": enc["input_ids"][mask].numpy().astype(np.int64),
        "token_type_ids": type_ids(enc)[mask].numpy().astype(np.int64),
        "embeddings": hidden[0][mask].numpy().astype(np.float32),
        **{f"layer_{i}": h[mask].numpy().astype(np.float32) for i, h in enumerate(hidden[1:])},
        head_stage: head.numpy().astype(np.float32),
        "logits": logits.numpy().astype(np.float32),
    }
    for name, arr in arrays.items():
        assert arr.dtype in (np.int64, np.float32), (name, arr.dtype)
        assert np.all(np.isfinite(arr)), f"{name} has non-finite values"
    return arrays


def tokenizer_cases(family: Family, fx: Fixture, hf_tok) -> list[dict]:
    """Token ids, unpadded, at each of fx.tokenizer_case_lengths (None: the default rule)."""
    cases = []
    for arg in fx.tokenizer_case_lengths:
        m = effective_max_length(family, fx, arg)
        enc = hf_tok([q for q, _ in fx.pairs], [p for _, p in fx.pairs], truncation="longest_first", max_length=m)
        cases.append({"max_length_arg": arg, "max_length": m, "input_ids": enc["input_ids"],
                      "token_type_ids": type_ids(enc)})
    return cases


# ----------------------------------------------------------------------------------------------
# checks against other paths


def sdpa_vs_eager(out: Path, enc: dict, logits: torch.Tensor, head: Head) -> float | str:
    """max |sdpa - eager| over the logits, held to ATOL; or why the model has no sdpa attention."""
    try:
        sdpa = load_model(out, "sdpa")
    except (ValueError, ImportError) as exc:  # a family with its own attention only (DeBERTa-v2)
        return f"not available: {str(exc).splitlines()[0][:120]}"
    diff = float((run_model(sdpa, enc, head)[2] - logits).abs().max())
    assert diff <= ATOL, f"{out.name}: sdpa and eager logits differ by {diff:.3g}"
    return diff


def crosscheck_sentence_transformers(out: Path, fx: Fixture, max_length: int, logits: np.ndarray) -> str:
    """Score the pairs with sentence-transformers' own CrossEncoder: same tokenization, same logits?"""
    try:
        from sentence_transformers import CrossEncoder
    except ImportError:
        return "sentence-transformers not installed: skipped"
    ce = CrossEncoder(str(out), max_length=max_length, device="cpu")
    scores = ce.predict(fx.pairs, activation_fn=torch.nn.Identity(), batch_size=len(fx.pairs), convert_to_numpy=True)
    diff = float(np.abs(np.asarray(scores, np.float32).reshape(logits.shape) - logits).max())
    assert diff <= ATOL, f"{fx.name}: sentence-transformers CrossEncoder differs from the golden logits by {diff:.3g}"
    return f"{diff:.2e}"


def rank_margins(fx: Fixture, logits: np.ndarray) -> list[float]:
    """The smallest score gap in each ranking group: far above ATOL, so that a ranking is a decision."""
    margins = []
    for group in fx.rank_groups:
        s = np.sort(logits[group, 0])
        margins.append(float(np.diff(s).min()))
        assert margins[-1] > 100 * ATOL, f"{fx.name}: ranking group {group} has near-tied scores {s}"
    return margins


# ----------------------------------------------------------------------------------------------
# golden.json pieces


LABEL_KEYS = ("num_labels", "id2label", "label2id")


def config_fields(config, *names: str) -> dict:
    return {name: getattr(config, name) for name in names}


def label_names(config) -> dict:
    return {"id2label": {str(k): v for k, v in config.id2label.items()}}


def config_as_given(config, fx: Fixture) -> dict:
    """The config summary of a family that records its spec's config keys as given."""
    return {"model_type": config.model_type,
            **config_fields(config, "vocab_size", "hidden_size", "num_hidden_layers", "num_labels"),
            **{k: v for k, v in fx.config.items() if k not in LABEL_KEYS}, **label_names(config)}


def provenance(fx: Fixture, kind: str, generator: str) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "kind": kind,  # "model": stages in golden.npz; "tokenizer": token ids only
        "name": fx.name,
        "generator": generator,
        "seed": fx.seed,
        "date": today(),
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
        },
    }


def today() -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    now = datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc) if epoch else datetime.datetime.now(datetime.timezone.utc)
    return now.date().isoformat()


# ----------------------------------------------------------------------------------------------
# files


def fresh_dir(out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez, but with fixed zip timestamps so that the bytes depend only on the arrays."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())


def compare_dirs(built: Path, committed: Path) -> list[str]:
    """What differs between a rebuilt fixture and the committed one: files byte for byte, golden.json
    field by field but "date"."""
    if not committed.is_dir():
        return [f"{committed} is missing"]
    files = [sorted(p.relative_to(d) for p in d.rglob("*") if p.is_file()) for d in (built, committed)]
    if files[0] != files[1]:
        return [f"files {[str(f) for f in files[1]]} != rebuilt {[str(f) for f in files[0]]}"]
    problems = []
    for rel in files[0]:
        if rel.name == "golden.json":
            new, old = (json.loads((d / rel).read_text(encoding="utf-8")) for d in (built, committed))
            new.pop("date"), old.pop("date")
            if new != old:
                problems.append(f"{rel} differs in {sorted(k for k in new.keys() | old.keys() if new.get(k) != old.get(k))}")
        elif not filecmp.cmp(built / rel, committed / rel, shallow=False):
            problems.append(f"{rel} differs")
    return problems


# ----------------------------------------------------------------------------------------------
# command line


def main(families: list[Family], argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Rebuild minibert's test fixtures from transformers, or --check them.")
    parser.add_argument("--out", type=Path, default=FIXTURES,
                        help=f"the fixtures root, holding goldens/<name>/ and formats/ (default {FIXTURES})")
    parser.add_argument("--check", action="store_true",
                        help="rebuild in a temp dir and compare with --out (golden.json: every field but date)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="fixture or family names (default: all)")
    args = parser.parse_args(argv)
    chosen = [(f, fx) for f in families for fx in f.fixtures if not args.only or {f.name, fx.name} & set(args.only)]
    known = {f.name for f in families} | {fx.name for f in families for fx in f.fixtures}
    if args.only and set(args.only) - known:
        parser.error(f"unknown {sorted(set(args.only) - known)}; known: {', '.join(sorted(known))}")
    torch.set_num_threads(1)  # the same reductions every run
    if args.check:
        return check(chosen, args.out)
    written, unavailable = [], []
    for family, fx in chosen:
        try:
            family.build(fx, args.out / family.path(fx))
            written.append((family, fx))
        except ReferenceUnavailable as exc:
            unavailable.append(fx.name)
            print(f"NOT WRITTEN {fx.name}: {exc}")
    total = sum(p.stat().st_size for family, fx in written for p in (args.out / family.path(fx)).rglob("*") if p.is_file())
    print(f"wrote {len(written)} fixtures under {args.out} ({total / 1024:.0f} KiB)")
    if unavailable:
        print(f"NOT WRITTEN: {len(unavailable)} fixtures whose reference is not set up here: {', '.join(unavailable)}")
    return 1 if unavailable else 0


def check(chosen: list[tuple[Family, Fixture]], committed: Path) -> int:
    """Rebuild and compare; a fixture whose reference is not set up here is reported NOT CHECKED, and the exit
    status is then 1 as for a mismatch: an incomplete check is not a pass."""
    problems, unavailable = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for family, fx in chosen:
            rel = family.path(fx)
            try:
                family.build(fx, Path(tmp) / rel)
            except ReferenceUnavailable as exc:
                unavailable.append(fx.name)
                print(f"NOT CHECKED {rel}: {exc}")
                continue
            problems += [f"{rel}/{p}" for p in compare_dirs(Path(tmp) / rel, committed / rel)]
    for p in problems:
        print("MISMATCH", p)
    checked = len(chosen) - len(unavailable)
    print(f"{checked} fixtures reproduce" if not problems else f"{len(problems)} mismatches")
    if unavailable:
        print(f"NOT CHECKED: {len(unavailable)} fixtures whose reference is not set up here ({', '.join(unavailable)}); "
              "this check is incomplete")
    return 1 if problems or unavailable else 0
