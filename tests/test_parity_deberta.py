"""Live parity for DeBERTa-v2 / v3: fresh tiny random models, minibert against transformers.

Each model is built here with transformers (every parameter re-randomized), saved with
save_pretrained next to the DeBERTa golden's tokenizer files, and scored by both sides on real text
pairs (CPython's pydoc topics, up to 96 tokens: far beyond the log buckets' exact range). transformers
tokenizes as sentence-transformers' CrossEncoder does; minibert goes from text to scores on its own.
Numbers first (|diff| <= 1e-5 + 1e-5 |want|), then the ranking of each query's passages.
Also: the log buckets against transformers' own function over every distance a model can see, and
SentenceEncoder on a bare DebertaV2Model against sentence-transformers (mean pooling).
"""

import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from pydoc_data.topics import topics  # noqa: E402

from op_sets import OP_SETS  # noqa: E402

from minibert import CrossEncoder, SentenceEncoder  # noqa: E402
from minibert.models.deberta_v2 import log_bucket  # noqa: E402

GOLDEN = Path(__file__).parent / "fixtures" / "goldens" / "deberta-v3"
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json"]
ATOL = RTOL = 1e-5
MAX_LENGTH = 96

QUERIES = ["How do I handle an exception raised in a block of code?", "What does the with statement do?",
           "How is a function defined?", "How does Python find and load a module?"]
PASSAGES = [("try", 300), ("with", 200), ("function", 400), ("for", 120), ("import", 500), ("class", 60)]

# The v3 shape of the Hub's rerankers (scaled down) and a v2-xlarge shape with everything v3 lacks.
MODELS = {
    "v3": dict(hidden_size=32, num_attention_heads=4, intermediate_size=40, num_hidden_layers=2,
               max_position_embeddings=128, type_vocab_size=0, relative_attention=True, position_buckets=32,
               max_relative_positions=-1, share_att_key=True, pos_att_type="p2c|c2p", norm_rel_ebd="layer_norm",
               position_biased_input=False, num_labels=1),
    "v2": dict(hidden_size=30, num_attention_heads=5, intermediate_size=37, num_hidden_layers=2,
               max_position_embeddings=128, type_vocab_size=0, relative_attention=True, position_buckets=-1,
               max_relative_positions=40, share_att_key=False, pos_att_type=["c2p"], norm_rel_ebd="none",
               position_biased_input=True, conv_kernel_size=5, conv_act="tanh", embedding_size=26,
               pooler_hidden_act="tanh", num_labels=1),
}


def topic_body(name: str, n_chars: int) -> str:
    _, _, body = topics[name].split("\n", 2)
    return " ".join(body.split())[:n_chars]


def make_pairs():
    return [(q, topic_body(name, n)) for q in QUERIES for name, n in PASSAGES]


