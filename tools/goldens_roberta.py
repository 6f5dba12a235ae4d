"""Write the RoBERTa-family golden files: RobertaForSequenceClassification (byte-level BPE) and
XLMRobertaForSequenceClassification (SentencePiece Unigram), stage by stage, plus token-id-only
goldens for the older vocab.json + merges.txt directory and for CamembertTokenizer.

The same format as tools/make_goldens.py (read its docstring): golden.npz holds the stages packed
over the valid tokens, golden.json the provenance, pairs, tokens, max_length and tokenizer_cases,
and "stages" = embeddings, layer_0 .. layer_{n-1}, head_dense, logits, where
    head_dense [B, H]   tanh(classifier.dense(first token)), the RobertaClassificationHead's hidden layer

Usage (needs the `golden` extra: torch, transformers, sentence-transformers, sentencepiece):

    python tools/goldens_roberta.py            # (re)write tests/fixtures/goldens/roberta-*/, xlmr-*/, camembert-*/
    python tools/goldens_roberta.py --check    # rebuild in a temp dir, compare with the committed files

The fixtures:
- `roberta-bpe`: RoBERTa, num_labels 1, a byte-level BPE trained here with tokenizers' BpeTrainer
  (deterministic: the same vocab and merges every run) on CPython's pydoc topics; tokenizer.json +
  tokenizer_config.json (add_prefix_space false, as roberta-base). max_position_embeddings 50 =
  48 tokens + pad_token_id 1 + 1, model_max_length 512: the default max_length must be 48.
- `xlmr-unigram`: XLM-RoBERTa, num_labels 3 with label names, a Unigram vocabulary built here
  deterministically (tokenizers' UnigramTrainer is not: its pieces change from run to run) from
  the same text, a small SentencePiece Precompiled normalizer (built by sentencepiece from a few
  rules: full-width letters, ligatures, circled digits, no-break and ideographic spaces) followed in
  tokenizer.json by a Lowercase that transformers 5 drops (XLMRobertaTokenizer keeps only the
  Precompiled charsmap), so a loader that keeps it is caught. max_length 40.
- `xlmr-long`: XLM-RoBERTa with 1026 positions (1024 tokens) and max_length 1000: pairs longer
  than 512 tokens, one of them truncated longest_first, one of 600+ tokens untruncated.
- `roberta-tok-files` (token ids only): vocab.json + merges.txt, no tokenizer.json, add_prefix_space true.
- `camembert-tok` (token ids only): CamembertTokenizer, whose unknown-piece id is the index of
  <unk> (4 here; XLMRobertaTokenizer always uses 3), add_prefix_space false (Metaspace "never").

Pairs put pad_token_id inside a text ("<pad>" is a special token), where RoBERTa's position ids
skip it. Every parameter is re-randomized from a seeded generator (LayerNorm too, the <pad> rows of
the word and position tables too). Same seed -> byte-identical files, except golden.json's date.
"""

from __future__ import annotations

import io
import json
import math
import shutil
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import make_goldens as mg  # noqa: E402  (the shared helpers: texts, npz/json writers, provenance, --check)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from pydoc_data.topics import topics  # noqa: E402
from tokenizers import AddedToken, Tokenizer, normalizers, pre_tokenizers, processors, trainers  # noqa: E402
from tokenizers.models import BPE, Unigram  # noqa: E402
from transformers import (AutoTokenizer, RobertaConfig, RobertaForSequenceClassification,  # noqa: E402
                          XLMRobertaConfig, XLMRobertaForSequenceClassification)

SEED = 20261201
OUT = mg.DEFAULT_OUT
ATOL = mg.ATOL
topic = mg.topic
CORPUS = [topics[k] for k in sorted(topics)] + [mg.EXTRA_CORPUS] * 3
# ids 0..3 as roberta-base and xlm-roberta-base have them; <mask> comes last (XLM-R) or 4 (RoBERTa's BPE here).
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]
MASK = "<mask>"

