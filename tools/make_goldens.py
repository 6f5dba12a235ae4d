"""Write the golden files that minibert is checked against, stage by stage.

Like llm.c's `train_gpt2.py` writing `gpt2_124M_debug_state.bin`: PyTorch + transformers build
tiny random BertForSequenceClassification checkpoints, run them on a batch of (query, passage)
pairs, and store every intermediate stage so that tests/test_goldens.py can say *which* stage
of minibert went wrong, not just that the score did.

Usage (needs the `golden` extra: torch, transformers, tokenizers; sentence-transformers optional):

    python tools/make_goldens.py            # (re)write tests/fixtures/goldens/<name>/
    python tools/make_goldens.py --check    # rebuild in a temp dir, compare with the committed files
    python tools/make_goldens.py --out DIR  # write somewhere else

For each model `<name>` the directory holds an ordinary HF model directory (config.json,
model.safetensors, tokenizer files) plus

- `golden.npz`: float32 stages, PACKED over valid (non-pad) tokens of the padded batch:
    lengths [B] int64                       valid tokens per pair (N = lengths.sum())
    input_ids, token_type_ids [N] int64     what transformers' AutoTokenizer produced
    embeddings [N, H] float32               hidden_states[0] (after the embedding LayerNorm)
    layer_0 .. layer_{L-1} [N, H] float32   hidden_states[i + 1]
    pooled [B, H] float32                   BertPooler output (dense + tanh on [CLS])
    logits [B, num_labels] float32          classifier output, no activation
  Pair b owns rows lengths[:b].sum() : lengths[:b+1].sum() of the packed arrays.
- `golden.json`: provenance (format_version, seed, library versions, date), the config summary,
  the pairs themselves (the test reads its texts from here), max_length, the tokens as strings,
  ranking groups, and `tokenizer_cases` (token ids only, no model: more truncation edges).

The two models differ on purpose:
- `tiny-l1`: num_labels=1, uncased, layer_norm_eps=1e-7, ships tokenizer.json (with padding and
  truncation baked in, as real all-MiniLM-L6-v2's does: minibert must ignore them),
  tokenizer_config.json, special_tokens_map.json and vocab.txt. Built with max_length=None, so the
  default rule min(model_max_length=48, max_position_embeddings=64) = 48 is what truncates.
- `tiny-l3`: num_labels=3 with id2label names, cased, odd sizes (H=36, 3 heads, I=53, 3 layers),
  default layer_norm_eps=1e-12, ships ONLY vocab.txt + tokenizer_config.json; max_length=40.

Every parameter is re-randomized from a seeded torch.Generator (LayerNorm weights around 1 +- 0.2,
the [PAD] row of the word embeddings too): default init (ones/zeros) hides swapped or missing
LayerNorm weights. The WordPiece vocabulary is built here, deterministically, from English text
that ships with CPython (pydoc_data.topics); the `tokenizers` trainer breaks ties differently from
run to run, so it is not used. The reference token ids always come from
transformers.AutoTokenizer.from_pretrained(<the written dir>), tokenized the way
sentence-transformers' CrossEncoder does: padding=True, truncation="longest_first", max_length=M.

Same seed -> byte-identical files, except the `date` field of golden.json (set SOURCE_DATE_EPOCH to
pin it). `--check` compares everything but that field.
"""

from __future__ import annotations

import argparse
import datetime
import filecmp
import io
import json
import os
import platform
import shutil
import sys
import tempfile
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import tokenizers
import torch
import transformers
from pydoc_data.topics import topics
from tokenizers import Tokenizer
from tokenizers.decoders import WordPiece as WordPieceDecoder
from tokenizers.models import WordPiece
from tokenizers.normalizers import BertNormalizer
from tokenizers.pre_tokenizers import BertPreTokenizer
from tokenizers.processors import TemplateProcessing
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

FORMAT_VERSION = 1
SEED = 20240611
REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "tests" / "fixtures" / "goldens"
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # ids 0..4
VOCAB_SIZE = 1200
ATOL = RTOL = 1e-5  # what tests/test_goldens.py uses; sdpa vs eager is checked against it here

