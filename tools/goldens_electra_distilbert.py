"""Write the ELECTRA and DistilBERT golden files, stage by stage, in tools/make_goldens.py's format.

Usage (needs the `golden` extra: torch, transformers, tokenizers; sentence-transformers optional):

    python tools/goldens_electra_distilbert.py            # (re)write tests/fixtures/goldens/{electra,distilbert}-*/
    python tools/goldens_electra_distilbert.py --check    # rebuild in a temp dir, compare with the committed files
    python tools/goldens_electra_distilbert.py --out DIR  # write somewhere else

Four tiny random models, each an ordinary HF model directory plus golden.npz / golden.json
exactly as tools/make_goldens.py writes them (see its docstring), with golden.json's "stages":
embeddings, layer_0 .., pooled, logits. `embeddings` is hidden_states[0], what the first layer
reads (for ELECTRA after embeddings_project); `pooled` is what the last linear reads: ELECTRA's
GELU(classifier.dense(first token)), DistilBERT's ReLU(pre_classifier(first token)).

- electra-e24: embedding_size 24 != hidden_size 36 (so embeddings_project runs), 1 label,
  uncased, tokenizer.json + tokenizer_class "ElectraTokenizer" (as Hub ELECTRA repos name it;
  transformers 5 loads BertTokenizer for it), model_max_length 48 truncates.
- electra-h32: embedding_size == hidden_size 32 (no projection), 3 labels, cased, vocab.txt only,
  no tokenizer_class (AutoTokenizer's choice for model_type electra), layer_norm_eps 1e-7, max_length 40.
- distilbert-gelu: dim 36, 3 heads, gelu, 1 label, uncased, tokenizer.json + tokenizer_class
  "DistilBertTokenizer" (no token type ids), model_max_length 48.
- distilbert-relu-sin: dim 30, 5 heads, relu feed-forward, sinusoidal_pos_embds (the table
  transformers builds, stored in the checkpoint as transformers stores it), 2 labels, cased,
  vocab.txt only, no tokenizer_class (BertTokenizer: token type ids made, never read), max_length 40.

Every parameter is re-drawn from a seeded generator (LayerNorm weights around 1 +- 0.2), except
the sinusoidal position table, which is deterministic already. The vocabularies are make_goldens'
deterministic WordPiece vocabularies; the pairs are its (truncation, unicode, empty passages).
The reference ids come from transformers.AutoTokenizer on the written directory, tokenized as
sentence-transformers' CrossEncoder does; the stages from AutoModelForSequenceClassification,
eager attention, float32 (sdpa checked to agree within 1e-5).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DistilBertConfig, ElectraConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_goldens as mg  # noqa: E402  (the shared helpers: vocab, files, provenance, --check)

SEED = mg.SEED + 100
ATOL = mg.ATOL


@dataclass(frozen=True)
class FamilyGoldenSpec(mg.GoldenSpec):
    family: str = "electra"                     # the transformers config class: "electra" or "distilbert"
    tokenizer_class: str | None = "BertTokenizer"  # written to tokenizer_config.json; None: left out


SPECS = [
    FamilyGoldenSpec(
        name="electra-e24", seed=SEED + 1, lowercase=True, ship_tokenizer_json=True,
        model_max_length=48, max_length_arg=None,
        config=dict(embedding_size=24, hidden_size=36, num_attention_heads=3, intermediate_size=53,
                    num_hidden_layers=2, max_position_embeddings=64, type_vocab_size=2, layer_norm_eps=1e-12,
                    num_labels=1),
        pairs=mg.PAIRS_L1, rank_groups=mg.RANK_GROUPS_L1, tokenizer_case_lengths=[5, 6, 7, 12, 20],
        family="electra", tokenizer_class="ElectraTokenizer",
    ),
    FamilyGoldenSpec(
        name="electra-h32", seed=SEED + 2, lowercase=False, ship_tokenizer_json=False,
        model_max_length=512, max_length_arg=40,
        config=dict(embedding_size=32, hidden_size=32, num_attention_heads=4, intermediate_size=45,
                    num_hidden_layers=3, max_position_embeddings=64, type_vocab_size=2, layer_norm_eps=1e-7,
                    num_labels=3, id2label={0: "contradiction", 1: "entailment", 2: "neutral"},
                    label2id={"contradiction": 0, "entailment": 1, "neutral": 2}),
        pairs=mg.PAIRS_L3, rank_groups=mg.RANK_GROUPS_L3, tokenizer_case_lengths=[None, 9, 17],
        family="electra", tokenizer_class=None,
    ),
    FamilyGoldenSpec(
        name="distilbert-gelu", seed=SEED + 3, lowercase=True, ship_tokenizer_json=True,
        model_max_length=48, max_length_arg=None,
        config=dict(dim=36, n_heads=3, hidden_dim=53, n_layers=2, max_position_embeddings=64,
                    activation="gelu", sinusoidal_pos_embds=False, num_labels=1),
        pairs=mg.PAIRS_L1, rank_groups=mg.RANK_GROUPS_L1, tokenizer_case_lengths=[5, 6, 7, 12, 20],
        family="distilbert", tokenizer_class="DistilBertTokenizer",
    ),
    FamilyGoldenSpec(
        name="distilbert-relu-sin", seed=SEED + 4, lowercase=False, ship_tokenizer_json=False,
        model_max_length=512, max_length_arg=40,
        config=dict(dim=30, n_heads=5, hidden_dim=41, n_layers=3, max_position_embeddings=64,
                    activation="relu", sinusoidal_pos_embds=True, num_labels=2,
                    id2label={0: "irrelevant", 1: "relevant"}, label2id={"irrelevant": 0, "relevant": 1}),
        pairs=mg.PAIRS_L3, rank_groups=mg.RANK_GROUPS_L3, tokenizer_case_lengths=[None, 9, 17],
        family="distilbert", tokenizer_class=None,
    ),
]

CONFIG_CLASSES = {"electra": ElectraConfig, "distilbert": DistilBertConfig}


# ----------------------------------------------------------------------------------------------
# model


def randomize_(model: torch.nn.Module, seed: int, keep: tuple[str, ...] = ()) -> None:
    """Re-draw every parameter (but those named in `keep`) from a seeded generator, by module kind.

    As make_goldens.randomize_, whose scales and reasons hold here, but found by module type, not
    by BERT's names (DistilBERT's norms are sa_layer_norm / output_layer_norm): LayerNorm weight
    1 + 0.2 z and bias 0.1 z; embeddings 0.02 z, word rows with their own offset (std 0.25, [PAD]
    row included); linear weights 0.2 z (the layer that makes the logits 0.5 z), biases 0.1 z.
    """
    g = torch.Generator().manual_seed(seed)
    last = last_linear(model)
    with torch.no_grad():
        for module_name, module in model.named_modules():
            for name, p in module.named_parameters(recurse=False):
                full = f"{module_name}.{name}"
                if full in keep:
                    continue
                z = torch.randn(p.shape, generator=g, dtype=torch.float32)
                if isinstance(module, torch.nn.LayerNorm):
                    value = 1.0 + 0.2 * z if name == "weight" else 0.1 * z
                elif isinstance(module, torch.nn.Embedding):
                    value = 0.02 * z
                    if module_name.endswith("word_embeddings"):
                        value = value + 0.25 * torch.randn((p.shape[0], 1), generator=g, dtype=torch.float32)
                elif isinstance(module, torch.nn.Linear):
                    value = 0.1 * z if name == "bias" else (0.5 if module is last else 0.2) * z
                else:
                    raise AssertionError(f"{full}: a parameter of an unexpected module {type(module).__name__}")
                p.copy_(value)
    for name, p in model.named_parameters():
        constant = p.numel() > 1 and bool(torch.all(p == p.flatten()[0]))
        assert name in keep or (not constant and bool(torch.any(p != 0))), f"{name} was not re-randomized"
    word = model.base_model.embeddings.word_embeddings.weight
    assert word[0].abs().sum() > 0, "the [PAD] row of the word embeddings is still zero"


def last_linear(model):
    """The linear layer that makes the logits: its input is the `pooled` stage."""
    return model.classifier.out_proj if hasattr(model.classifier, "out_proj") else model.classifier


def run_model(model, enc: dict):
    captured = {}
    hook = last_linear(model).register_forward_pre_hook(lambda mod, inp: captured.__setitem__("pooled", inp[0]))
    try:
        with torch.no_grad():
            out = model(**enc, output_hidden_states=True)  # what the tokenizer made, as CrossEncoder passes it
    finally:
        hook.remove()
    return list(out.hidden_states), captured["pooled"], out.logits


def check_first_stage(model, enc: dict, hidden0: torch.Tensor) -> None:
    """hidden_states[0] is what the first layer reads (after embeddings_project where there is one)."""
    captured = {}
    first_layer = (model.electra.encoder.layer[0] if hasattr(model, "electra") else model.distilbert.transformer.layer[0])
    hook = first_layer.register_forward_pre_hook(lambda mod, inp: captured.__setitem__("x", inp[0]))
    try:
        with torch.no_grad():
            model(**enc)
    finally:
        hook.remove()
    assert torch.equal(captured["x"], hidden0), "hidden_states[0] is not the first layer's input"


# ----------------------------------------------------------------------------------------------
# files


def write_tokenizer(spec: FamilyGoldenSpec, vocab: list[str], out: Path) -> None:
    """make_goldens' tokenizer files, with this spec's tokenizer_class (or none)."""
    mg.write_tokenizer(spec, vocab, out)
    path = out / "tokenizer_config.json"
    tc = json.loads(path.read_text(encoding="utf-8"))
    tc.pop("tokenizer_class")
    if spec.tokenizer_class is not None:
        tc["tokenizer_class"] = spec.tokenizer_class
    mg.write_json(path, tc)


def type_ids(enc, key="token_type_ids"):
    """The tokenizer's token type ids, or zeros where its class makes none (what the model then sees)."""
    if key in enc:
        return enc[key]
    ids = enc["input_ids"]
    return torch.zeros_like(ids) if isinstance(ids, torch.Tensor) else [[0] * len(row) for row in ids]