# Shared by every pair list: what the template, truncation and position ids must get right.
COMMON_PAIRS = [
    ("what is a <pad> token?", "a text with <pad> inside it, and <s> or </s> too"),   # pad id inside: positions skip it
    ("", "an empty query precedes this passage"),
    ("an empty passage follows", ""),
    ("whitespace only", " \t\n  \u3000 "),
    ("Café naïve résumé?", "Über die Straße: crème brûlée, São Paulo, Ångström."),
    ("日本語のテキスト", "中文文本 and 東京 mixed with 한국어"),
    ("python 🐍 snakes 🙂", "rocket 🚀 launch 👍🏽 done, zwj 👩\u200d💻"),
    ("e\u0301cole cafe\u0301", "A\u030a and o\u0308, ＡＢＣ ﬁne ① ②"),   # combining marks, full-width, ligature, circled
    (" leading space", "trailing space "),
    ("MiXeD CaSe", "UPPER lower Title"),
    ("def f(x): return x**2  # square", "lambda x: x[0] if x else None; print(f'{x!r}')"),
    ("fill the <mask> here", "no mask"),
    (f"{mg.LONG_WORD} words", "Ω ∮ zxqv"),
]

PAIRS_BPE = [
    ("how do I define a function?", "A function definition defines a user-defined function object."),
    ("how do I define a function?", "The for statement is used to iterate over the elements of a sequence."),
    ("how do I define a function?", "Functions are defined with the def keyword, a name and parameters."),
    ("how do I define a function?", "Raising an exception with the raise statement."),
    (topic("if", 0, 400), topic("while", 0, 400)),            # both sides longer than max_length
    (topic("with", 0, 320), "Context managers."),              # only the query is cut
    ("what is a lambda?", topic("lambda", 0, 400)),           # only the passage is cut
    (topic("try", 0, 300), topic("try", 0, 300)),             # longest_first tie
    *COMMON_PAIRS,
    ("how do I define a function?", "A function definition defines a user-defined function object."),  # duplicate
]
RANK_GROUPS_BPE = [[0, 1, 2, 3]]

PAIRS_XLMR = [
    ("What is an Exception?", "Exceptions are a means of breaking out of the normal flow of control."),
    ("what is an exception?", "EXCEPTIONS ARE A MEANS OF BREAKING OUT OF THE NORMAL FLOW OF CONTROL."),
    (topic("class", 0, 300), topic("import", 0, 300)),
    ("Import System", topic("import", 200, 400)),
    *COMMON_PAIRS,
    (topic("for", 0, 500), "short"),
]

PAIRS_LONG = [
    (topic("import", 0, 4000), topic("exceptions", 0, 4000)),  # both sides cut to 1000 tokens together
    ("How is a module found when importing it?", topic("import", 0, 1300)),  # 600+ tokens, not cut
    ("a short <pad> query", "and a short passage"),
]


@dataclass(frozen=True)
class Spec:
    name: str
    seed: int
    kind: str                     # "bpe" (RobertaTokenizer), "unigram" (XLMRobertaTokenizer), "camembert"
    model_type: str
    config: dict
    pairs: list
    max_length_arg: int | None
    model_max_length: int = 512
    add_prefix_space: bool | None = None   # None: the class's default, not written to tokenizer_config.json
    files: str = "tokenizer.json"          # or "vocab.json+merges.txt"
    rank_groups: list = field(default_factory=list)
    tokenizer_case_lengths: list = field(default_factory=list)
    model: bool = True                     # False: token ids only (no weights)

    @property
    def max_tokens(self) -> int:
        return self.config["max_position_embeddings"] - 1 - 1   # pad_token_id 1


