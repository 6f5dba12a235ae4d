"""Write the ModernBERT golden files: tiny random ModernBertForSequenceClassification models, stage by stage.

The same format as tools/make_goldens.py (read its docstring): each tests/fixtures/goldens/<name>/ is a
HuggingFace model directory plus golden.npz (packed stages over the valid tokens) and golden.json.
The stages are transformers' output_hidden_states, which for ModernBERT are
    embeddings   hidden_states[0], after the embedding norm
    layer_i      hidden_states[i + 1]; the last one is after the final norm (= last_hidden_state)
    pooled       ModernBertPredictionHead's output (pooling -> dense -> GELU -> norm), [B, H]
    logits       the classifier's output, no activation
token_type_ids are all 0: the tokenizer does not return them (model_input_names), and the model has none.

Usage (needs the `golden` extra):

    python tools/goldens_modernbert.py            # (re)write tests/fixtures/goldens/modernbert-*/
    python tools/goldens_modernbert.py --check    # rebuild in a temp dir, compare with the committed files

The two models differ on purpose:
- `modernbert-cls`: the config keys the Hub's checkpoints carry (global_attn_every_n_layers=2,
  global_rope_theta, local_rope_theta), cls pooling, every bias on, local_attention=8 (a token sees
  4 on each side) so that most pairs are longer than the window; one label; tokenizer.json with
  padding and truncation baked in (which must be ignored), tokenizer_class PreTrainedTokenizerFast;
  max_length by the default rule, min(model_max_length 8192, max_position_embeddings 48).
- `modernbert-mean`: transformers 5's layer_types (sliding, full, sliding: not the legacy pattern)
  and rope_parameters per layer type, mean pooling, no attention, norm or classifier biases (but
  MLP biases), local_attention=13 (window 6: the // 2), three labels, max_position_embeddings
  1024 and max_length 520: a pair cut at 520 tokens (over 512), one of ~300 untruncated; no
  tokenizer_class (AutoTokenizer picks ModernBERT's).

The tokenizer is a byte-level BPE (NFC, ByteLevel pre-tokenizer, [CLS] A [SEP] B [SEP] template) whose
merges are learned here from CPython's pydoc text by a small deterministic BPE (ties broken by the
pair's text; the `tokenizers` trainer breaks ties differently from run to run). The reference token
ids come from transformers' AutoTokenizer on the written directory (padding=True,
truncation="longest_first", max_length=M, as sentence-transformers' CrossEncoder tokenizes).
Every parameter is re-drawn from a seeded generator (norm weights 1 +- 0.2, biases +-0.1); eager
attention is the reference, sdpa must agree within 1e-5.
"""

from __future__ import annotations

import json
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
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers  # noqa: E402
from tokenizers.models import BPE  # noqa: E402
from tokenizers.processors import TemplateProcessing  # noqa: E402
from transformers import AutoTokenizer, ModernBertConfig, ModernBertForSequenceClassification  # noqa: E402

from make_goldens import (ATOL, DEFAULT_OUT, EXTRA_CORPUS, PAIRS_L1, RANK_GROUPS_L1, RTOL, SEED,  # noqa: E402
                          compare_dirs, hf_encode, provenance, topic, write_json, write_npz)

N_MERGES = 520
TRAIN_WORDS = 4000  # the most frequent pre-tokenized words of the corpus, for learning merges
SPECIAL_TOKENS = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]  # at the end of the vocab, as ModernBERT's

PAIRS_MEAN = [
    ("What is an Exception?", "Exceptions are a means of breaking out of the normal flow of control."),
    (topic("class", 0, 300), topic("import", 0, 300)),
    # ~300 tokens, not truncated: far longer than the window
    ("how does the import system find a module?", topic("import", 0, 700)),
    # both sides long: cut to 520 tokens (more than 512), longest_first
    (topic("exceptions", 0, 2200), topic("try", 0, 2200)),
    ("Café Größe naïve", "Ärger über Öl, año señor, déjà vu façade"),
    ("北京大学 中文", "日本 東京 and 한국어 text 😀 👩\u200d💻"),
    ("e\u0301cole cafe\u0301", "A\u030a and o\u0308 (composed by NFC)"),
    ("an empty passage follows", ""),
    ("", "an empty query precedes this passage"),
    ("whitespace only", "\n\n\t \u2003 "),
    ("an empty passage follows", ""),  # duplicate of 7
]