# Text outside pydoc's ASCII, so that some accented letters and CJK characters are in the vocab
# (and others, like emoji, are not: they become [UNK]).
EXTRA_CORPUS = (
    "café résumé naïve über Straße São Paulo crème brûlée Ångström déjà vu façade "
    "日本 東京 中文 文本 北京 大学 ñandú año señor Größe Ärger Öl"
)


# ----------------------------------------------------------------------------------------------
# texts


def topic(name: str, start: int, n_chars: int) -> str:
    """A slice of a pydoc topic's body (title and underline dropped), whitespace collapsed."""
    title, underline, body = topics[name].split("\n", 2)
    assert set(underline) == {"*"}, f"pydoc topic {name!r} has no underlined title"
    return " ".join(body.split())[start : start + n_chars]


LONG_WORD = "supercalifragilistic" * 6  # 120 chars > max_input_chars_per_word=100 -> one [UNK]

PAIRS_L1 = [
    # 0-4: one query, five passages: the ranking group (see RANK_GROUPS_L1)
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
    # 8: accents (stripped by the uncased normalizer)
    ("Café naïve résumé?", "Über die Straße: crème brûlée, São Paulo, Ångström."),
    # 9: CJK (split per character), some in the vocab, some not
    ("日本語のテキスト", "中文文本 and 東京 mixed with English words"),
    # 10: emoji (not in the vocab: [UNK]), skin-tone modifier
    ("python 🐍 snakes 🙂", "rocket 🚀 launch 👍🏽 done"),
    # 11: combining marks (decomposed accents)
    ("e\u0301cole cafe\u0301", "n\u0303 a\u0308 o\u0302 plain"),
    # 12: empty passage
    ("what does the pass statement do?", ""),
    # 13: whitespace-only passage (incl. ideographic space)
    ("whitespace", " \t\n  \u3000 "),
    # 14: out-of-vocabulary: a word longer than 100 chars, a symbol not in the vocab
    (f"{LONG_WORD} words", "Ω ∮ zxqv"),
    # 15: control and format characters (removed by clean_text), CRLF, NUL
    ("zero\u200bwidth soft\u00adhyphen", "tab\tseparated\r\nlines\x00null"),
    # 16: code and punctuation
    ("def f(x): return x**2  # square", "lambda x: x[0] if x else None; print(f'{x!r}')"),
    # 17: duplicate of 0
    ("how do I define a function?", "A function definition defines a user-defined function object."),
    # 18: the same long text on both sides: equal lengths, longest_first tie
    (topic("try", 0, 300), topic("try", 0, 300)),
]
RANK_GROUPS_L1 = [[0, 1, 2, 3, 4]]

PAIRS_L3 = [
    ("What is an Exception?", "Exceptions are a means of breaking out of the normal flow of control."),
    ("what is an exception?", "EXCEPTIONS ARE A MEANS OF BREAKING OUT OF THE NORMAL FLOW OF CONTROL."),
    (topic("class", 0, 300), topic("import", 0, 300)),  # both sides truncated
    ("Import System", topic("import", 200, 400)),
    # cased: accents kept, so letters not in the vocab give [UNK]
    ("Café Größe naïve", "Ärger über Öl, año señor, déjà vu façade"),
    ("北京大学 中文", "日本 東京 and 한국어 text"),  # Hangul is not in the vocab
    ("emoji 😀 test", "flags 🇫🇷 and zwj 👩\u200d💻 sequences"),
    ("e\u0301 combining", "A\u030a and o\u0308"),  # combining marks stay (cased): [UNK] pieces
    ("an empty passage follows", ""),
    ("", "an empty query precedes this passage"),
    ("whitespace only", "\n\n\t \u2003 "),
    (f"{LONG_WORD}", "Unknown words like qzxv and Ω."),
    ("an empty passage follows", ""),  # duplicate of 8
    ("Numbers 3.14159 and 2**10 = 1024", "Literals: 0x1F, 1e-7, 1_000_000, -42j"),
    (topic("for", 0, 500), "short"),
]
RANK_GROUPS_L3: list[list[int]] = []  # rankings are for num_labels == 1


