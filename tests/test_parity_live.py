"""Live parity on the real all-MiniLM-L6-v2: minibert and transformers score the same pairs.

The checkpoint is a bare BERT encoder; a cross-encoder needs a classifier, so one is put on it
from a fixed torch seed (std 0.5, so that scores spread by several units and rankings mean
something), saved with save_pretrained next to the real tokenizer files, and read by both sides.
transformers tokenizes as sentence-transformers' CrossEncoder does (padding=True,
truncation='longest_first', max_length=512); minibert goes from text to scores on its own.
Numbers first (max |diff| <= 1e-4), then decisions (the same ranking for every query).

Needs torch + transformers (skipped without them) and the weights: run
`python tools/get_minilm.py` first. A missing checkpoint FAILS this test; it does not skip.
"""

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from pydoc_data.topics import topics  # noqa: E402  (English text that ships with CPython)

from op_sets import OP_SETS

from minibert import CrossEncoder  # noqa: E402

# Some of the real pairs are longer than 512 tokens on purpose: their truncation is expected here.
pytestmark = pytest.mark.filterwarnings("ignore::minibert.TruncationWarning")

REPO = Path(__file__).resolve().parent.parent
WEIGHTS = REPO / "weights" / "all-MiniLM-L6-v2"
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"]
MAX_LENGTH = 512
MAX_ABS_DIFF = 1e-4
CLASSIFIER_SEED = 1234
CLASSIFIER_STD = 0.5
BATCH = 16



QUERIES = [
    "How do I handle an exception raised in a block of code?",
    "What does the with statement do with a context manager?",
    "How is a function defined, and when are default parameter values evaluated?",
    "How do I iterate over the items of a list?",
    "How does Python find and load a module when importing it?",
    "How do I define a class and its base classes?",
    "What are generators and how does yield work?",
    "How do format strings specify field width and precision?",
]
# (pydoc topic, characters of its body): five short passages, three over 128 tokens, one cut at 512.
PASSAGES = [
    ("try", 250), ("with", 250), ("function", 300), ("for", 250), ("import", 300),
    ("class", 800), ("yield", 800), ("exceptions", 900), ("formatstrings", 4000),
]


def topic_body(name: str, n_chars: int) -> str:
    """The start of a pydoc topic's text, title and underline dropped, whitespace collapsed."""
    _, _, body = topics[name].split("\n", 2)
    return " ".join(body.split())[:n_chars]


def make_pairs() -> list[tuple[str, str]]:
    passages = [topic_body(name, n) for name, n in PASSAGES]
    return [(q, p) for q in QUERIES for p in passages]


@dataclasses.dataclass(frozen=True)
class Reference:
    model_dir: Path
    pairs: list
    scores: np.ndarray  # [n] float32, transformers' logits
    token_ids: list     # per pair, unpadded: transformers' input_ids
    type_ids: list


