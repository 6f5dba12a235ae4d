"""Write the DeBERTa-v2 / v3 golden files (tests/fixtures/goldens/deberta-*/), stage by stage.

The same format as tools/make_goldens.py's BERT goldens (golden.npz packed stages, golden.json with
provenance, pairs, tokens, tokenizer_cases, and the stage list), from transformers'
DebertaV2ForSequenceClassification in eval mode, with the ids of transformers' AutoTokenizer
(DebertaV2Tokenizer), tokenized as sentence-transformers' CrossEncoder does.

Usage (needs the `golden` extra):

    python tools/goldens_deberta.py            # (re)write tests/fixtures/goldens/deberta-*/
    python tools/goldens_deberta.py --check    # rebuild in a temp dir, compare with the committed files

Two models, so that both code paths of the disentangled attention are covered:
- `deberta-v3`: as microsoft/deberta-v3-* and the rerankers fine-tuned from it (mxbai-rerank-*-v1,
  cross-encoder/nli-deberta-v3-*): relative_attention, log-bucketed positions (position_buckets 16,
  256 scaled down; pairs of up to 80 tokens, far beyond the 8 exact distances), share_att_key,
  pos_att_type ["p2c", "c2p"], norm_rel_ebd layer_norm, no absolute positions, no token types;
  num_labels 1. Tokenizer files as transformers 4.3x saved them (tokenizer_config.json with
  added_tokens_decoder, [MASK] an added token past the Unigram pieces), cased; tokenizer.json's
  normalizer is NFKC (standing in for SentencePiece's precompiled charsmap), which
  DebertaV2Tokenizer does not use: the pairs with ligatures and full-width letters show it.
- `deberta-v2`: every other code path: no buckets, max_relative_positions 24 < the 40-token pairs
  (the table's ends are clamped), pos_att_type as the string "c2p|p2c" (as v2-xlarge writes it),
  separate pos_key_proj / pos_query_proj (share_att_key false, as the original DeBERTa), absolute
  positions, no LayerNorm on the relative embeddings, v2-xlarge's ConvLayer (kernel 3, gelu), plus what no released checkpoint has but the code reads: embedding_size 20 !=
  hidden_size 30 (embed_proj), type_vocab_size 2; num_labels 3. Older tokenizer files
  (special_tokens_map.json, no added_tokens_decoder), do_lower_case and split_by_punct.

The Unigram pieces are built here, deterministically, from CPython's pydoc_data.topics (the
`tokenizers` Unigram trainer gives different pieces from run to run): every character, frequent
words with the word-start mark, frequent prefixes and suffixes, scored by log frequency.
Every parameter is re-randomized (LayerNorm too). Same seed -> the same bytes, except the date.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from pydoc_data.topics import topics  # noqa: E402
from tokenizers import AddedToken, Regex, Tokenizer, normalizers, pre_tokenizers  # noqa: E402
from tokenizers.models import Unigram  # noqa: E402
from tokenizers.processors import TemplateProcessing  # noqa: E402
from transformers import AutoTokenizer, DebertaV2Config, DebertaV2ForSequenceClassification  # noqa: E402

from make_goldens import (ATOL, DEFAULT_OUT, EXTRA_CORPUS, PAIRS_L1, PAIRS_L3, compare_dirs,  # noqa: E402
                          crosscheck_sentence_transformers, hf_encode, provenance, tokenizer_cases, topic,
                          write_json, write_npz)

SEED = 20261201
SPECIALS = ["[PAD]", "[CLS]", "[SEP]", "[UNK]"]  # ids 0..3, score 0, as in deberta-v3's tokenizer.json
MASK = "[MASK]"                                  # an added token after the pieces, as deberta-v3's 128000
N_PIECES = 700
MARK = "\u2581"  # SentencePiece's word-start mark

# Pairs where DebertaV2Tokenizer's own normalization shows: NFKC (tokenizer.json's) would fold the
# ligature and the full-width letters, NFC keeps them; runs of spaces, tabs and newlines become one
# space; special tokens inside the text; punctuation glued to words.
PAIRS_DEBERTA = [
    ("\ufb01le \ufb02ow o\ufb03ce", "\uff21\uff22\uff23 full-width \uff11\uff12\uff13 and \u2460 circled"),
    ("many     spaces\t\ttabs\n\nnewlines", "  leading and trailing spaces   "),
    ("is [MASK] a token?", "[CLS] and [SEP] inside [PAD] a text"),
    ("punctuation,glued;to:words!", "(brackets) [square] {curly} end."),
    ("Ümlaut and e\u0301 combining", "\u00c5ngstr\u00f6m vs A\u030angstro\u0308m"),
]


def long_pairs(n: int) -> list:
    """Pairs longer than the bucket range (and than max_length): log buckets, clamping, truncation."""
    names = ["if", "while", "with", "lambda", "try", "class", "import", "for"]
    return [(topic(names[i % 8], 0, 60 + 40 * i), topic(names[(i + 3) % 8], 100, 500 - 30 * i)) for i in range(n)]


@dataclass(frozen=True)
class DebertaSpec:
    name: str
    seed: int
    config: dict
    pairs: list
    rank_groups: list
    model_max_length: int          # tokenizer_config.json
    max_length_arg: int | None     # what minibert's CrossEncoder gets; None: the default rule
    lowercase: bool
    split_by_punct: bool
    legacy_files: bool             # True: special_tokens_map.json and no added_tokens_decoder
    tokenizer_case_lengths: list = field(default_factory=list)


SPECS = [
    DebertaSpec(
        name="deberta-v3", seed=SEED + 3,
        config=dict(
            hidden_size=32, num_attention_heads=4, intermediate_size=45, num_hidden_layers=2,
            max_position_embeddings=96, type_vocab_size=0, layer_norm_eps=1e-7, num_labels=1,
            relative_attention=True, position_buckets=16, max_relative_positions=-1, share_att_key=True,
            pos_att_type=["p2c", "c2p"], norm_rel_ebd="layer_norm", position_biased_input=False,
            pooler_hidden_act="gelu", hidden_act="gelu",
        ),
        pairs=PAIRS_L1[:5] + PAIRS_L1[8:17] + PAIRS_L1[18:] + PAIRS_DEBERTA + long_pairs(3), rank_groups=[[0, 1, 2, 3, 4]],
        model_max_length=80, max_length_arg=None, lowercase=False, split_by_punct=False, legacy_files=False,
        tokenizer_case_lengths=[None, 5, 9, 33],
    ),
    DebertaSpec(
        name="deberta-v2", seed=SEED + 2,
        config=dict(
            hidden_size=30, num_attention_heads=3, intermediate_size=41, num_hidden_layers=2,
            max_position_embeddings=64, type_vocab_size=2, layer_norm_eps=1e-7, num_labels=3,
            id2label={0: "contradiction", 1: "entailment", 2: "neutral"},
            label2id={"contradiction": 0, "entailment": 1, "neutral": 2},
            relative_attention=True, position_buckets=-1, max_relative_positions=24, share_att_key=False,
            pos_att_type="c2p|p2c", norm_rel_ebd="none", position_biased_input=True, embedding_size=20,
            conv_kernel_size=3, conv_act="gelu", pooler_hidden_act="gelu", hidden_act="gelu",
        ),
        pairs=PAIRS_L3 + PAIRS_DEBERTA + long_pairs(1), rank_groups=[],
        model_max_length=512, max_length_arg=40, lowercase=True, split_by_punct=True, legacy_files=True,
        tokenizer_case_lengths=[None, 7, 17],
    ),
]


# ----------------------------------------------------------------------------------------------
# tokenizer


def build_pieces(lowercase: bool) -> list[tuple[str, float]]:
    """Unigram pieces with log-frequency scores: specials, the mark, every character, then frequent
    whole words (marked), prefixes (marked) and suffixes. Deterministic: ties broken by the string."""
    norm = normalizers.Sequence([*([normalizers.Lowercase()] if lowercase else []), normalizers.NFC()])
    corpus = [topics[k] for k in sorted(topics)] + [EXTRA_CORPUS] * 3
    words = Counter(w for text in corpus for w in norm.normalize_str(text).split())
    chars, wholes, prefixes, suffixes = Counter(), Counter(), Counter(), Counter()
    for w, n in words.items():
        for ch in w:
            chars[ch] += n
        wholes[MARK + w] += n
        for i in range(2, min(len(w), 8)):
            prefixes[MARK + w[:i]] += n
            suffixes[w[-i:]] += n
    total = sum(chars.values())

    def ranked(counter: Counter, n: int, taken: set) -> list[tuple[str, int]]:
        items = sorted((kv for kv in counter.items() if kv[0] not in taken and len(kv[0]) > 1),
                       key=lambda kv: (-kv[1], kv[0]))
        return items[:n]

    pieces = [(s, 0.0) for s in SPECIALS]
    # Characters are expensive (so the longer pieces win) but always available.
    singles = sorted(chars.items(), key=lambda kv: (-kv[1], kv[0]))
    pieces += [(MARK, math.log(0.5 * len(words) / total))]
    pieces += [(ch, math.log(n / total) - 4.0) for ch, n in singles]
    taken = {p for p, _ in pieces}
    budget = N_PIECES - len(pieces)
    for counter, share in ((wholes, 0.5), (prefixes, 0.25), (suffixes, 1.0)):
        chosen = ranked(counter, int(budget * share) if share < 1 else N_PIECES - len(pieces), taken)
        pieces += [(p, math.log(n / total)) for p, n in chosen]
        taken.update(p for p, _ in chosen)
    assert len(pieces) == len({p for p, _ in pieces}) == N_PIECES
    return [(p, round(s, 6)) for p, s in pieces]


def write_tokenizer(spec: DebertaSpec, out: Path) -> int:
    """tokenizer.json and tokenizer_config.json (and special_tokens_map.json), as Hub repos ship them; the vocab size."""
    pieces = build_pieces(spec.lowercase)
    tok = Tokenizer(Unigram(pieces, unk_id=SPECIALS.index("[UNK]"), byte_fallback=False))
    # As in deberta-v3's tokenizer.json: a SentencePiece normalizer (NFKC stands in for the precompiled
    # charsmap) and whitespace collapsing; DebertaV2Tokenizer replaces it with its own (NFC).
    tok.normalizer = normalizers.Sequence([normalizers.Replace(Regex(" {2,}"), " "), normalizers.NFKC()])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=MARK, prepend_scheme="always")
    tok.post_processor = TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 1), ("[SEP]", 2)])
    tok.add_special_tokens([AddedToken(t, special=True) for t in SPECIALS + [MASK]])
    (out / "tokenizer.json").write_text(tok.to_str(), encoding="utf-8")

    tc = {
        "bos_token": "[CLS]", "eos_token": "[SEP]", "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
        "cls_token": "[CLS]", "mask_token": MASK, "do_lower_case": spec.lowercase, "split_by_punct": spec.split_by_punct,
        "vocab_type": "spm", "sp_model_kwargs": {}, "model_max_length": spec.model_max_length,
        "tokenizer_class": "DebertaV2Tokenizer",
    }
    if not spec.legacy_files:
        tc["added_tokens_decoder"] = {
            str(tok.token_to_id(t)): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                                      "single_word": False, "special": True} for t in SPECIALS + [MASK]}
    write_json(out / "tokenizer_config.json", tc)
    if spec.legacy_files:
        write_json(out / "special_tokens_map.json", {k: v for k, v in tc.items() if k.endswith("_token")})
    return tok.get_vocab_size(with_added_tokens=True)


# ----------------------------------------------------------------------------------------------
# model


def randomize_(model: torch.nn.Module, seed: int) -> None:
    """Re-draw every parameter, as make_goldens.randomize_ does, with DeBERTa's own tables at scales
    that make them matter: the relative embeddings std 1 (their position terms then weigh as much as
    the content term), the embedding projection std 0.2."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            z = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if name.endswith("LayerNorm.weight"):
                value = 1.0 + 0.2 * z
            elif name.endswith(".bias"):
                value = 0.1 * z
            elif name.endswith("word_embeddings.weight"):
                value = 0.02 * z + 0.25 * torch.randn((p.shape[0], 1), generator=g, dtype=torch.float32)
            elif name.endswith("rel_embeddings.weight"):
                value = z
            elif name.endswith("embed_proj.weight"):
                value = 0.2 * z
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