def randomize_(model, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            z = torch.randn(p.shape, generator=g)
            if name.endswith("LayerNorm.weight"):
                p.copy_(1.0 + 0.2 * z)
            elif name.endswith(".bias"):
                p.copy_(0.1 * z)
            elif name.endswith("rel_embeddings.weight"):
                p.copy_(z)
            elif name.startswith("classifier."):
                p.copy_(0.5 * z)
            else:
                p.copy_(0.2 * z)


def build(directory: Path, fields: dict, seed: int, cls=None) -> Path:
    """A random DeBERTa-v2 model saved with save_pretrained, with the golden's tokenizer files."""
    vocab_size = transformers.AutoConfig.from_pretrained(GOLDEN).vocab_size
    config = transformers.DebertaV2Config(vocab_size=vocab_size, pad_token_id=0, **fields)
    torch.manual_seed(seed)
    model = (cls or transformers.DebertaV2ForSequenceClassification)(config).eval()
    randomize_(model, seed)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    for name in TOKENIZER_FILES:
        shutil.copy(GOLDEN / name, directory / name)
    return directory


@pytest.fixture(scope="module", params=sorted(MODELS))
def reference(request, tmp_path_factory):
    model_dir = build(tmp_path_factory.mktemp(f"deberta-{request.param}"), MODELS[request.param], seed=7)
    model = transformers.DebertaV2ForSequenceClassification.from_pretrained(
        model_dir, attn_implementation="eager", dtype=torch.float32).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    pairs = make_pairs()
    enc = tokenizer([q for q, _ in pairs], [p for _, p in pairs], padding=True, truncation="longest_first",
                    max_length=MAX_LENGTH, return_tensors="pt")
    lengths = enc["attention_mask"].sum(1)
    assert int(lengths.max()) == MAX_LENGTH and int(lengths.min()) < 32, lengths.tolist()
    with torch.no_grad():
        scores = model(**enc).logits[:, 0].numpy()
    per_query = scores.reshape(len(QUERIES), len(PASSAGES))
    assert np.diff(np.sort(per_query, axis=1), axis=1).min() > 1e-3, "nearly tied scores: rankings would be noise"
    return request.param, model_dir, pairs, scores


@pytest.mark.parametrize("op_set", OP_SETS)
def test_live_parity(reference, op_set):
    name, model_dir, pairs, want = reference
    ce = CrossEncoder(model_dir, max_length=MAX_LENGTH, ops=op_set)
    got = ce.predict(pairs, batch_size=7)
    assert got.dtype == np.float32 and got.shape == want.shape
    diff = np.abs(got.astype(np.float64) - want)
    worst = int(np.argmax(diff - RTOL * np.abs(want)))
    line = (f"deberta-{name} [{op_set}]: max |minibert - transformers| = {diff.max():.2e} over {len(pairs)} pairs "
            f"(pair {worst}: {got[worst]:.6f} vs {want[worst]:.6f})")
    print("\n" + line)
    assert (diff <= ATOL + RTOL * np.abs(want)).all(), line
    got_order = np.argsort(-got.reshape(len(QUERIES), -1), axis=1, kind="stable")
    want_order = np.argsort(-want.reshape(len(QUERIES), -1), axis=1, kind="stable")
    assert got_order.tolist() == want_order.tolist(), f"deberta-{name} [{op_set}]: rankings differ"


@pytest.mark.parametrize("bucket_size, max_position, longest", [
    (256, 512, 2048),   # deberta-v3-*, mdeberta-v3, mxbai-rerank-*-v1: position_buckets 256, 512 positions
    (16, 96, 96),       # the deberta-v3 golden
    (32, 128, 128),     # this file's v3 model
])
def test_log_buckets_match_transformers(bucket_size, max_position, longest):
    from transformers.models.deberta_v2.modeling_deberta_v2 import (
        make_log_bucket_position,
    )

    distance = np.arange(-longest + 1, longest)
    want = make_log_bucket_position(torch.tensor(distance), bucket_size, max_position).long().numpy()
    got = log_bucket(distance, bucket_size, max_position)
    bad = np.flatnonzero(got != want)
    assert not bad.size, f"buckets differ at distances {distance[bad][:10].tolist()}: {got[bad][:10]} vs {want[bad][:10]}"
    assert len(np.unique(want)) < len(distance), "no distance was bucketed: the test does not reach the log range"


def test_sentence_encoder_on_bare_deberta(tmp_path):
    st = pytest.importorskip("sentence_transformers")
    model_dir = build(tmp_path / "bare", MODELS["v3"], seed=11, cls=transformers.DebertaV2Model)
    texts = [topic_body(name, n) for name, n in PASSAGES] + ["", "a short text"]
    want = st.SentenceTransformer(str(model_dir), device="cpu").encode(texts, convert_to_numpy=True)
    got = SentenceEncoder(model_dir).encode(texts)
    assert got.shape == want.shape
    diff = np.abs(got.astype(np.float64) - want)
    assert (diff <= ATOL + RTOL * np.abs(want)).all(), f"max |diff| {diff.max():.2e}"


TOKENIZER_VARIANTS = {
    "no-prefix-space": {"add_prefix_space": False},
    "lower-punct": {"do_lower_case": True, "split_by_punct": True},
    # [MASK] matched on the normalized text: the space before it then stays a piece of its own
    "normalized-mask": {"do_lower_case": True, "added_tokens_decoder_mask": {"normalized": True}},
    "no-added-tokens-decoder": {"drop_added_tokens_decoder": True, "do_lower_case": True},
}


@pytest.mark.parametrize("variant", sorted(TOKENIZER_VARIANTS))
def test_tokenizer_variants_match_transformers(tmp_path, variant):
    """DebertaV2Tokenizer's options, ids and type ids against AutoTokenizer (no model run)."""
    import json

    from minibert.runtime.load import load_config, load_tokenizer

    options = dict(TOKENIZER_VARIANTS[variant])
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(GOLDEN / name, tmp_path / name)
    tc = json.loads((GOLDEN / "tokenizer_config.json").read_text(encoding="utf-8"))
    if options.pop("drop_added_tokens_decoder", False):
        del tc["added_tokens_decoder"]
    mask_flags = options.pop("added_tokens_decoder_mask", None)
    if mask_flags:
        entry = next(e for e in tc["added_tokens_decoder"].values() if e["content"] == "[MASK]")
        entry.update(mask_flags)
    tc.update(options)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(tc), encoding="utf-8")

    pairs = make_pairs()[:6] + [
        ("Is  [MASK]  here?", "x [MASK]y and[SEP]z"), ("Hello, World! It's 3.14.", "UPPER;lower:Mixed"),
        ("  leading", "trailing  \n"), ("", "only a passage"), ("caf\u00e9 e\u0301", "\ufb01 \uff21"),
    ]
    want = transformers.AutoTokenizer.from_pretrained(tmp_path)(
        [q for q, _ in pairs], [p for _, p in pairs], truncation="longest_first", max_length=48)
    got = load_tokenizer(tmp_path, load_config(tmp_path), 48).encode_pairs(pairs)
    for i, (ids, types) in enumerate(got):
        assert ids.tolist() == want["input_ids"][i], f"{variant} pair {i} {pairs[i]!r}: ids differ"
        assert types.tolist() == want["token_type_ids"][i], f"{variant} pair {i}: type ids differ"