SPECS = [
    Spec("roberta-bpe", SEED + 1, "bpe", "roberta",
         dict(hidden_size=30, num_attention_heads=2, intermediate_size=45, num_hidden_layers=2,
              max_position_embeddings=50, type_vocab_size=1, layer_norm_eps=1e-5, num_labels=1),
         PAIRS_BPE, None, rank_groups=RANK_GROUPS_BPE, tokenizer_case_lengths=[5, 6, 7, 12, 30]),
    Spec("xlmr-unigram", SEED + 2, "unigram", "xlm-roberta",
         dict(hidden_size=26, num_attention_heads=2, intermediate_size=41, num_hidden_layers=3,
              max_position_embeddings=130, type_vocab_size=1, layer_norm_eps=1e-5, num_labels=3,
              id2label={0: "contradiction", 1: "entailment", 2: "neutral"},
              label2id={"contradiction": 0, "entailment": 1, "neutral": 2}),
         PAIRS_XLMR, 40, tokenizer_case_lengths=[None, 5, 9, 17]),
    Spec("xlmr-long", SEED + 3, "unigram", "xlm-roberta",
         dict(hidden_size=14, num_attention_heads=2, intermediate_size=23, num_hidden_layers=2,
              max_position_embeddings=1026, type_vocab_size=1, layer_norm_eps=1e-5, num_labels=1),
         PAIRS_LONG, 1000, model_max_length=8192, tokenizer_case_lengths=[None]),
    Spec("roberta-tok-files", SEED + 4, "bpe", "roberta",
         dict(hidden_size=32, num_attention_heads=2, intermediate_size=37, num_hidden_layers=1,
              max_position_embeddings=514, type_vocab_size=1, num_labels=1),
         PAIRS_BPE, None, model_max_length=512, add_prefix_space=True, files="vocab.json+merges.txt",
         tokenizer_case_lengths=[None, 6, 20], model=False),
    Spec("camembert-tok", SEED + 5, "camembert", "camembert",
         dict(hidden_size=32, num_attention_heads=2, intermediate_size=37, num_hidden_layers=1,
              max_position_embeddings=514, type_vocab_size=1, num_labels=1),
         PAIRS_XLMR, None, model_max_length=512, add_prefix_space=False, tokenizer_case_lengths=[None, 7, 24],
         model=False),
]


# ----------------------------------------------------------------------------------------------
# tokenizers