@dataclass(frozen=True)
class ModernSpec:
    name: str
    seed: int
    config: dict             # ModernBertConfig keyword arguments, written to config.json as given
    pairs: list
    rank_groups: list
    model_max_length: int
    max_length_arg: int | None
    tokenizer_class: str | None
    bake_padding: bool       # tokenizer.json with padding/truncation that a loader must ignore
    legacy_config: bool      # config.json as the Hub's checkpoints have it (no layer_types / rope_parameters)
    tokenizer_case_lengths: list = field(default_factory=list)


SPECS = [
    ModernSpec(
        name="modernbert-cls",
        seed=SEED + 11,
        config=dict(
            hidden_size=20, num_attention_heads=2, intermediate_size=29, num_hidden_layers=3,
            max_position_embeddings=48, local_attention=8, global_attn_every_n_layers=2,
            global_rope_theta=1000.0, local_rope_theta=50.0, norm_eps=1e-6,
            norm_bias=True, attention_bias=True, mlp_bias=True, classifier_bias=True,
            classifier_pooling="cls", num_labels=1,
        ),
        pairs=PAIRS_L1,
        rank_groups=RANK_GROUPS_L1,
        model_max_length=8192,
        max_length_arg=None,
        tokenizer_class="PreTrainedTokenizerFast",
        bake_padding=True,
        legacy_config=True,
        tokenizer_case_lengths=[3, 5, 6, 7, 12, 20],
    ),
    ModernSpec(
        name="modernbert-mean",
        seed=SEED + 13,
        config=dict(
            hidden_size=16, num_attention_heads=2, intermediate_size=21, num_hidden_layers=3,
            max_position_embeddings=1024, local_attention=13,
            layer_types=["sliding_attention", "full_attention", "sliding_attention"],
            rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 160000.0},
                             "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}},
            norm_bias=False, attention_bias=False, mlp_bias=True, classifier_bias=False,
            classifier_pooling="mean", num_labels=3,
            id2label={0: "contradiction", 1: "entailment", 2: "neutral"},
            label2id={"contradiction": 0, "entailment": 1, "neutral": 2},
        ),
        pairs=PAIRS_MEAN,
        rank_groups=[],
        model_max_length=8192,
        max_length_arg=520,
        tokenizer_class=None,
        bake_padding=False,
        legacy_config=False,
        tokenizer_case_lengths=[None, 9, 17, 300],
    ),
]


# ----------------------------------------------------------------------------------------------
# tokenizer


def learn_merges(n_merges: int) -> list[tuple[str, str]]:
    """Byte-level BPE merges from pydoc text: the most frequent adjacent pair first, ties by its text."""
    pre = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    corpus = [topics[k] for k in sorted(topics)] + [EXTRA_CORPUS] * 3
    counts = Counter(w for text in corpus for w, _ in pre.pre_tokenize_str(text))
    words = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:TRAIN_WORDS]
    symbols = [(list(w), n) for w, n in words]
    merges = []
    for _ in range(n_merges):
        pairs = Counter()
        for parts, n in symbols:
            for a, b in zip(parts, parts[1:]):
                pairs[a, b] += n
        if not pairs:
            break
        best = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        merges.append(best)
        joined = best[0] + best[1]
        for parts, _ in symbols:
            i = 0
            while i < len(parts) - 1:
                if parts[i] == best[0] and parts[i + 1] == best[1]:
                    parts[i:i + 2] = [joined]
                i += 1
    return merges


