"""Live parity for ModernBERT: fresh tiny random models built by transformers, read by minibert.

Each variant is a ModernBertForSequenceClassification with every parameter re-drawn from a seeded
generator, saved with save_pretrained in a temp dir next to the byte-level BPE tokenizer of the
modernbert-mean golden. transformers scores real text pairs (pydoc passages, some of 1,000+
tokens: far beyond the sliding window and 512), tokenized as sentence-transformers' CrossEncoder
tokenizes them; minibert goes from text to scores on its own. Numbers first (|diff| <= 1e-5 +
1e-5 |logit|), then decisions (the ranking of every query). Then SentenceEncoder on a bare
ModernBertModel against sentence-transformers, and on the classification checkpoint (its head
skipped) against AutoModel + mean pooling.

Needs torch + transformers (skipped without them).
"""

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from pydoc_data.topics import topics  # noqa: E402

from op_sets import OP_SETS  # noqa: E402

from minibert import ConfigError, CrossEncoder, SentenceEncoder  # noqa: E402

TOKENIZER = Path(__file__).parent / "fixtures" / "goldens" / "modernbert-mean"
ATOL = RTOL = 1e-5
BATCH = 4

QUERIES = [
    "How do I handle an exception raised in a block of code?",
    "How is a function defined, and when are default parameter values evaluated?",
    "How does Python find and load a module when importing it?",
    "What are generators and how does yield work?",
]
# (pydoc topic, characters of its body): short passages, and long ones of 1,000+ tokens.
PASSAGES = [("try", 250), ("function", 400), ("import", 3300), ("yield", 900), ("exceptions", 3000), ("for", 150)]

COMMON = dict(hidden_size=48, num_attention_heads=4, intermediate_size=40, num_hidden_layers=4,
              max_position_embeddings=2048, hidden_activation="gelu", classifier_activation="gelu")
VARIANTS = {
    # The Hub's legacy keys, as config.json of gte-reranker-modernbert-base carries them; every bias on.
    "legacy-cls": dict(COMMON, global_attn_every_n_layers=3, global_rope_theta=160000.0, local_rope_theta=10000.0,
                       local_attention=64, classifier_pooling="cls", num_labels=1, norm_bias=True,
                       attention_bias=True, mlp_bias=True, classifier_bias=True),
    # transformers 5's keys, no biases but the classifier's (it always has one), mean pooling, 2 labels.
    "v5-mean": dict(COMMON, layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
                    rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 80000.0},
                                     "sliding_attention": {"rope_type": "default", "rope_theta": 500.0}},
                    local_attention=33, classifier_pooling="mean", num_labels=2, norm_bias=False,
                    attention_bias=False, mlp_bias=False, classifier_bias=False),
}
SEEDS = {"legacy-cls": 11, "v5-mean": 12}
LEGACY_KEYS = ("global_attn_every_n_layers", "global_rope_theta", "local_rope_theta")


def topic_body(name: str, n_chars: int) -> str:
    _, _, body = topics[name].split("\n", 2)
    return " ".join(body.split())[:n_chars]


def make_pairs():
    return [(q, topic_body(name, n)) for q in QUERIES for name, n in PASSAGES]


def randomize_(model, seed: int):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            z = torch.randn(p.shape, generator=g)
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * z)
            elif name.endswith(".bias"):
                p.copy_(0.1 * z)
            elif name.startswith("classifier."):
                p.copy_(0.5 * z)
            else:
                p.copy_(0.15 * z)