@pytest.fixture(scope="session")
def reference(tmp_path_factory) -> Reference:
    if not ((WEIGHTS / "config.json").is_file() and (WEIGHTS / "model.safetensors").is_file()):
        pytest.fail(f"{WEIGHTS} has no all-MiniLM-L6-v2 checkpoint: run `python tools/get_minilm.py` first")
    model_dir = tmp_path_factory.mktemp("minilm-cross-encoder")

    model = transformers.BertForSequenceClassification.from_pretrained(
        WEIGHTS, num_labels=1, attn_implementation="eager", dtype=torch.float32)
    g = torch.Generator().manual_seed(CLASSIFIER_SEED)
    with torch.no_grad():  # from_pretrained drew the missing classifier from the global RNG: redraw
        model.classifier.weight.copy_(CLASSIFIER_STD * torch.randn(model.classifier.weight.shape, generator=g))
        model.classifier.bias.zero_()
    model.save_pretrained(model_dir, safe_serialization=True)
    for name in TOKENIZER_FILES:
        shutil.copy(WEIGHTS / name, model_dir / name)

    model = transformers.BertForSequenceClassification.from_pretrained(
        model_dir, attn_implementation="eager", dtype=torch.float32).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    pairs = make_pairs()
    unpadded = tokenizer([q for q, _ in pairs], [p for _, p in pairs], truncation="longest_first", max_length=MAX_LENGTH)
    lengths = [len(ids) for ids in unpadded["input_ids"]]
    assert sum(n == MAX_LENGTH for n in lengths) >= len(QUERIES), f"too few pairs cut at {MAX_LENGTH}: {lengths}"
    assert sum(n > 128 for n in lengths) >= 4 * len(QUERIES), f"too few pairs over 128 tokens: {lengths}"

    # Batches of similar length (as CrossEncoder.predict sorts them), padded within each batch.
    scores = np.empty(len(pairs), dtype=np.float32)
    order = sorted(range(len(pairs)), key=lambda i: lengths[i])
    with torch.no_grad():
        for start in range(0, len(order), BATCH):
            rows = order[start:start + BATCH]
            enc = tokenizer([pairs[i][0] for i in rows], [pairs[i][1] for i in rows], padding=True,
                            truncation="longest_first", max_length=MAX_LENGTH, return_tensors="pt")
            scores[rows] = model(**enc).logits[:, 0].numpy()

    per_query = scores.reshape(len(QUERIES), len(PASSAGES))
    gaps = np.diff(np.sort(per_query, axis=1), axis=1)
    assert gaps.min() > 10 * MAX_ABS_DIFF, (
        f"transformers' scores are nearly tied (gap {gaps.min():.2e}): rankings would be noise; change CLASSIFIER_SEED")
    print(f"\ntransformers scores: {len(pairs)} pairs, token lengths {min(lengths)}..{max(lengths)}, "
          f"scores {scores.min():.2f}..{scores.max():.2f}")
    return Reference(model_dir, pairs, scores, unpadded["input_ids"], unpadded["token_type_ids"])


def test_live_token_ids(reference):
    """The real tokenizer.json pads to 128 and truncates at 128: minibert must not inherit that."""
    ce = CrossEncoder(reference.model_dir, ops="numpy")
    assert ce.max_length == MAX_LENGTH
    encoded = ce.tokenizer.encode_pairs(reference.pairs)
    bad = [i for i, ((ids, types), w_ids, w_types) in enumerate(zip(encoded, reference.token_ids, reference.type_ids))
           if ids.tolist() != list(w_ids) or types.tolist() != list(w_types)]
    assert not bad, (
        f"token ids differ from transformers for {len(bad)} of {len(reference.pairs)} pairs, first pair {bad[0]}: "
        f"{len(encoded[bad[0]][0])} tokens vs {len(reference.token_ids[bad[0]])}, text {reference.pairs[bad[0]][0]!r}")


@pytest.mark.parametrize("op_set", OP_SETS)
def test_live_parity(reference, op_set):
    ce = CrossEncoder(reference.model_dir, ops=op_set)
    scores = ce.predict(reference.pairs, batch_size=BATCH)
    assert scores.dtype == np.float32 and scores.shape == reference.scores.shape

    # Numbers first ...
    diff = np.abs(scores.astype(np.float64) - reference.scores.astype(np.float64))
    worst = int(np.argmax(diff))
    line = (f"all-MiniLM-L6-v2 + seeded classifier [{op_set}]: max |minibert - transformers| = {diff.max():.3e} "
            f"over {len(scores)} pairs (at pair {worst}: {scores[worst]:.6f} vs {reference.scores[worst]:.6f}; "
            f"query {reference.pairs[worst][0]!r})")
    print("\n" + line)
    assert diff.max() <= MAX_ABS_DIFF, line

    # ... then decisions: each query ranks the passages in the same order.
    got = np.argsort(-scores.reshape(len(QUERIES), -1), axis=1, kind="stable")
    want = np.argsort(-reference.scores.reshape(len(QUERIES), -1), axis=1, kind="stable")
    for q, (g, w) in enumerate(zip(got, want)):
        assert g.tolist() == w.tolist(), f"[{op_set}] query {q} {QUERIES[q]!r}: ranking {g.tolist()}, transformers {w.tolist()}"


def test_live_rank(reference):
    """CrossEncoder.rank on one query: transformers' order, best first."""
    ce = CrossEncoder(reference.model_dir)
    n = len(PASSAGES)
    query, passages = QUERIES[0], [p for _, p in reference.pairs[:n]]
    hits = ce.rank(query, passages)
    want = np.argsort(-reference.scores[:n], kind="stable").tolist()
    assert [h["corpus_id"] for h in hits] == want
    assert max(abs(h["score"] - float(reference.scores[h["corpus_id"]])) for h in hits) <= MAX_ABS_DIFF