def write_tokenizer(spec: ModernSpec, merges: list[tuple[str, str]], out: Path) -> dict[str, int]:
    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    for token in SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    tok = Tokenizer(BPE(vocab, merges))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tok.add_special_tokens(SPECIAL_TOKENS)
    if spec.bake_padding:
        tok.enable_truncation(max_length=16)
        tok.enable_padding(length=40, pad_id=vocab["[PAD]"], pad_token="[PAD]")
    (out / "tokenizer.json").write_text(tok.to_str(), encoding="utf-8")
    tokenizer_config = {
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": spec.model_max_length,
        "clean_up_tokenization_spaces": True,
        **{name: f"[{name[:-6].upper()}]" for name in ("cls_token", "sep_token", "pad_token", "unk_token", "mask_token")},
    }
    if spec.tokenizer_class:
        tokenizer_config["tokenizer_class"] = spec.tokenizer_class
    write_json(out / "tokenizer_config.json", tokenizer_config)
    return vocab


# ----------------------------------------------------------------------------------------------
# model


def randomize_(model: torch.nn.Module, seed: int) -> None:
    """Re-draw EVERY parameter: linears std 0.2, the classifier std 0.5, norm weights 1 +- 0.2, biases +-0.1;
    token embeddings std 0.02 plus a per-row offset (0.25), so the embedding norm sees a mean ~10x its spread."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            z = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if name.endswith("norm.weight"):
                value = 1.0 + 0.2 * z
            elif name.endswith(".bias"):
                value = 0.1 * z
            elif name.endswith("tok_embeddings.weight"):
                value = 0.02 * z + 0.25 * torch.randn((p.shape[0], 1), generator=g, dtype=torch.float32)
            elif name.startswith("classifier."):
                value = 0.5 * z
            else:
                value = 0.2 * z
            p.copy_(value)
    for name, p in model.named_parameters():
        constant = p.numel() > 1 and bool(torch.all(p == p.flatten()[0]))
        assert not constant and bool(torch.any(p != 0)), f"{name} was not re-randomized"


def write_legacy_config(path: Path, spec: ModernSpec) -> None:
    """Rewrite config.json the way the Hub's ModernBERT checkpoints (transformers 4.48+) have it: the attention
    pattern as global_attn_every_n_layers and the thetas as global_rope_theta / local_rope_theta."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    for key in ("layer_types", "rope_parameters", "dtype"):
        raw.pop(key)
    legacy = ("global_attn_every_n_layers", "global_rope_theta", "local_rope_theta")
    raw.update({key: spec.config[key] for key in legacy}, reference_compile=None, repad_logits_with_grad=False,
               torch_dtype="float32", transformers_version="4.48.0")
    write_json(path, dict(sorted(raw.items())))


def run_model(model, enc: dict):
    captured = {}
    hook = model.head.register_forward_hook(lambda mod, inp, out: captured.__setitem__("pooled", out))
    try:
        with torch.no_grad():
            out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], output_hidden_states=True)
    finally:
        hook.remove()
    return list(out.hidden_states), captured["pooled"], out.logits


def inv_freq_ulps(model, config) -> dict:
    """How far torch's float32 inv_freq is from minibert's (float32 pow, as NumPy rounds it), in ulps."""
    head_dim = config.hidden_size // config.num_attention_heads
    out = {}
    for layer_type in sorted(set(config.layer_types)):
        torch_inv = getattr(model.model.rotary_emb, f"{layer_type}_inv_freq").numpy()
        theta = config.rope_parameters[layer_type]["rope_theta"]
        ours = np.float32(1.0) / np.float32(theta) ** (np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim))
        out[layer_type] = int(np.max(np.abs(torch_inv.view(np.int32) - ours.view(np.int32))))
    return out


def crosscheck_sentence_transformers(out: Path, spec: ModernSpec, max_length: int, logits: np.ndarray) -> str:
    try:
        from sentence_transformers import CrossEncoder
    except ImportError:
        return "sentence-transformers not installed: skipped"
    ce = CrossEncoder(str(out), max_length=max_length, device="cpu")
    scores = ce.predict(spec.pairs, activation_fn=torch.nn.Identity(), batch_size=len(spec.pairs), convert_to_numpy=True)
    diff = float(np.abs(np.asarray(scores, np.float32).reshape(logits.shape) - logits).max())
    assert diff <= ATOL, f"{spec.name}: sentence-transformers CrossEncoder differs from the golden logits by {diff:.3g}"
    return f"{diff:.2e}"