def write_model(directory: Path, config_kwargs: dict, seed: int, bare: bool = False) -> Path:
    """A random ModernBertForSequenceClassification (or a bare ModernBertModel) with the golden's tokenizer."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TOKENIZER / name, directory / name)
    vocab = json.loads((TOKENIZER / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
    ids = dict(vocab_size=len(vocab), pad_token_id=vocab["[PAD]"], bos_token_id=vocab["[CLS]"],
               eos_token_id=vocab["[SEP]"], cls_token_id=vocab["[CLS]"], sep_token_id=vocab["[SEP]"])
    config = transformers.ModernBertConfig(**ids, **config_kwargs)
    cls = transformers.ModernBertModel if bare else transformers.ModernBertForSequenceClassification
    torch.manual_seed(seed)
    model = cls(config).eval()
    randomize_(model, seed)
    model.save_pretrained(directory, safe_serialization=True)
    if any(key in config_kwargs for key in LEGACY_KEYS):  # config.json as the Hub has it
        path = directory / "config.json"
        raw = json.loads(path.read_text(encoding="utf-8"))
        raw.pop("layer_types"), raw.pop("rope_parameters")
        raw.update({key: config_kwargs[key] for key in LEGACY_KEYS})
        path.write_text(json.dumps(raw, indent=2), encoding="utf-8")
    return directory


@dataclasses.dataclass(frozen=True)
class Reference:
    model_dir: Path
    pairs: list
    logits: np.ndarray   # [n, L]
    token_ids: list
    lengths: list


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def reference(request, tmp_path_factory) -> Reference:
    name = request.param
    model_dir = write_model(tmp_path_factory.mktemp(f"modernbert-{name}"), VARIANTS[name], seed=SEEDS[name])
    model = transformers.ModernBertForSequenceClassification.from_pretrained(
        model_dir, attn_implementation="eager", dtype=torch.float32).eval()
    if name == "legacy-cls":
        assert model.config.layer_types == ["full_attention", "sliding_attention", "sliding_attention", "full_attention"]
        assert model.config.rope_parameters["sliding_attention"]["rope_theta"] == 10000.0
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    pairs = make_pairs()
    max_length = COMMON["max_position_embeddings"]
    unpadded = tokenizer([q for q, _ in pairs], [p for _, p in pairs], truncation="longest_first", max_length=max_length)
    lengths = [len(ids) for ids in unpadded["input_ids"]]
    assert max(lengths) > 1000 and sum(n > 512 for n in lengths) >= 2 * len(QUERIES), lengths
    logits = np.empty((len(pairs), model.config.num_labels), np.float32)
    order = sorted(range(len(pairs)), key=lambda i: lengths[i])
    with torch.no_grad():
        for start in range(0, len(order), BATCH):
            rows = order[start:start + BATCH]
            enc = tokenizer([pairs[i][0] for i in rows], [pairs[i][1] for i in rows], padding=True,
                            truncation="longest_first", max_length=max_length, return_tensors="pt")
            logits[rows] = model(**enc).logits.numpy()
    return Reference(model_dir, pairs, logits, unpadded["input_ids"], lengths)


def test_token_ids_are_transformers(reference):
    ce = CrossEncoder(reference.model_dir, ops="numpy")
    assert ce.max_length == COMMON["max_position_embeddings"]
    encoded = ce.tokenizer.encode_pairs(reference.pairs)
    bad = [i for i, ((ids, _), want) in enumerate(zip(encoded, reference.token_ids)) if ids.tolist() != list(want)]
    assert not bad, f"token ids differ from transformers for pairs {bad}"


@pytest.mark.parametrize("op_set", OP_SETS)
def test_logits_and_rankings_are_transformers(reference, op_set):
    ce = CrossEncoder(reference.model_dir, ops=op_set)
    scores = ce.predict(reference.pairs, batch_size=BATCH)
    scores = scores.reshape(reference.logits.shape)
    diff = np.abs(scores.astype(np.float64) - reference.logits)
    excess = diff - (ATOL + RTOL * np.abs(reference.logits))
    worst = np.unravel_index(int(np.argmax(excess)), diff.shape)
    line = (f"{reference.model_dir.name} [{op_set}]: max |minibert - transformers| {diff.max():.2e} over "
            f"{len(scores)} pairs of {min(reference.lengths)}..{max(reference.lengths)} tokens (worst: pair {worst[0]}, "
            f"{reference.lengths[worst[0]]} tokens: {scores[worst]:.7g} vs {reference.logits[worst]:.7g})")
    print("\n" + line)
    assert excess.max() <= 0, line

    first = reference.logits[:, 0].reshape(len(QUERIES), -1)
    gaps = np.diff(np.sort(first, axis=1), axis=1)
    assert gaps.min() > 1e-3, f"transformers' scores are nearly tied ({gaps.min():.1e}): the ranking test means nothing"
    got = np.argsort(-scores[:, 0].reshape(len(QUERIES), -1), axis=1, kind="stable")
    want = np.argsort(-first, axis=1, kind="stable")
    assert got.tolist() == want.tolist(), f"[{op_set}] rankings {got.tolist()}, transformers {want.tolist()}"


def test_rank_is_transformers_order(reference):
    ce = CrossEncoder(reference.model_dir)
    n = len(PASSAGES)
    passages = [p for _, p in reference.pairs[2 * n:3 * n]]
    if reference.logits.shape[1] > 1:  # a relevance ranking needs one logit
        with pytest.raises(ConfigError, match="num_labels=2"):
            ce.rank(QUERIES[2], passages)
        return
    hits = ce.rank(QUERIES[2], passages)
    assert [h["corpus_id"] for h in hits] == np.argsort(-reference.logits[2 * n:3 * n, 0], kind="stable").tolist()


# ----------------------------------------------------------------------------------------------
# sentence embeddings


def _texts():
    return ["a short text", "", "Ünïcödé and 日本語 🐍", topic_body("import", 2400), topic_body("try", 300)]


def _mean_pooled(model_dir: Path, texts, max_length):
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModel.from_pretrained(model_dir, attn_implementation="eager", dtype=torch.float32).eval()
    out = []
    with torch.no_grad():
        for text in texts:
            enc = tokenizer([text], truncation=True, max_length=max_length, return_tensors="pt")
            out.append(model(**enc).last_hidden_state[0].mean(0).numpy())
    return np.stack(out)


@pytest.mark.parametrize("op_set", OP_SETS)
def test_sentence_encoder_on_a_bare_modernbert_is_sentence_transformers(tmp_path, op_set):
    st = pytest.importorskip("sentence_transformers")
    st_dir = write_model(tmp_path / "encoder", VARIANTS["v5-mean"], seed=7, bare=True)
    # laid out as sentence-transformers saves a Transformer + mean Pooling model
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    (st_dir / "modules.json").write_text(json.dumps(modules), encoding="utf-8")
    (st_dir / "1_Pooling").mkdir()
    (st_dir / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": COMMON["hidden_size"], "pooling_mode_mean_tokens": True}), encoding="utf-8")
    (st_dir / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 1024}), encoding="utf-8")
    texts = _texts()
    want = st.SentenceTransformer(str(st_dir), device="cpu").encode(texts, convert_to_numpy=True, batch_size=2)

    enc = SentenceEncoder(st_dir, ops=op_set)
    assert enc.max_seq_length == 1024
    got = enc.encode(texts, batch_size=2)
    assert got.shape == want.shape == (len(texts), COMMON["hidden_size"])
    diff = np.abs(got - want) - (ATOL + RTOL * np.abs(want))
    assert diff.max() <= 0, f"[{op_set}] max |minibert - sentence-transformers| {np.abs(got - want).max():.2e}"


def test_sentence_encoder_skips_the_classification_head(tmp_path):
    """A ModernBertForSequenceClassification directory (no modules.json): its encoder, final norm included,
    mean-pooled; head.* and classifier.* are not read."""
    model_dir = write_model(tmp_path / "cls", VARIANTS["legacy-cls"], seed=3)
    texts = _texts()
    want = _mean_pooled(model_dir, texts, max_length=COMMON["max_position_embeddings"])
    got = SentenceEncoder(model_dir).encode(texts)
    diff = np.abs(got - want) - (ATOL + RTOL * np.abs(want))
    assert diff.max() <= 0, f"max |minibert - transformers AutoModel| {np.abs(got - want).max():.2e}"


# ----------------------------------------------------------------------------------------------
# config.json: both styles read as transformers reads them


RAW_CONFIGS = [
    {},  # every default: 22 layers, every third global from layer 0, thetas 160000 / 10000, window 128
    {"num_hidden_layers": 5, "global_attn_every_n_layers": 2, "global_rope_theta": 1000.0, "local_rope_theta": 7.0},
    {"num_hidden_layers": 4, "global_attn_every_n_layers": 1},
    {"num_hidden_layers": 3, "layer_types": ["sliding_attention", "full_attention", "sliding_attention"],
     "global_attn_every_n_layers": 2},  # layer_types wins
    {"num_hidden_layers": 2, "rope_parameters": {"full_attention": {"rope_theta": 5.0}}, "local_rope_theta": 3.0,
     "global_rope_theta": 9.0},  # a given theta wins over the legacy key, a missing one comes from it
    {"num_hidden_layers": 2, "rope_parameters": {"sliding_attention": {"rope_theta": 77.0}}, "local_attention": 9},
    {"num_hidden_layers": 2, "local_attention": 8, "sliding_window": 3},  # the setter: local_attention = 6
]


@pytest.mark.parametrize("raw", RAW_CONFIGS, ids=range(len(RAW_CONFIGS)))
def test_config_reads_layer_types_and_rope_as_transformers(raw):
    from minibert.models import config_from_dict

    hf = transformers.ModernBertConfig.from_dict(dict(raw))
    ours = config_from_dict({"model_type": "modernbert", **raw})
    assert list(ours.layer_types) == hf.layer_types
    for layer_type in set(hf.layer_types):
        assert ours.rope_theta(layer_type) == hf.rope_parameters[layer_type]["rope_theta"]
        assert ours.rope_parameters[layer_type]["rope_type"] == hf.rope_parameters[layer_type]["rope_type"]
    assert ours.sliding_window == hf.sliding_window
    assert ours.local_attention == hf.local_attention