def tokenizer_cases(hf_tok, spec: FamilyGoldenSpec) -> list[dict]:
    cases = []
    for arg in spec.tokenizer_case_lengths:
        m = mg.effective_max_length(spec, arg)
        enc = hf_tok([q for q, _ in spec.pairs], [p for _, p in spec.pairs], truncation="longest_first", max_length=m)
        cases.append({"max_length_arg": arg, "max_length": m, "input_ids": enc["input_ids"],
                      "token_type_ids": type_ids(enc)})
    return cases


def make_golden(spec: FamilyGoldenSpec, out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    vocab = mg.build_vocab(spec.lowercase)
    write_tokenizer(spec, vocab, out)

    config = CONFIG_CLASSES[spec.family](vocab_size=len(vocab), pad_token_id=0, **spec.config)
    torch.manual_seed(spec.seed)  # construction draws from the global RNG; everything is re-drawn below
    model = AutoModelForSequenceClassification.from_config(config).eval()
    keep = ()
    if getattr(config, "sinusoidal_pos_embds", False):
        keep = ("distilbert.embeddings.position_embeddings.weight",)  # transformers' sinusoidal table, as built
    randomize_(model, spec.seed, keep)
    model.save_pretrained(out, safe_serialization=True)

    # Everything below is read back from disk, as minibert will read it.
    hf_tok = AutoTokenizer.from_pretrained(out)
    load = dict(dtype=torch.float32)
    eager = AutoModelForSequenceClassification.from_pretrained(out, attn_implementation="eager", **load).eval()
    sdpa = AutoModelForSequenceClassification.from_pretrained(out, attn_implementation="sdpa", **load).eval()
    assert not eager.training and eager.dtype == torch.float32
    assert type(eager).__name__ == {"electra": "ElectraForSequenceClassification",
                                    "distilbert": "DistilBertForSequenceClassification"}[spec.family]

    max_length = mg.effective_max_length(spec, spec.max_length_arg)
    enc = mg.hf_encode(hf_tok, spec.pairs, max_length)
    hidden, pooled, logits = run_model(eager, enc)
    _, _, logits_sdpa = run_model(sdpa, enc)
    sdpa_diff = float((logits_sdpa - logits).abs().max())
    assert sdpa_diff <= ATOL, f"{spec.name}: sdpa and eager logits differ by {sdpa_diff:.3g}"
    check_first_stage(eager, enc, hidden[0])

    mask = enc["attention_mask"].bool()  # [B, T]
    lengths = mask.sum(1)
    B, T = mask.shape
    L = config.num_hidden_layers
    assert T == int(lengths.max()) <= max_length
    assert len(hidden) == L + 1

    arrays = {
        "lengths": lengths.numpy().astype(np.int64),
        "input_ids": enc["input_ids"][mask].numpy().astype(np.int64),
        "token_type_ids": type_ids(enc)[mask].numpy().astype(np.int64),
        "embeddings": hidden[0][mask].numpy().astype(np.float32),
    }
    for i in range(L):
        arrays[f"layer_{i}"] = hidden[i + 1][mask].numpy().astype(np.float32)
    arrays["pooled"] = pooled.numpy().astype(np.float32)
    arrays["logits"] = logits.numpy().astype(np.float32)
    stages = ["embeddings", *(f"layer_{i}" for i in range(L)), "pooled", "logits"]
    for name, arr in arrays.items():
        assert arr.dtype in (np.int64, np.float32), (name, arr.dtype)
        assert np.all(np.isfinite(arr)), f"{name} has non-finite values"
    mg.write_npz(out / "golden.npz", arrays)

    tokens = [hf_tok.convert_ids_to_tokens(ids[m].tolist()) for ids, m in zip(enc["input_ids"], mask)]
    rank_margins = []
    for group in spec.rank_groups:
        s = np.sort(arrays["logits"][group, 0])
        rank_margins.append(float(np.diff(s).min()))
        assert rank_margins[-1] > 100 * ATOL, f"{spec.name}: ranking group {group} has near-tied scores {s}"
    st_check = mg.crosscheck_sentence_transformers(out, spec, max_length, arrays["logits"])

    meta = {
        **mg.provenance(spec, "model"),
        "generator": "tools/goldens_electra_distilbert.py",
        "family": spec.family,
        "model_class": type(eager).__name__,
        "tokenizer_class_loaded": type(hf_tok).__name__,
        "attn_implementation": "eager",
        "dtype": "float32",
        "sdpa_vs_eager_max_abs_diff": sdpa_diff,
        "sentence_transformers_vs_golden_max_abs_diff": st_check,
        "stages": stages,
        "config": {
            "model_type": config.model_type,
            "vocab_size": config.vocab_size,
            "hidden_size": config.hidden_size,
            "num_hidden_layers": config.num_hidden_layers,
            "num_labels": config.num_labels,
            **{k: v for k, v in spec.config.items() if k not in ("num_labels", "id2label", "label2id")},
            "id2label": {str(k): v for k, v in config.id2label.items()},
        },
        "tokenizer": {**mg.tokenizer_summary(spec, out), "tokenizer_class": spec.tokenizer_class},
        "max_length_arg": spec.max_length_arg,
        "max_length": max_length,
        "tokenization": "tokenizer(queries, passages, padding=True, truncation='longest_first', max_length=max_length)",
        "tolerance": {"atol": ATOL, "rtol": mg.RTOL},
        "arrays": {name: {"shape": list(arr.shape), "dtype": str(arr.dtype)} for name, arr in arrays.items()},
        "pairs": [list(p) for p in spec.pairs],
        "tokens": tokens,
        "rank_groups": spec.rank_groups,
        "rank_group_min_margin": rank_margins,
        "tokenizer_cases": tokenizer_cases(hf_tok, spec),
    }
    mg.write_json(out / "golden.json", meta)

    size = sum(p.stat().st_size for p in out.iterdir())
    truncated = int((lengths == max_length).sum())
    print(f"{spec.name}: {type(eager).__name__} + {type(hf_tok).__name__}, B={B} T={T} N={int(lengths.sum())} "
          f"max_length={max_length} ({truncated} pairs at the limit), H={config.hidden_size} L={L} "
          f"labels={config.num_labels}, sdpa-eager={sdpa_diff:.1e}, sentence-transformers={st_check}, "
          f"{size / 1024:.0f} KiB")
    stds = "  ".join(f"{k}={arrays[k].std():.2f}" for k in stages)
    print(f"    std: {stds}")
    print(f"    logits[:4]: {np.array2string(arrays['logits'][:4].ravel(), precision=4)}")


def make_all(out: Path) -> None:
    for spec in SPECS:
        make_golden(spec, out / spec.name)


def main(argv: list[str] | None = None) -> int:
    """make_goldens' command line, but --check compares only these models' directories."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=mg.DEFAULT_OUT, help=f"output directory (default {mg.DEFAULT_OUT})")
    parser.add_argument("--check", action="store_true", help="rebuild in a temp dir and compare with --out")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # same reductions every run
    if not args.check:
        make_all(args.out)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        make_all(Path(tmp))
        problems = [f"{spec.name}/{p}" for spec in SPECS
                    for p in mg.compare_dirs(Path(tmp) / spec.name, args.out / spec.name)]
    for p in problems:
        print("MISMATCH", p)
    print("ELECTRA/DistilBERT goldens reproduce" if not problems else f"{len(problems)} mismatches")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