@dataclass(frozen=True)
class GoldenSpec:
    name: str
    seed: int
    lowercase: bool
    ship_tokenizer_json: bool  # False: vocab.txt + tokenizer_config.json only
    model_max_length: int  # written to tokenizer_config.json
    max_length_arg: int | None  # what minibert's CrossEncoder gets; None -> default rule
    config: dict
    pairs: list
    rank_groups: list
    tokenizer_case_lengths: list = field(default_factory=list)  # max_length args for tokenizer_cases
    # None: tokenizer.json's normalizer agrees with tokenizer_config.json; a bool writes that
    # `lowercase` (and strip_accents=False) into tokenizer.json instead, disagreeing with it.
    tokenizer_json_lowercase: bool | None = None


SPECS = [
    GoldenSpec(
        name="tiny-l1",
        seed=SEED + 1,
        lowercase=True,
        ship_tokenizer_json=True,
        model_max_length=48,
        max_length_arg=None,
        config=dict(
            hidden_size=32, num_attention_heads=4, intermediate_size=37, num_hidden_layers=2,
            max_position_embeddings=64, type_vocab_size=2, layer_norm_eps=1e-7, num_labels=1,
        ),
        pairs=PAIRS_L1,
        rank_groups=RANK_GROUPS_L1,
        tokenizer_case_lengths=[5, 6, 7, 12, 20],
    ),
    GoldenSpec(
        name="tiny-l3",
        seed=SEED + 3,
        lowercase=False,
        ship_tokenizer_json=False,
        model_max_length=512,  # larger than max_position_embeddings: the default must be 64
        max_length_arg=40,
        config=dict(
            hidden_size=36, num_attention_heads=3, intermediate_size=53, num_hidden_layers=3,
            max_position_embeddings=64, type_vocab_size=2, layer_norm_eps=1e-12, num_labels=3,
            id2label={0: "contradiction", 1: "entailment", 2: "neutral"},
            label2id={"contradiction": 0, "entailment": 1, "neutral": 2},
        ),
        pairs=PAIRS_L3,
        rank_groups=RANK_GROUPS_L3,
        tokenizer_case_lengths=[None, 9, 17],
    ),
]

# No weights: config.json + tokenizer files + token ids. tokenizer.json says "cased, keep accents"
# but tokenizer_config.json says do_lower_case=true; transformers follows tokenizer_config.json
# (it rebuilds the normalizer from it), and so must minibert. Checked with minibert's tokenizer
# loader alone, so no weight format is involved.
TOKENIZER_SPECS = [
    GoldenSpec(
        name="tok-mismatch",
        seed=SEED + 5,
        lowercase=True,
        ship_tokenizer_json=True,
        model_max_length=32,
        max_length_arg=None,
        config=dict(
            hidden_size=32, num_attention_heads=4, intermediate_size=37, num_hidden_layers=2,
            max_position_embeddings=64, type_vocab_size=2, num_labels=1,
        ),
        pairs=PAIRS_L1 + [("MiXeD CaSe ÀÉÎÕÜ", "UPPER lower Title")],
        rank_groups=[],
        tokenizer_case_lengths=[None, 12],
        tokenizer_json_lowercase=False,
    ),
]


# ----------------------------------------------------------------------------------------------
# tokenizer