def run_model(model, enc: dict):
    captured = {}
    hook = model.pooler.register_forward_hook(lambda mod, inp, out: captured.__setitem__("pooled", out))
    try:
        with torch.no_grad():
            out = model(input_ids=enc["input_ids"], token_type_ids=enc["token_type_ids"],
                        attention_mask=enc["attention_mask"], output_hidden_states=True)
    finally:
        hook.remove()
    return list(out.hidden_states), captured["pooled"], out.logits


def effective_max_length(spec: DebertaSpec, arg: int | None) -> int:
    return arg if arg is not None else min(spec.model_max_length, spec.config["max_position_embeddings"])


def make_golden(spec: DebertaSpec, out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    vocab_size = write_tokenizer(spec, out)
    config = DebertaV2Config(vocab_size=vocab_size, pad_token_id=0, **spec.config)
    torch.manual_seed(spec.seed)
    model = DebertaV2ForSequenceClassification(config).eval()
    randomize_(model, spec.seed)
    model.save_pretrained(out, safe_serialization=True)

    hf_tok = AutoTokenizer.from_pretrained(out)
    assert type(hf_tok).__name__ == "DebertaV2Tokenizer", type(hf_tok)
    eager = DebertaV2ForSequenceClassification.from_pretrained(out, attn_implementation="eager",
                                                               dtype=torch.float32).eval()
    try:
        sdpa = DebertaV2ForSequenceClassification.from_pretrained(out, attn_implementation="sdpa",
                                                                  dtype=torch.float32).eval()
    except (ValueError, ImportError) as exc:  # DeBERTa-v2 has its own attention only
        sdpa, sdpa_note = None, f"not available: {str(exc).splitlines()[0][:120]}"

    max_length = effective_max_length(spec, spec.max_length_arg)
    enc = hf_encode(hf_tok, spec.pairs, max_length)
    hidden, pooled, logits = run_model(eager, enc)
    if sdpa is not None:
        sdpa_diff = float((run_model(sdpa, enc)[2] - logits).abs().max())
        assert sdpa_diff <= ATOL, f"{spec.name}: sdpa and eager logits differ by {sdpa_diff:.3g}"
        sdpa_note = sdpa_diff

    mask = enc["attention_mask"].bool()
    lengths = mask.sum(1)
    assert mask.shape[1] == int(lengths.max()) <= max_length
    assert len(hidden) == config.num_hidden_layers + 1
    stages = ["embeddings", *[f"layer_{i}" for i in range(config.num_hidden_layers)], "pooled", "logits"]
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
        assert np.all(np.isfinite(arr)), f"{name} has non-finite values"
    write_npz(out / "golden.npz", arrays)

    tokens = [hf_tok.convert_ids_to_tokens(ids[m].tolist()) for ids, m in zip(enc["input_ids"], mask)]
    assert any("[UNK]" in t for t in tokens), f"{spec.name}: no pair has an unknown piece"
    cases = tokenizer_cases(hf_tok, spec)
    rank_margins = []
    for group in spec.rank_groups:
        s = np.sort(arrays["logits"][group, 0])
        rank_margins.append(float(np.diff(s).min()))
        assert rank_margins[-1] > 100 * ATOL, f"{spec.name}: ranking group {group} has near-tied scores {s}"
    st_check = crosscheck_sentence_transformers(out, spec, max_length, arrays["logits"])

    meta = {
        **provenance(spec, "model"),
        "generator": "tools/goldens_deberta.py",
        "family": "DeBERTa-v2",
        "attn_implementation": "eager",
        "dtype": "float32",
        "sdpa_vs_eager_max_abs_diff": sdpa_note,
        "sentence_transformers_vs_golden_max_abs_diff": st_check,
        "stages": stages,
        "config": {
            "model_type": "deberta-v2",
            "vocab_size": config.vocab_size,
            "hidden_size": config.hidden_size,
            "num_hidden_layers": config.num_hidden_layers,
            "num_labels": config.num_labels,
            **{k: v for k, v in spec.config.items() if k not in ("id2label", "label2id", "num_labels")},
            "id2label": {str(k): v for k, v in config.id2label.items()},
        },
        "tokenizer": {
            "class": "DebertaV2Tokenizer", "do_lower_case": spec.lowercase, "split_by_punct": spec.split_by_punct,
            "files": sorted(p.name for p in out.iterdir() if p.name.startswith(("tokenizer", "special"))),
            "model_max_length": spec.model_max_length,
        },
        "max_length_arg": spec.max_length_arg,
        "max_length": max_length,
        "tokenization": "tokenizer(queries, passages, padding=True, truncation='longest_first', max_length=max_length)",
        "tolerance": {"atol": ATOL, "rtol": ATOL},
        "arrays": {name: {"shape": list(arr.shape), "dtype": str(arr.dtype)} for name, arr in arrays.items()},
        "pairs": [list(p) for p in spec.pairs],
        "tokens": tokens,
        "rank_groups": spec.rank_groups,
        "rank_group_min_margin": rank_margins,
        "tokenizer_cases": cases,
    }
    write_json(out / "golden.json", meta)
    size = sum(p.stat().st_size for p in out.iterdir())
    print(f"{spec.name}: B={len(spec.pairs)} T={mask.shape[1]} N={int(lengths.sum())} max_length={max_length} "
          f"({int((lengths == max_length).sum())} pairs at the limit), sdpa={sdpa_note}, "
          f"sentence-transformers={st_check}, {size / 1024:.0f} KiB")
    print(f"    logits[:4]: {np.array2string(arrays['logits'][:4].ravel(), precision=4)}")


def make_all(out: Path) -> None:
    for spec in SPECS:
        make_golden(spec, out / spec.name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"fixtures directory (default {DEFAULT_OUT})")
    parser.add_argument("--check", action="store_true", help="rebuild in a temp dir and compare with --out")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # same reductions every run
    if not args.check:
        make_all(args.out)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        make_all(Path(tmp))
        # Only this family's directories: the other fixtures are other tools'.
        problems = [f"{spec.name}: {p}" for spec in SPECS for p in compare_dirs(Path(tmp) / spec.name, args.out / spec.name)]
    for p in problems:
        print("MISMATCH", p)
    print("DeBERTa goldens reproduce" if not problems else f"{len(problems)} mismatches")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
