"""What the live parity tests of the BERT-like families share (ELECTRA, DistilBERT): a WordPiece
vocabulary trained on CPython's own docs, real text pairs, re-randomized transformers models,
and transformers' scores for them, tokenized as sentence-transformers' CrossEncoder tokenizes.

Needs torch + transformers + tokenizers; the test modules importorskip torch and transformers first.
"""

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import transformers
from pydoc_data.topics import topics
from tokenizers import BertWordPieceTokenizer

ATOL = RTOL = 1e-5
QUERIES = [
    "How do I handle an exception raised in a block of code?",
    "What does the with statement do with a context manager?",
    "How is a function defined, and when are default parameter values evaluated?",
    "How does Python find and load a module when importing it?",
    "Café, naïve façade: 日本語 and emoji 🐍?",
]
# (pydoc topic, characters of its body): short passages, and some cut at max_length
PASSAGES = [("try", 250), ("with", 400), ("function", 300), ("import", 2000), ("class", 800), ("for", 120)]
EXTRA_PASSAGES = ["", "Über die Straße: crème brûlée, 東京, 👍🏽 done"]


def topic_body(name: str, n_chars: int) -> str:
    _, _, body = topics[name].split("\n", 2)
    return " ".join(body.split())[:n_chars]


def make_pairs() -> list[tuple[str, str]]:
    passages = [topic_body(name, n) for name, n in PASSAGES] + EXTRA_PASSAGES
    return [(q, p) for q in QUERIES for p in passages]


@lru_cache(maxsize=None)
def _trained(lowercase: bool, vocab_size: int) -> BertWordPieceTokenizer:
    tok = BertWordPieceTokenizer(lowercase=lowercase, strip_accents=None if lowercase else False)
    tok.train_from_iterator([topics[k] for k in sorted(topics)], vocab_size=vocab_size, show_progress=False,
                            special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    return tok


def write_tokenizer(directory: Path, tokenizer_class: str | None, lowercase: bool = True,
                    model_max_length: int = 128, vocab_size: int = 1500) -> int:
    """vocab.txt + tokenizer.json (a WordPiece trained on pydoc's topics, once per session) +
    tokenizer_config.json; returns the vocabulary's size."""
    directory.mkdir(parents=True, exist_ok=True)
    tok = _trained(lowercase, vocab_size)
    tok.save_model(str(directory))
    tok.save(str(directory / "tokenizer.json"))
    config = {"do_lower_case": lowercase, "model_max_length": model_max_length}
    if tokenizer_class is not None:
        config["tokenizer_class"] = tokenizer_class
    (directory / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return tok.get_vocab_size()


def randomize_(model: torch.nn.Module, seed: int, keep: tuple[str, ...] = ()) -> None:
    """Re-draw every parameter but those in `keep`, by module kind (LayerNorm around 1 +- 0.2)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module_name, module in model.named_modules():
            for name, p in module.named_parameters(recurse=False):
                if f"{module_name}.{name}" in keep:
                    continue
                z = torch.randn(p.shape, generator=g, dtype=torch.float32)
                if isinstance(module, torch.nn.LayerNorm):
                    p.copy_(1.0 + 0.2 * z if name == "weight" else 0.1 * z)
                elif isinstance(module, torch.nn.Embedding):
                    p.copy_(0.5 * z)
                else:
                    p.copy_(0.1 * z if name == "bias" else 0.2 * z)


def transformers_scores(model_dir: Path, pairs, max_length: int, batch: int = 8):
    """(logits [n, L], unpadded ids, unpadded type ids) from AutoModelForSequenceClassification + AutoTokenizer."""
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        model_dir, attn_implementation="eager", dtype=torch.float32).eval()
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    unpadded = tok([q for q, _ in pairs], [p for _, p in pairs], truncation="longest_first", max_length=max_length)
    types = unpadded.get("token_type_ids", [[0] * len(ids) for ids in unpadded["input_ids"]])
    logits = []
    with torch.no_grad():
        for start in range(0, len(pairs), batch):
            rows = pairs[start:start + batch]
            enc = tok([q for q, _ in rows], [p for _, p in rows], padding=True, truncation="longest_first",
                      max_length=max_length, return_tensors="pt")
            logits.append(model(**enc).logits.numpy())
    return np.concatenate(logits).astype(np.float32), unpadded["input_ids"], types


def assert_close(got: np.ndarray, want: np.ndarray, what: str):
    assert got.shape == want.shape and got.dtype == np.float32, (got.shape, got.dtype, want.shape)
    diff = np.abs(got.astype(np.float64) - want)
    excess = diff - (ATOL + RTOL * np.abs(want))
    worst = np.unravel_index(int(np.argmax(excess)), diff.shape)
    line = (f"{what}: max |minibert - transformers| {diff.max():.2e}, max rel "
            f"{(diff / np.maximum(np.abs(want), 1e-3)).max():.2e} (at {worst}: {got[worst]:.7g} vs {want[worst]:.7g})")
    print(line)
    assert excess.max() <= 0, line


def assert_same_rankings(got: np.ndarray, want: np.ndarray, groups: int, what: str):
    """Per query (rows of `groups` equal parts): the same order of passages, best first."""
    g = np.argsort(-got.reshape(groups, -1), axis=1, kind="stable")
    w = np.argsort(-want.reshape(groups, -1), axis=1, kind="stable")
    gaps = np.diff(np.sort(want.reshape(groups, -1), axis=1), axis=1)
    assert gaps.min() > 10 * (ATOL + RTOL * np.abs(want).max()), f"{what}: transformers' scores nearly tie"
    assert (g == w).all(), f"{what}: rankings {g.tolist()}, transformers {w.tolist()}"