def build_vocab(lowercase: bool) -> list[str]:
    """A WordPiece vocab: specials, every character (bare and ##), frequent words, prefixes, suffixes.

    Deterministic (ties broken by the string). Any vocab that holds every character in both forms
    tokenizes every word made of known characters; the frequent pieces make the splits realistic.
    """
    normalizer = BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase)
    pre = BertPreTokenizer()
    corpus = [topics[k] for k in sorted(topics)] + [EXTRA_CORPUS] * 3
    words = Counter(w for text in corpus for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(text)))

    def top(counter: Counter, taken: set, n: int) -> list[str]:
        ranked = sorted((c for c in counter.items() if c[0] not in taken), key=lambda kv: (-kv[1], kv[0]))
        return [w for w, _ in ranked[:n]]

    char_counts = Counter()
    for w, n in words.items():
        for ch in w:
            char_counts[ch] += n
    chars = sorted(char_counts, key=lambda ch: (-char_counts[ch], ch))
    vocab = SPECIAL_TOKENS + chars + ["##" + ch for ch in chars]
    budget = VOCAB_SIZE - len(vocab)
    assert budget > 0, f"{len(vocab)} characters leave no room in a {VOCAB_SIZE} vocab"

    prefixes, suffixes = Counter(), Counter()
    for w, n in words.items():
        for i in range(2, len(w) - 1):
            prefixes[w[:i]] += n
            suffixes["##" + w[i:]] += n
    taken = set(vocab)
    whole = top(Counter({w: n for w, n in words.items() if len(w) > 1}), taken, budget * 6 // 10)
    taken.update(whole)
    pre_pieces = top(prefixes, taken, budget * 2 // 10)
    taken.update(pre_pieces)
    suf_pieces = top(suffixes, taken, budget - len(whole) - len(pre_pieces))
    vocab += whole + pre_pieces + suf_pieces
    assert len(vocab) == len(set(vocab)) == VOCAB_SIZE
    return vocab


def write_tokenizer(spec: GoldenSpec, vocab: list[str], out: Path) -> None:
    """Write the tokenizer files the way HF model repos ship them."""
    (out / "vocab.txt").write_text("".join(tok + "\n" for tok in vocab), encoding="utf-8")
    tokenizer_config = {
        "do_lower_case": spec.lowercase,
        "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
        "mask_token": "[MASK]", "tokenize_chinese_chars": True, "strip_accents": None,
        "do_basic_tokenize": True, "never_split": None,
        "tokenizer_class": "BertTokenizer", "model_max_length": spec.model_max_length,
    }
    write_json(out / "tokenizer_config.json", tokenizer_config)
    if not spec.ship_tokenizer_json:
        return
    write_json(out / "special_tokens_map.json", {t[1:-1].lower() + "_token": t for t in SPECIAL_TOKENS})
    ids = {tok: i for i, tok in enumerate(vocab)}
    tok = Tokenizer(WordPiece(ids, unk_token="[UNK]", max_input_chars_per_word=100))
    if spec.tokenizer_json_lowercase is None:
        tok.normalizer = BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=spec.lowercase)
    else:
        tok.normalizer = BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=False,
                                        lowercase=spec.tokenizer_json_lowercase)
    tok.pre_tokenizer = BertPreTokenizer()
    tok.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])],
    )
    tok.decoder = WordPieceDecoder(prefix="##")
    tok.add_special_tokens(SPECIAL_TOKENS)
    # Baked in like all-MiniLM-L6-v2's tokenizer.json: a loader that honours these is wrong.
    tok.enable_truncation(max_length=128)
    tok.enable_padding(length=128, pad_id=0, pad_type_id=0, pad_token="[PAD]")
    (out / "tokenizer.json").write_text(tok.to_str(), encoding="utf-8")


def hf_encode(hf_tok, pairs: list, max_length: int) -> dict:
    """Tokenize as sentence-transformers' CrossEncoder does."""
    queries, passages = [q for q, _ in pairs], [p for _, p in pairs]
    return hf_tok(queries, passages, padding=True, truncation="longest_first", max_length=max_length, return_tensors="pt")


def effective_max_length(spec: GoldenSpec, max_length_arg: int | None) -> int:
    if max_length_arg is not None:
        return max_length_arg
    return min(spec.model_max_length, spec.config["max_position_embeddings"])


# ----------------------------------------------------------------------------------------------
# model