def train_bpe() -> Tokenizer:
    """Byte-level BPE, trained on the pydoc topics (BpeTrainer gives the same merges every run)."""
    tok = Tokenizer(BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=900, special_tokens=[*SPECIALS, MASK], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def unigram_pieces(specials: list[str], size: int = 1000) -> list[tuple[str, float]]:
    """A Unigram vocabulary, deterministically: specials, every character (bare and after "▁"),
    then the most frequent words, word starts and word ends; score = log(frequency / total), rounded,
    minus 8 for a single character. Ties are broken by the string."""
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
    taken = set(specials) | set(chars)
    ranked = sorted((kv for kv in counts.items() if kv[0] not in taken and len(kv[0]) > 1), key=lambda kv: (-kv[1], kv[0]))
    rest = [w for w, _ in ranked[: size - len(specials) - len(chars) - 1]]

    def score(piece):  # single characters are the fallback: a word's pieces win over its letters
        return round(math.log(max(counts[piece], 1) / total) - (8.0 if len(piece) == 1 else 0.0), 4)

    pieces = [(s, 0.0) for s in specials] + [(p, score(p)) for p in sorted(chars + rest, key=lambda p: (-counts[p], p))]
    return pieces + [(MASK, 0.0)]


def precompiled_charsmap() -> bytes:
    """A small SentencePiece normalization charsmap, compiled by sentencepiece from a few rules (as
    real XLM-R's tokenizer.json carries a large one for NFKC). Needs no training data beyond a few lines."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2

    rules = [("\uff21", "A"), ("\uff22", "B"), ("\uff23", "C"), ("\uff41", "a"), ("\ufb01", "fi"), ("\u2460", "1"),
             ("\u2461", "2"), ("\u00a0", " "), ("\u3000", " "), ("A\u030a", "\u00c5")]
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        tsv, text = Path(tmp) / "rules.tsv", Path(tmp) / "text.txt"
        tsv.write_text("".join(" ".join(f"{ord(c):X}" for c in a) + "\t" + " ".join(f"{ord(c):X}" for c in b) + "\n"
                               for a, b in rules), encoding="utf-8")
        text.write_text("\n".join(topics[k] for k in sorted(topics))[:100_000], encoding="utf-8")
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(input=str(text), model_writer=model, vocab_size=200, minloglevel=2,
                                       normalization_rule_tsv=str(tsv), num_threads=1)
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model.getvalue())
    return proto.normalizer_spec.precompiled_charsmap


def added_token(content: str, lstrip: bool = False) -> AddedToken:
    return AddedToken(content, lstrip=lstrip, rstrip=False, single_word=False, normalized=False, special=True)


def write_tokenizer(spec: Spec, out: Path) -> None:
    """The tokenizer files as save_pretrained writes them: tokenizer.json (or vocab.json + merges.txt)
    and tokenizer_config.json, whose added_tokens_decoder agrees with tokenizer.json's added tokens."""
    if spec.kind == "bpe":
        tok = train_bpe()
        specials = [added_token(t) for t in SPECIALS] + [added_token(MASK, lstrip=True)]
        tok.add_special_tokens(specials)
        tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
        tc = {"tokenizer_class": "RobertaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>",
              "cls_token": "<s>", "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>",
              "errors": "replace", "trim_offsets": True}
    else:
        specials_list = SPECIALS if spec.kind == "unigram" else ["<s>NOTUSED", "<pad>", "</s>NOTUSED", "<s>", "<unk>", "</s>"]
        pieces = unigram_pieces(specials_list)
        tok = Tokenizer(Unigram(pieces, unk_id=specials_list.index("<unk>"), byte_fallback=False))
        # transformers 5 keeps only the Precompiled part of this; the Lowercase must be dropped.
        tok.normalizer = normalizers.Sequence([normalizers.Precompiled(precompiled_charsmap()), normalizers.Lowercase()])
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace()])
        named = ["<s>", "<pad>", "</s>", "<unk>"] + (["<s>NOTUSED", "</s>NOTUSED"] if spec.kind == "camembert" else [])
        specials = [added_token(t) for t in named] + [added_token(MASK, lstrip=True)]
        tok.add_special_tokens(specials)
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
            special_tokens=[("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))])
        cls = "XLMRobertaTokenizer" if spec.kind == "unigram" else "CamembertTokenizer"
        tc = {"tokenizer_class": cls, "bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>",
              "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>"}
        if spec.kind == "camembert":
            tc["additional_special_tokens"] = ["<s>NOTUSED", "</s>NOTUSED"]
    tc["model_max_length"] = spec.model_max_length
    if spec.add_prefix_space is not None:
        tc["add_prefix_space"] = spec.add_prefix_space
    tc["added_tokens_decoder"] = {
        str(tok.token_to_id(t.content)): {"content": t.content, "lstrip": t.lstrip, "normalized": t.normalized,
                                          "rstrip": t.rstrip, "single_word": t.single_word, "special": True}
        for t in specials}
    mg.write_json(out / "tokenizer_config.json", tc)
    if spec.files == "tokenizer.json":
        (out / "tokenizer.json").write_text(tok.to_str(), encoding="utf-8")
    else:
        raw = json.loads(tok.to_str())["model"]
        mg.write_json(out / "vocab.json", raw["vocab"])
        merges = [m if isinstance(m, str) else " ".join(m) for m in raw["merges"]]
        (out / "merges.txt").write_text("#version: 0.2\n" + "".join(m + "\n" for m in merges), encoding="utf-8")


# ----------------------------------------------------------------------------------------------
# models


def model_classes(spec: Spec):
    return (RobertaConfig, RobertaForSequenceClassification) if spec.model_type == "roberta" \
        else (XLMRobertaConfig, XLMRobertaForSequenceClassification)


def randomize_(model: torch.nn.Module, seed: int) -> None:
    """Re-draw EVERY parameter, as make_goldens.randomize_ does (see its docstring for the scales);
    the head's dense layer is an encoder-sized linear (0.2), its out_proj gets 0.5."""
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
            elif "embeddings" in name:
                value = 0.02 * z
            elif name.startswith("classifier.out_proj"):
                value = 0.5 * z
            else:
                value = 0.2 * z
            p.copy_(value)
    for name, p in model.named_parameters():
        constant = p.numel() > 1 and bool(torch.all(p == p.flatten()[0]))
        assert not constant and bool(torch.any(p != 0)), f"{name} was not re-randomized"
    emb = model.roberta.embeddings
    assert emb.word_embeddings.weight[1].abs().sum() > 0 and emb.position_embeddings.weight[1].abs().sum() > 0


def run_model(model, enc: dict):
    """hidden states, the head's dense + tanh [B, H], logits [B, L]."""
    captured = {}
    hook = model.classifier.dense.register_forward_hook(lambda mod, inp, out: captured.__setitem__("dense", out))
    try:
        with torch.no_grad():
            out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], output_hidden_states=True)
    finally:
        hook.remove()
    return list(out.hidden_states), torch.tanh(captured["dense"]), out.logits


