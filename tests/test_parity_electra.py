"""Live parity for ELECTRA: fresh tiny random ElectraForSequenceClassification models, written by
transformers' save_pretrained, scored by minibert and by transformers on real text pairs.

Two shapes: embedding_size != hidden_size (embeddings_project runs) and embedding_size ==
hidden_size (no projection). Numbers first (logits within 1e-5 + 1e-5 relative), then decisions
(the same ranking for every query). Then SentenceEncoder on a bare ElectraModel (a directory
without modules.json: mean pooling) against sentence-transformers.
"""


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
    transformers_scores,
    write_tokenizer,
)
from op_sets import OP_SETS  # noqa: E402

from minibert import CrossEncoder, SentenceEncoder  # noqa: E402

MAX_LENGTH = 128
SHAPES = {
    "e24-h40": dict(embedding_size=24, hidden_size=40, num_attention_heads=5, intermediate_size=61, num_hidden_layers=3),
    "e32-h32": dict(embedding_size=32, hidden_size=32, num_attention_heads=4, intermediate_size=50, num_hidden_layers=2),
}


@pytest.fixture(scope="module", params=sorted(SHAPES))
def electra(request, tmp_path_factory):
    directory = tmp_path_factory.mktemp(f"electra-{request.param}")
    vocab_size = write_tokenizer(directory, "ElectraTokenizer", model_max_length=MAX_LENGTH)
    config = transformers.ElectraConfig(vocab_size=vocab_size, max_position_embeddings=MAX_LENGTH, num_labels=1,
                                        layer_norm_eps=1e-12, **SHAPES[request.param])
    torch.manual_seed(0)
    model = transformers.ElectraForSequenceClassification(config).eval()
    randomize_(model, seed=sum(map(ord, request.param)))
    assert hasattr(model.electra, "embeddings_project") == (config.embedding_size != config.hidden_size)
    model.save_pretrained(directory)
    pairs = make_pairs()
    logits, ids, types = transformers_scores(directory, pairs, MAX_LENGTH)
    assert sum(len(i) == MAX_LENGTH for i in ids) >= len(QUERIES), "no pair was truncated"
    return request.param, directory, pairs, logits, ids, types


def test_electra_token_ids(electra):
    name, directory, pairs, _, ids, types = electra
    encoded = CrossEncoder(directory, ops="numpy").tokenizer.encode_pairs(pairs)
    bad = [i for i, (got, want_ids, want_types) in enumerate(zip(encoded, ids, types))
           if got[0].tolist() != list(want_ids) or got[1].tolist() != list(want_types)]
    assert not bad, f"electra {name}: token ids differ from transformers' for pairs {bad}"
    assert any(1 in t for t in types), "ELECTRA's tokenizer gives the passage token type 1"


@pytest.mark.parametrize("op_set", OP_SETS)
def test_electra_parity(electra, op_set):
    name, directory, pairs, logits, _, _ = electra
    ce = CrossEncoder(directory, ops=op_set)
    scores = ce.predict(pairs, batch_size=7)
    assert_close(scores, logits[:, 0], f"electra {name} [{op_set}]")
    assert_same_rankings(scores, logits[:, 0], len(QUERIES), f"electra {name} [{op_set}]")


def test_electra_sentence_encoder(electra, tmp_path):
    st = pytest.importorskip("sentence_transformers")
    name, directory, pairs, _, _, _ = electra
    model = transformers.ElectraModel.from_pretrained(directory)  # the bare encoder, saved without a prefix
    model.save_pretrained(tmp_path)
    for f in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        (tmp_path / f).write_bytes((directory / f).read_bytes())
    texts = [q for q, _ in pairs[::9]] + [p for _, p in pairs[:9]]
    want = st.SentenceTransformer(str(tmp_path), device="cpu").encode(texts, convert_to_numpy=True)
    got = SentenceEncoder(tmp_path).encode(texts)
    assert_close(got, want.astype(np.float32), f"electra {name} SentenceEncoder (mean pooling)")