def randomize_(model: torch.nn.Module, seed: int) -> None:
    """Re-draw EVERY parameter from a seeded generator, at scales that keep activations realistic.

    Linear weights std 0.2 make attention scores ~N(0, 0.04 * H), i.e. peaked but not one-hot
    softmaxes at H = 32..36; the classifier gets std 0.5 so the logits spread and rankings mean
    something. LayerNorm weight ~ 1 +- 0.2 and bias ~ +-0.1, never ones/zeros.

    Embeddings are std 0.02 (HF's initializer_range), and each word row also gets its own offset
    (std 0.25), the same on every dimension. The embedding LayerNorm then sees a variance of
    ~1e-3 and a mean ~10x its spread, as real checkpoints can, so that a wrong layer_norm_eps
    (1e-7 vs 1e-12: ~3e-4) or a one-pass variance (~2e-4) shows in the `embeddings` stage, while
    torch's own float32 error stays ~4e-6. Larger offsets push torch's error towards 1e-5.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            z = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if name.endswith("LayerNorm.weight"):
                value = 1.0 + 0.2 * z
            elif name.endswith("LayerNorm.bias") or name.endswith(".bias"):
                value = 0.1 * z
            elif name.endswith("word_embeddings.weight"):
                # includes the [PAD] row, which nn.Embedding(padding_idx=0) zeroes
                value = 0.02 * z + 0.25 * torch.randn((p.shape[0], 1), generator=g, dtype=torch.float32)
            elif "embeddings" in name:
                value = 0.02 * z
            elif name.startswith("classifier."):
                value = 0.5 * z
            else:
                value = 0.2 * z
            p.copy_(value)
    for name, p in model.named_parameters():
        constant = p.numel() > 1 and bool(torch.all(p == p.flatten()[0]))
        assert not constant and bool(torch.any(p != 0)), f"{name} was not re-randomized"
    pad_row = model.bert.embeddings.word_embeddings.weight[0]
    assert pad_row.abs().sum() > 0, "the [PAD] row of the word embeddings is still zero"


def run_model(model: BertForSequenceClassification, enc: dict) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    captured = {}
    hook = model.bert.pooler.register_forward_hook(lambda mod, inp, out: captured.__setitem__("pooled", out))
    try:
        with torch.no_grad():
            out = model(
                input_ids=enc["input_ids"], token_type_ids=enc["token_type_ids"],
                attention_mask=enc["attention_mask"], output_hidden_states=True,
            )
    finally:
        hook.remove()
    return list(out.hidden_states), captured["pooled"], out.logits


# ----------------------------------------------------------------------------------------------
# files


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


def today() -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc) if epoch else datetime.datetime.now(datetime.timezone.utc)
    return when.date().isoformat()


def crosscheck_sentence_transformers(out: Path, spec: GoldenSpec, max_length: int, logits: np.ndarray) -> str:
    """Score the pairs with sentence-transformers' own CrossEncoder: same tokenization, same logits?"""
    try:
        from sentence_transformers import CrossEncoder
    except ImportError:
        return "sentence-transformers not installed: skipped"
    ce = CrossEncoder(str(out), max_length=max_length, device="cpu")
    scores = ce.predict(spec.pairs, activation_fn=torch.nn.Identity(), batch_size=len(spec.pairs), convert_to_numpy=True)
    diff = float(np.abs(np.asarray(scores, np.float32).reshape(logits.shape) - logits).max())
    assert diff <= ATOL, f"{spec.name}: sentence-transformers CrossEncoder differs from the golden logits by {diff:.3g}"
    return f"{diff:.2e}"


# ----------------------------------------------------------------------------------------------
# one golden


