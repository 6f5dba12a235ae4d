"""Live parity for DistilBERT: fresh tiny random DistilBertForSequenceClassification models, written
by transformers' save_pretrained, scored by minibert and by transformers on real text pairs.

Two models: GELU feed-forward with DistilBertTokenizer (no token type ids), and ReLU feed-forward
with sinusoidal_pos_embds and no tokenizer_class (AutoTokenizer's BertTokenizer, whose token type
ids the model never reads). Numbers first (logits within 1e-5 + 1e-5 relative), then decisions.
Then: the stored sinusoidal table is the one used (transformers loads it, minibert reads it);
texts longer than the long-text fast path's cut keep transformers' ids; SentenceEncoder on a bare
DistilBertModel against sentence-transformers.
"""

import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from family_parity import (  # noqa: E402
    QUERIES,
    assert_close,
    assert_same_rankings,
    make_pairs,
    randomize_,
    topic_body,
    transformers_scores,
    write_tokenizer,
)
from op_sets import OP_SETS  # noqa: E402

from minibert import CrossEncoder, SentenceEncoder  # noqa: E402

MAX_LENGTH = 128
SIN_TABLE = "distilbert.embeddings.position_embeddings.weight"
MODELS = {
    "gelu": (dict(dim=40, n_heads=5, hidden_dim=61, n_layers=3, activation="gelu"), "DistilBertTokenizer"),
    "relu-sin": (dict(dim=36, n_heads=4, hidden_dim=50, n_layers=2, activation="relu", sinusoidal_pos_embds=True),
                 None),
}


def build(directory, name):
    sizes, tokenizer_class = MODELS[name]
    vocab_size = write_tokenizer(directory, tokenizer_class, model_max_length=MAX_LENGTH)
    config = transformers.DistilBertConfig(vocab_size=vocab_size, max_position_embeddings=MAX_LENGTH, num_labels=1,
                                           **sizes)
    torch.manual_seed(0)
    model = transformers.DistilBertForSequenceClassification(config).eval()
    sinusoidal = config.sinusoidal_pos_embds
    # The sinusoidal table stays as transformers built it; everything else is re-drawn.
    randomize_(model, seed=sum(map(ord, name)), keep=(SIN_TABLE,) if sinusoidal else ())
    model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """name -> (name, model dir, pairs, transformers' logits, ids, type ids); each model built once."""
    built = {}

    def get(name):
        if name not in built:
            directory = build(tmp_path_factory.mktemp(f"distilbert-{name}"), name)
            pairs = make_pairs()
            logits, ids, types = transformers_scores(directory, pairs, MAX_LENGTH)
            assert sum(len(i) == MAX_LENGTH for i in ids) >= len(QUERIES), "no pair was truncated"
            built[name] = name, directory, pairs, logits, ids, types
        return built[name]

    return get


@pytest.fixture(params=sorted(MODELS))
def distilbert(request, references):
    return references(request.param)


def _mismatches(encoded, ids, types):
    return [i for i, (got, want_ids, want_types) in enumerate(zip(encoded, ids, types))
            if got[0].tolist() != list(want_ids) or got[1].tolist() != list(want_types)]


def test_distilbert_token_ids(distilbert):
    name, directory, pairs, _, ids, types = distilbert
    encoded = CrossEncoder(directory, ops="numpy").tokenizer.encode_pairs(pairs)
    assert not _mismatches(encoded, ids, types), f"distilbert {name}: token ids differ from transformers'"
    # DistilBertTokenizer makes no token type ids; BertTokenizer does (the model reads neither).
    assert any(1 in t for t in types) == (MODELS[name][1] is None)


@pytest.mark.parametrize("op_set", OP_SETS)
def test_distilbert_parity(distilbert, op_set):
    name, directory, pairs, logits, _, _ = distilbert
    ce = CrossEncoder(directory, ops=op_set)
    scores = ce.predict(pairs, batch_size=7)
    assert_close(scores, logits[:, 0], f"distilbert {name} [{op_set}]")
    assert_same_rankings(scores, logits[:, 0], len(QUERIES), f"distilbert {name} [{op_set}]")


def test_distilbert_stored_sinusoidal_table_is_used(references, tmp_path):
    """transformers 5 loads the checkpoint's position table even with sinusoidal_pos_embds: so does minibert."""
    from safetensors.torch import load_file, save_file

    _, directory, pairs, logits, _, _ = references("relu-sin")
    changed = tmp_path / "changed"
    shutil.copytree(directory, changed)
    tensors = load_file(str(changed / "model.safetensors"))
    g = torch.Generator().manual_seed(5)
    tensors[SIN_TABLE] = tensors[SIN_TABLE] + 0.5 * torch.randn(tensors[SIN_TABLE].shape, generator=g)
    save_file(tensors, str(changed / "model.safetensors"), metadata={"format": "pt"})
    want, _, _ = transformers_scores(changed, pairs, MAX_LENGTH)
    assert np.abs(want - logits).max() > 1e-2, "perturbing the stored table did not change transformers' scores"
    scores = CrossEncoder(changed).predict(pairs)
    assert_close(scores, want[:, 0], "distilbert with a perturbed stored sinusoidal table")


def test_distilbert_long_texts_keep_transformers_ids(distilbert):
    """Sides longer than max_length * 101 characters go through the long-text fast path: the same ids."""
    name, directory, _, _, _, _ = distilbert
    long_text = " ".join(topic_body(t, 4_000) for t in ("formatstrings", "exceptions", "import", "class"))
    other = " ".join(topic_body(t, 4_000) for t in ("function", "for", "with", "try", "lambda"))
    assert min(len(long_text), len(other)) > MAX_LENGTH * 101  # just over: transformers is slow on long pairs
    pairs = [("short query", long_text), (long_text, "short passage"), (long_text, other), (long_text[:5000], other)]
    tok = transformers.AutoTokenizer.from_pretrained(directory)
    want = tok([q for q, _ in pairs], [p for _, p in pairs], truncation="longest_first", max_length=MAX_LENGTH)
    types = want.get("token_type_ids", [[0] * len(i) for i in want["input_ids"]])
    encoded = CrossEncoder(directory).tokenizer.encode_pairs(pairs)
    assert not _mismatches(encoded, want["input_ids"], types), name


def test_distilbert_sentence_encoder(distilbert, tmp_path):
    st = pytest.importorskip("sentence_transformers")
    name, directory, pairs, _, _, _ = distilbert
    transformers.DistilBertModel.from_pretrained(directory).save_pretrained(tmp_path)  # bare: no prefix
    for f in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        (tmp_path / f).write_bytes((directory / f).read_bytes())
    texts = [q for q, _ in pairs[::8]] + [p for _, p in pairs[:8]]
    want = st.SentenceTransformer(str(tmp_path), device="cpu").encode(texts, convert_to_numpy=True)
    got = SentenceEncoder(tmp_path).encode(texts)
    assert_close(got, want.astype(np.float32), f"distilbert {name} SentenceEncoder (mean pooling)")
