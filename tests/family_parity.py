"""What the live parity tests of the BERT-like families share (ELECTRA, DistilBERT): a WordPiece
vocabulary trained on CPython's own docs, real text pairs, re-randomized transformers models,
and transformers' scores for them, tokenized as sentence-transformers' CrossEncoder tokenizes.

Needs torch + transformers + tokenizers; the test modules importorskip torch and transformers first.
"""

import json
from collections import Counter
from functools import cache
from pathlib import Path
from pydoc_data.topics import topics

import numpy as np
import torch
import transformers
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


@cache
def _trained(lowercase: bool, vocab_size: int) -> BertWordPieceTokenizer:
    """A WordPiece vocabulary from pydoc's topics, the same in every process (tokenizers' own
    WordPiece trainer breaks ties between equally frequent merges differently from run to run, and
    a different vocabulary is a different model): the special tokens, every character seen (whole
    and as a ##continuation), then the most frequent words, ties broken alphabetically."""
    tok = BertWordPieceTokenizer(lowercase=lowercase, strip_accents=None if lowercase else False)
    counts: Counter[str] = Counter()
    for key in sorted(topics):
        text = tok.normalizer.normalize_str(topics[key])
        counts.update(word for word, _ in tok.pre_tokenizer.pre_tokenize_str(text))
    chars = sorted({c for word in counts for c in word})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars + ["##" + c for c in chars]
    seen = set(vocab)
    for word, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(vocab) >= vocab_size:
            break
        if word not in seen:
            vocab.append(word)
            seen.add(word)
    return BertWordPieceTokenizer({t: i for i, t in enumerate(vocab)}, lowercase=lowercase,
                                  strip_accents=None if lowercase else False)


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
    """Per query (rows of `groups` equal parts): every two passages whose transformers scores are
    further apart than the tolerance allows in total are in the same order. Random weights put two
    scores within the tolerance now and then; such near ties are left out, and most pairs must be
    clear of them so that the check compares something."""
    tol = ATOL + RTOL * np.abs(want).max()
    g = got.reshape(groups, -1).astype(np.float64)
    w = want.reshape(groups, -1).astype(np.float64)
    dw = w[:, :, None] - w[:, None, :]
    dg = g[:, :, None] - g[:, None, :]
    clear = np.abs(dw) > 2 * tol
    off_diagonal = ~np.eye(g.shape[1], dtype=bool)[None]
    assert clear.sum() >= 0.9 * off_diagonal.sum() * groups, f"{what}: too many of transformers' scores tie"
    wrong = np.argwhere(clear & (np.sign(dg) != np.sign(dw)))
    assert not len(wrong), f"{what}: (query, passage, passage) ordered unlike transformers: {wrong[:5].tolist()}"