def effective_max_length(spec: Spec, arg: int | None) -> int:
    return arg if arg is not None else min(spec.model_max_length, spec.max_tokens)


def tokenizer_cases(hf_tok, spec: Spec) -> list[dict]:
    cases = []
    for arg in spec.tokenizer_case_lengths:
        m = effective_max_length(spec, arg)
        enc = hf_tok([q for q, _ in spec.pairs], [p for _, p in spec.pairs], truncation="longest_first", max_length=m)
        assert "token_type_ids" not in enc, "the RoBERTa tokenizers give the model no token type ids"
        cases.append({"max_length_arg": arg, "max_length": m, "input_ids": enc["input_ids"],
                      "token_type_ids": [[0] * len(ids) for ids in enc["input_ids"]]})
    return cases


def provenance(spec: Spec, kind: str) -> dict:
    return {**mg.provenance(spec, kind), "generator": "tools/goldens_roberta.py"}


def tokenizer_summary(spec: Spec, out: Path, hf_tok) -> dict:
    return {"class": type(hf_tok).__name__, "add_prefix_space": spec.add_prefix_space,
            "files": sorted(p.name for p in out.iterdir() if p.name.startswith(("tokenizer", "vocab", "merges"))),
            "model_max_length": spec.model_max_length}


def make_golden(spec: Spec, out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    write_tokenizer(spec, out)
    hf_tok = AutoTokenizer.from_pretrained(out)
    config_class, model_class = model_classes(spec)
    config = config_class(vocab_size=len(hf_tok), hidden_act="gelu", pad_token_id=1, bos_token_id=0, eos_token_id=2,
                          **spec.config)
    if not spec.model:
        config.save_pretrained(out)
        cases = tokenizer_cases(hf_tok, spec)
        meta = {**provenance(spec, "tokenizer"), "tokenizer": tokenizer_summary(spec, out, hf_tok),
                "tokenization": "tokenizer(queries, passages, truncation='longest_first', max_length=max_length)",
                "pairs": [list(p) for p in spec.pairs],
                "tokens": [hf_tok.convert_ids_to_tokens(ids) for ids in cases[0]["input_ids"]],
                "tokenizer_cases": cases}
        mg.write_json(out / "golden.json", meta)
        print(f"{spec.name}: {len(spec.pairs)} pairs, max_length {[c['max_length'] for c in cases]}, no weights")
        return

    torch.manual_seed(spec.seed)
    model = model_class(config).eval()
    randomize_(model, spec.seed)
    model.save_pretrained(out, safe_serialization=True)

    eager = model_class.from_pretrained(out, attn_implementation="eager", dtype=torch.float32).eval()
    sdpa = model_class.from_pretrained(out, attn_implementation="sdpa", dtype=torch.float32).eval()
    max_length = effective_max_length(spec, spec.max_length_arg)
    enc = mg.hf_encode(hf_tok, spec.pairs, max_length)
    assert "token_type_ids" not in enc
    hidden, dense, logits = run_model(eager, enc)
    _, _, logits_sdpa = run_model(sdpa, enc)
    sdpa_diff = float((logits_sdpa - logits).abs().max())
    assert sdpa_diff <= ATOL, f"{spec.name}: sdpa and eager logits differ by {sdpa_diff:.3g}"

    mask = enc["attention_mask"].bool()
    lengths = mask.sum(1)
    B, T = mask.shape
    assert T == int(lengths.max()) <= max_length
    ids = enc["input_ids"][mask]
    arrays = {
        "lengths": lengths.numpy().astype(np.int64),
        "input_ids": ids.numpy().astype(np.int64),
        "token_type_ids": np.zeros(len(ids), np.int64),
        "embeddings": hidden[0][mask].numpy().astype(np.float32),
    }
    for i in range(config.num_hidden_layers):
        arrays[f"layer_{i}"] = hidden[i + 1][mask].numpy().astype(np.float32)
    arrays["head_dense"] = dense.numpy().astype(np.float32)
    arrays["logits"] = logits.numpy().astype(np.float32)
    for name, arr in arrays.items():
        assert np.all(np.isfinite(arr)), f"{name} has non-finite values"
    mg.write_npz(out / "golden.npz", arrays)
    stages = ["embeddings", *[f"layer_{i}" for i in range(config.num_hidden_layers)], "head_dense", "logits"]

    rank_margins = []
    for group in spec.rank_groups:
        s = np.sort(arrays["logits"][group, 0])
        rank_margins.append(float(np.diff(s).min()))
        assert rank_margins[-1] > 100 * ATOL, f"{spec.name}: ranking group {group} has near-tied scores {s}"
    st_check = mg.crosscheck_sentence_transformers(out, spec, max_length, arrays["logits"])
    tokens = [hf_tok.convert_ids_to_tokens(row[m].tolist()) for row, m in zip(enc["input_ids"], mask)]
    pad_inside = sum(int((row[m] == 1).sum()) for row, m in zip(enc["input_ids"], mask))
    meta = {
        **provenance(spec, "model"),
        "architecture": model_class.__name__,
        "attn_implementation": "eager",
        "dtype": "float32",
        "sdpa_vs_eager_max_abs_diff": sdpa_diff,
        "sentence_transformers_vs_golden_max_abs_diff": st_check,
        "config": {"model_type": spec.model_type, "vocab_size": config.vocab_size, **{
            k: getattr(config, k) for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                            "intermediate_size", "max_position_embeddings", "type_vocab_size",
                                            "layer_norm_eps", "hidden_act", "pad_token_id", "num_labels")},
                   "id2label": {str(k): v for k, v in config.id2label.items()}},
        "tokenizer": tokenizer_summary(spec, out, hf_tok),
        "stages": stages,
        "max_length_arg": spec.max_length_arg,
        "max_length": max_length,
        "tokenization": "tokenizer(queries, passages, padding=True, truncation='longest_first', max_length=max_length)",
        "tolerance": {"atol": ATOL, "rtol": mg.RTOL},
        "arrays": {name: {"shape": list(arr.shape), "dtype": str(arr.dtype)} for name, arr in arrays.items()},
        "pairs": [list(p) for p in spec.pairs],
        "tokens": tokens,
        "pad_tokens_inside_pairs": pad_inside,
        "rank_groups": spec.rank_groups,
        "rank_group_min_margin": rank_margins,
        "tokenizer_cases": tokenizer_cases(hf_tok, spec),
    }
    mg.write_json(out / "golden.json", meta)
    size = sum(p.stat().st_size for p in out.iterdir())
    print(f"{spec.name}: B={B} T={T} N={int(lengths.sum())} max_length={max_length} "
          f"({int((lengths == max_length).sum())} pairs at the limit, {pad_inside} <pad> inside), "
          f"H={config.hidden_size} L={config.num_hidden_layers} labels={config.num_labels}, "
          f"sdpa-eager={sdpa_diff:.1e}, sentence-transformers={st_check}, {size / 1024:.0f} KiB")


def make_all(out: Path) -> None:
    for spec in SPECS:
        make_golden(spec, out / spec.name)


def main(argv: list[str] | None = None) -> int:
    return mg.build_or_check(argv, __doc__.splitlines()[0], OUT, make_all, "RoBERTa goldens")


if __name__ == "__main__":
    sys.exit(main())