def effective_max_length(spec: ModernSpec, arg: int | None) -> int:
    return arg if arg is not None else min(spec.model_max_length, spec.config["max_position_embeddings"])


def tokenizer_cases(hf_tok, spec: ModernSpec) -> list[dict]:
    cases = []
    for arg in spec.tokenizer_case_lengths:
        m = effective_max_length(spec, arg)
        enc = hf_tok([q for q, _ in spec.pairs], [p for _, p in spec.pairs], truncation="longest_first", max_length=m)
        assert "token_type_ids" not in enc, "model_input_names leaves token_type_ids out"
        cases.append({"max_length_arg": arg, "max_length": m, "input_ids": enc["input_ids"],
                      "token_type_ids": [[0] * len(ids) for ids in enc["input_ids"]]})
    return cases


def make_golden(spec: ModernSpec, merges, out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    vocab = write_tokenizer(spec, merges, out)

    config = ModernBertConfig(
        vocab_size=len(vocab), pad_token_id=vocab["[PAD]"], bos_token_id=vocab["[CLS]"], eos_token_id=vocab["[SEP]"],
        cls_token_id=vocab["[CLS]"], sep_token_id=vocab["[SEP]"], hidden_activation="gelu",
        classifier_activation="gelu", **spec.config)
    torch.manual_seed(spec.seed)
    model = ModernBertForSequenceClassification(config).eval()
    randomize_(model, spec.seed)
    model.save_pretrained(out, safe_serialization=True)
    if spec.legacy_config:
        write_legacy_config(out / "config.json", spec)

    hf_tok = AutoTokenizer.from_pretrained(out)
    eager = ModernBertForSequenceClassification.from_pretrained(out, attn_implementation="eager", dtype=torch.float32).eval()
    sdpa = ModernBertForSequenceClassification.from_pretrained(out, attn_implementation="sdpa", dtype=torch.float32).eval()
    assert eager.config.layer_types == config.layer_types and eager.config.rope_parameters == config.rope_parameters

    max_length = effective_max_length(spec, spec.max_length_arg)
    enc = hf_encode(hf_tok, spec.pairs, max_length)
    assert hf_tok.padding_side == "right", "positions count from 0 at the first token only with right padding"
    hidden, pooled, logits = run_model(eager, enc)
    _, _, logits_sdpa = run_model(sdpa, enc)
    sdpa_diff = float((logits_sdpa - logits).abs().max())
    assert sdpa_diff <= ATOL, f"{spec.name}: sdpa and eager logits differ by {sdpa_diff:.3g}"

    mask = enc["attention_mask"].bool()
    lengths = mask.sum(1)
    assert len(hidden) == config.num_hidden_layers + 1
    with torch.no_grad():
        last = eager.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
    assert torch.equal(hidden[-1], last), "hidden_states[-1] is the last hidden state, after final_norm"

    arrays = {
        "lengths": lengths.numpy().astype(np.int64),
        "input_ids": enc["input_ids"][mask].numpy().astype(np.int64),
        "token_type_ids": np.zeros(int(lengths.sum()), np.int64),
        "embeddings": hidden[0][mask].numpy().astype(np.float32),
    }
    for i in range(config.num_hidden_layers):
        arrays[f"layer_{i}"] = hidden[i + 1][mask].numpy().astype(np.float32)
    arrays["pooled"] = pooled.numpy().astype(np.float32)
    arrays["logits"] = logits.numpy().astype(np.float32)
    for name, arr in arrays.items():
        assert np.all(np.isfinite(arr)), f"{name} has non-finite values"
    write_npz(out / "golden.npz", arrays)
    stages = ["embeddings", *(f"layer_{i}" for i in range(config.num_hidden_layers)), "pooled", "logits"]

    rank_margins = []
    for group in spec.rank_groups:
        s = np.sort(arrays["logits"][group, 0])
        rank_margins.append(float(np.diff(s).min()))
        assert rank_margins[-1] > 100 * ATOL, f"{spec.name}: ranking group {group} has near-tied scores {s}"
    st_check = crosscheck_sentence_transformers(out, spec, max_length, arrays["logits"])

    meta = {
        **provenance(spec, "model"),
        "generator": "tools/goldens_modernbert.py",
        "family": "ModernBERT",
        "attn_implementation": "eager",
        "dtype": "float32",
        "sdpa_vs_eager_max_abs_diff": sdpa_diff,
        "sentence_transformers_vs_golden_max_abs_diff": st_check,
        "inv_freq_max_ulps_torch_vs_minibert": inv_freq_ulps(eager, config),
        "stages": stages,
        "stage_notes": "layer_i is hidden_states[i + 1]; the last layer's is after final_norm, as transformers "
                       "returns it; pooled is the head's output (pooling, dense, GELU, norm)",
        "config": {
            "vocab_size": config.vocab_size,
            "hidden_size": config.hidden_size,
            "num_hidden_layers": config.num_hidden_layers,
            "num_attention_heads": config.num_attention_heads,
            "intermediate_size": config.intermediate_size,
            "max_position_embeddings": config.max_position_embeddings,
            "layer_types": list(config.layer_types),
            "rope_parameters": config.rope_parameters,
            "local_attention": config.local_attention,
            "classifier_pooling": config.classifier_pooling,
            "biases": {k: getattr(config, k) for k in ("norm_bias", "attention_bias", "mlp_bias", "classifier_bias")},
            "norm_eps": config.norm_eps,
            "num_labels": config.num_labels,
            "id2label": {str(k): v for k, v in config.id2label.items()},
            "config_style": "legacy global_attn_every_n_layers/global_rope_theta/local_rope_theta"
                            if spec.legacy_config else "layer_types/rope_parameters",
        },
        "tokenizer": {"kind": "byte-level BPE", "merges": len(merges), "vocab_size": len(vocab),
                      "tokenizer_class": spec.tokenizer_class, "model_max_length": spec.model_max_length,
                      "baked_padding_and_truncation": spec.bake_padding},
        "max_length_arg": spec.max_length_arg,
        "max_length": max_length,
        "tokenization": "tokenizer(queries, passages, padding=True, truncation='longest_first', max_length=max_length)",
        "tolerance": {"atol": ATOL, "rtol": RTOL},
        "arrays": {name: {"shape": list(arr.shape), "dtype": str(arr.dtype)} for name, arr in arrays.items()},
        "pairs": [list(p) for p in spec.pairs],
        "tokens": [hf_tok.convert_ids_to_tokens(ids[m].tolist()) for ids, m in zip(enc["input_ids"], mask)],
        "rank_groups": spec.rank_groups,
        "rank_group_min_margin": rank_margins,
        "tokenizer_cases": tokenizer_cases(hf_tok, spec),
    }
    write_json(out / "golden.json", meta)
    size = sum(p.stat().st_size for p in out.iterdir())
    longer = int((lengths > config.local_attention // 2 * 2 + 1).sum())
    print(f"{spec.name}: B={len(spec.pairs)} N={int(lengths.sum())} lengths {sorted(lengths.tolist())[-3:]} "
          f"max_length={max_length}, {longer} pairs longer than the window, sdpa-eager={sdpa_diff:.1e}, "
          f"sentence-transformers={st_check}, inv_freq ulps {meta['inv_freq_max_ulps_torch_vs_minibert']}, "
          f"{size / 1024:.0f} KiB")


def make_all(out: Path) -> None:
    merges = learn_merges(N_MERGES)
    for spec in SPECS:
        make_golden(spec, merges, out / spec.name)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})")
    parser.add_argument("--check", action="store_true", help="rebuild in a temp dir and compare with --out")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # same reductions every run
    if not args.check:
        make_all(args.out)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        make_all(Path(tmp))
        problems = [f"{spec.name}: {p}" for spec in SPECS
                    for p in compare_dirs(Path(tmp) / spec.name, args.out / spec.name)]
    for p in problems:
        print("MISMATCH", p)
    print("ModernBERT goldens reproduce" if not problems else f"{len(problems)} mismatches")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