def make_golden(spec: GoldenSpec, out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)

    vocab = build_vocab(spec.lowercase)
    write_tokenizer(spec, vocab, out)

    config = BertConfig(vocab_size=len(vocab), hidden_act="gelu", pad_token_id=0, **spec.config)
    torch.manual_seed(spec.seed)  # construction draws from the global RNG; everything is re-drawn below
    model = BertForSequenceClassification(config).eval()
    randomize_(model, spec.seed)
    model.save_pretrained(out, safe_serialization=True)

    # Everything below is read back from disk, as minibert will read it.
    hf_tok = AutoTokenizer.from_pretrained(out)
    eager = BertForSequenceClassification.from_pretrained(out, attn_implementation="eager", dtype=torch.float32).eval()
    sdpa = BertForSequenceClassification.from_pretrained(out, attn_implementation="sdpa", dtype=torch.float32).eval()
    assert not eager.training and eager.dtype == torch.float32

    max_length = effective_max_length(spec, spec.max_length_arg)
    enc = hf_encode(hf_tok, spec.pairs, max_length)
    hidden, pooled, logits = run_model(eager, enc)
    _, _, logits_sdpa = run_model(sdpa, enc)
    sdpa_diff = float((logits_sdpa - logits).abs().max())
    assert sdpa_diff <= ATOL, f"{spec.name}: sdpa and eager logits differ by {sdpa_diff:.3g}"

    mask = enc["attention_mask"].bool()  # [B, T]
    lengths = mask.sum(1)
    B, T = mask.shape
    assert T == int(lengths.max()), "padding=True pads to the longest pair"
    assert int(lengths.max()) <= max_length
    assert len(hidden) == config.num_hidden_layers + 1

    arrays = {
        "lengths": lengths.numpy().astype(np.int64),
        "input_ids": enc["input_ids"][mask].numpy().astype(np.int64),
        "token_type_ids": enc["token_type_ids"][mask].numpy().astype(np.int64),
        "embeddings": hidden[0][mask].numpy().astype(np.float32),
    }
    for i in range(config.num_hidden_layers):
        arrays[f"layer_{i}"] = hidden[i + 1][mask].numpy().astype(np.float32)
    arrays["pooled"] = pooled.numpy().astype(np.float32)
    arrays["logits"] = logits.numpy().astype(np.float32)
    for name, arr in arrays.items():
        assert arr.dtype in (np.int64, np.float32), (name, arr.dtype)
        assert np.all(np.isfinite(arr)), f"{name} has non-finite values"
    write_npz(out / "golden.npz", arrays)

    tokens = [hf_tok.convert_ids_to_tokens(ids[m].tolist()) for ids, m in zip(enc["input_ids"], mask)]
    cases = tokenizer_cases(hf_tok, spec)

    rank_margins = []
    flat = arrays["logits"][:, 0] if config.num_labels == 1 else None
    for group in spec.rank_groups:
        s = np.sort(flat[group])
        rank_margins.append(float(np.diff(s).min()))
        assert rank_margins[-1] > 100 * ATOL, f"{spec.name}: ranking group {group} has near-tied scores {s}"

    st_check = crosscheck_sentence_transformers(out, spec, max_length, arrays["logits"])

    meta = {
        **provenance(spec, "model"),
        "attn_implementation": "eager",
        "dtype": "float32",
        "sdpa_vs_eager_max_abs_diff": sdpa_diff,
        "sentence_transformers_vs_golden_max_abs_diff": st_check,
        "config": {
            "vocab_size": config.vocab_size,
            "hidden_size": config.hidden_size,
            "num_hidden_layers": config.num_hidden_layers,
            "num_attention_heads": config.num_attention_heads,
            "intermediate_size": config.intermediate_size,
            "max_position_embeddings": config.max_position_embeddings,
            "type_vocab_size": config.type_vocab_size,
            "layer_norm_eps": config.layer_norm_eps,
            "hidden_act": config.hidden_act,
            "num_labels": config.num_labels,
            "id2label": {str(k): v for k, v in config.id2label.items()},
        },
        "tokenizer": tokenizer_summary(spec, out),
        "max_length_arg": spec.max_length_arg,
        "max_length": max_length,
        "tokenization": "tokenizer(queries, passages, padding=True, truncation='longest_first', max_length=max_length)",
        "tolerance": {"atol": ATOL, "rtol": RTOL},
        "arrays": {name: {"shape": list(arr.shape), "dtype": str(arr.dtype)} for name, arr in arrays.items()},
        "pairs": [list(p) for p in spec.pairs],
        "tokens": tokens,
        "rank_groups": spec.rank_groups,
        "rank_group_min_margin": rank_margins,
        "tokenizer_cases": cases,
    }
    write_json(out / "golden.json", meta)

    size = sum(p.stat().st_size for p in out.iterdir())
    truncated = int((lengths == max_length).sum())
    print(
        f"{spec.name}: B={B} T={T} N={int(lengths.sum())} max_length={max_length} ({truncated} pairs at the limit), "
        f"H={config.hidden_size} L={config.num_hidden_layers} labels={config.num_labels}, "
        f"sdpa-eager={sdpa_diff:.1e}, sentence-transformers={st_check}, {size / 1024:.0f} KiB"
    )
    stds = "  ".join(f"{k}={arrays[k].std():.2f}" for k in arrays if arrays[k].dtype == np.float32)
    print(f"    std: {stds}")
    print(f"    logits[:4]: {np.array2string(arrays['logits'][:4].ravel(), precision=4)}")


def make_tokenizer_golden(spec: GoldenSpec, out: Path) -> None:
    """Token ids only: config.json (for max_position_embeddings) and tokenizer files, no weights."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    vocab = build_vocab(spec.lowercase)
    write_tokenizer(spec, vocab, out)
    BertConfig(vocab_size=len(vocab), hidden_act="gelu", pad_token_id=0, **spec.config).save_pretrained(out)
    hf_tok = AutoTokenizer.from_pretrained(out)
    cases = tokenizer_cases(hf_tok, spec)
    tokens = [hf_tok.convert_ids_to_tokens(ids) for ids in cases[0]["input_ids"]]
    meta = {
        **provenance(spec, "tokenizer"),
        "tokenizer": tokenizer_summary(spec, out),
        "tokenization": "tokenizer(queries, passages, truncation='longest_first', max_length=max_length)",
        "pairs": [list(p) for p in spec.pairs],
        "tokens": tokens,  # at tokenizer_cases[0]'s max_length
        "tokenizer_cases": cases,
    }
    write_json(out / "golden.json", meta)
    print(f"{spec.name}: {len(spec.pairs)} pairs, max_length {[c['max_length'] for c in cases]}, no weights")


def provenance(spec: GoldenSpec, kind: str) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "kind": kind,  # "model": stages in golden.npz; "tokenizer": token ids only
        "name": spec.name,
        "generator": "tools/make_goldens.py",
        "seed": spec.seed,
        "date": today(),
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
        },
    }


def tokenizer_summary(spec: GoldenSpec, out: Path) -> dict:
    return {
        "do_lower_case": spec.lowercase,
        "tokenizer_json_lowercase": spec.tokenizer_json_lowercase,
        "files": sorted(p.name for p in out.iterdir() if p.name.startswith(("tokenizer", "vocab", "special"))),
        "model_max_length": spec.model_max_length,
    }


def tokenizer_cases(hf_tok, spec: GoldenSpec) -> list[dict]:
    """Token ids, unpadded, at each of spec.tokenizer_case_lengths (None: the default rule)."""
    cases = []
    for arg in spec.tokenizer_case_lengths:
        m = effective_max_length(spec, arg)
        enc = hf_tok([q for q, _ in spec.pairs], [p for _, p in spec.pairs], truncation="longest_first", max_length=m)
        cases.append({
            "max_length_arg": arg,
            "max_length": m,
            "input_ids": enc["input_ids"],
            "token_type_ids": enc["token_type_ids"],
        })
    return cases


def compare_dirs(built: Path, committed: Path) -> list[str]:
    """What differs between a rebuilt fixture tree and the committed one (golden.json files: all but the date)."""
    problems = []
    files_a = sorted(p.relative_to(built) for p in built.rglob("*") if p.is_file())
    # Only the top-level entries this build wrote: other tools' fixtures (tools/goldens_<family>.py) share the folder.
    tops = {p.name for p in built.iterdir()}
    files_b = sorted(p.relative_to(committed) for p in committed.rglob("*")
                     if p.is_file() and p.relative_to(committed).parts[0] in tops) if committed.exists() else []
    if files_a != files_b:
        return [f"files {[str(f) for f in files_b]} != rebuilt {[str(f) for f in files_a]}"]
    for rel in files_a:
        if rel.name == "golden.json":
            ja, jb = (json.loads((d / rel).read_text(encoding="utf-8")) for d in (built, committed))
            ja.pop("date"), jb.pop("date")
            if ja != jb:
                problems.append(f"{rel} differs in {sorted(k for k in ja if ja.get(k) != jb.get(k))}")
        elif not filecmp.cmp(built / rel, committed / rel, shallow=False):
            problems.append(f"{rel} differs")
    return problems


def build_or_check(argv: list[str] | None, description: str, default_out: Path, build, what: str) -> int:
    """The tools' command line: build(out) into --out, or with --check build into a temp dir and compare."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, default=default_out, help=f"output directory (default {default_out})")
    parser.add_argument("--check", action="store_true", help="rebuild in a temp dir and compare with --out")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # same reductions every run
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            build(Path(tmp))
            problems = compare_dirs(Path(tmp), args.out)
        for p in problems:
            print("MISMATCH", p)
        print(f"{what} reproduce" if not problems else f"{len(problems)} mismatches")
        return 1 if problems else 0
    build(args.out)
    total = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"wrote {args.out} ({total / 1024:.0f} KiB)")
    return 0


def make_all(out: Path) -> None:
    for spec in SPECS:
        make_golden(spec, out / spec.name)
    for spec in TOKENIZER_SPECS:
        make_tokenizer_golden(spec, out / spec.name)


def main(argv: list[str] | None = None) -> int:
    return build_or_check(argv, __doc__.splitlines()[0], DEFAULT_OUT, make_all, "goldens")


if __name__ == "__main__":
    sys.exit(main())
