"""Live parity for the RoBERTa family: fresh tiny random RoBERTa / XLM-RoBERTa / CamemBERT models,
saved by transformers, scored by transformers and by minibert on real text pairs.

Each model is built here (in a tmp dir) with a fixed torch seed and every parameter redrawn
(LayerNorm too), with the tokenizer files of a committed golden fixture (byte-level BPE for
RoBERTa, SentencePiece Unigram for XLM-R and CamemBERT). transformers tokenizes as
sentence-transformers' CrossEncoder does (padding=True, truncation='longest_first'); minibert
goes from text to scores on its own. Numbers first (within 1e-5 relative), then decisions (the
same ranking for every query). Then SentenceEncoder on a bare XLMRobertaModel (AutoModel, with
its pooler tensors) against sentence-transformers, and the error paths of the family.

Needs torch + transformers (skipped without them).
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from pydoc_data.topics import topics  # noqa: E402

from op_sets import OP_SETS  # noqa: E402

from minibert import ConfigError, CrossEncoder, ModelFormatError, SentenceEncoder  # noqa: E402
from minibert.models import config_from_dict  # noqa: E402
from minibert.models.batch import padding_idx_positions as position_ids  # noqa: E402

GOLDENS = Path(__file__).parent / "fixtures" / "goldens"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
RTOL = 1e-5
ATOL = 1e-5   # as tests/test_goldens.py: |diff| <= 1e-5 + 1e-5 * |want| (a relative bound means nothing near 0)
SEED = 4321
MAX_LENGTH = 200

QUERIES = [
    "How do I handle an exception raised in a block of code?",
    "What does the with statement do with a context manager?",
    "How is a function defined, and when are default parameter values evaluated?",
    "How does Python find and load a module when importing it?",
]
PASSAGES = [("try", 250), ("with", 250), ("function", 300), ("import", 300), ("class", 800), ("exceptions", 1500)]

# (model_type, tokenizer fixture, architecture)
FAMILIES = [
    ("roberta", "roberta-bpe", "RobertaForSequenceClassification"),
    ("xlm-roberta", "xlmr-unigram", "XLMRobertaForSequenceClassification"),
    ("camembert", "xlmr-unigram", "CamembertForSequenceClassification"),
]


def topic_body(name: str, n_chars: int) -> str:
    _, _, body = topics[name].split("\n", 2)
    return " ".join(body.split())[:n_chars]


def make_pairs():
    passages = [topic_body(name, n) for name, n in PASSAGES]
    return [(q, p) for q in QUERIES for p in passages] + [(QUERIES[0], "a <pad> inside, and <s> too"), (QUERIES[1], "")]


def redraw_(model, seed: int):
    """Every parameter from a seeded generator, LayerNorm around 1 +- 0.2, never the default init."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            z = torch.randn(p.shape, generator=g)
            if name.endswith("LayerNorm.weight"):
                p.copy_(1 + 0.2 * z)
            elif name.endswith(".bias"):
                p.copy_(0.1 * z)
            elif "embeddings" in name:
                p.copy_(0.02 * z + (0.25 * torch.randn((p.shape[0], 1), generator=g) if "word" in name else 0))
            else:
                p.copy_((0.5 if "out_proj" in name else 0.2) * z)


def config_for(model_type: str, vocab_size: int, **overrides):
    config_class = transformers.AutoConfig.for_model(model_type).__class__
    fields = dict(vocab_size=vocab_size, hidden_size=40, num_attention_heads=4, intermediate_size=52,
                  num_hidden_layers=3, max_position_embeddings=MAX_LENGTH + 2, type_vocab_size=1,
                  pad_token_id=1, bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5, num_labels=1)
    return config_class(**{**fields, **overrides})


def save_model(model_dir: Path, model_type: str, fixture: str, architecture: str, seed: int):
    model_dir.mkdir(parents=True)
    for name in TOKENIZER_FILES:
        shutil.copy(GOLDENS / fixture / name, model_dir / name)
    if model_type == "camembert":   # the same Unigram files, read by CamembertTokenizer
        tc = json.loads((model_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
        tc["tokenizer_class"] = "CamembertTokenizer"
        (model_dir / "tokenizer_config.json").write_text(json.dumps(tc), encoding="utf-8")
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    torch.manual_seed(seed)
    model = getattr(transformers, architecture)(config_for(model_type, len(tokenizer))).eval()
    redraw_(model, seed)
    model.save_pretrained(model_dir, safe_serialization=True)
    return tokenizer


@pytest.fixture(scope="module", params=FAMILIES, ids=[f[0] for f in FAMILIES])
def reference(request, tmp_path_factory):
    model_type, fixture, architecture = request.param
    model_dir = tmp_path_factory.mktemp(model_type) / "model"
    tokenizer = save_model(model_dir, model_type, fixture, architecture, SEED)
    model = getattr(transformers, architecture).from_pretrained(
        model_dir, attn_implementation="eager", dtype=torch.float32).eval()
    pairs = make_pairs()
    enc = tokenizer([q for q, _ in pairs], [p for _, p in pairs], padding=True, truncation="longest_first",
                    max_length=MAX_LENGTH, return_tensors="pt")
    assert "token_type_ids" not in enc
    with torch.no_grad():
        scores = model(**enc).logits[:, 0].numpy()
        exact = model.double()(**enc).logits[:, 0].numpy()   # float64: how far float32 is from exact
    lengths = enc["attention_mask"].sum(1)
    assert int((lengths == MAX_LENGTH).sum()) >= len(QUERIES), "too few pairs cut at max_length"
    ids = [row[:n].tolist() for row, n in zip(enc["input_ids"], lengths)]
    return model_type, model_dir, pairs, scores, ids, exact


def test_token_ids(reference):
    model_type, model_dir, pairs, _, want, _ = reference
    ce = CrossEncoder(model_dir, max_length=MAX_LENGTH)
    assert ce.config.model_type == model_type
    got = [ids.tolist() for ids, types in ce.tokenizer.encode_pairs(pairs)]
    bad = [i for i in range(len(pairs)) if got[i] != want[i]]
    assert not bad, f"{model_type}: token ids differ for pairs {bad}: {got[bad[0]]} vs {want[bad[0]]}"
    assert all(not types.any() for _, types in ce.tokenizer.encode_pairs(pairs)), "token types must be all 0"


@pytest.mark.parametrize("op_set", OP_SETS)
def test_parity(reference, op_set):
    model_type, model_dir, pairs, want, _, exact = reference
    ce = CrossEncoder(model_dir, max_length=MAX_LENGTH, ops=op_set)
    got = ce.predict(pairs, batch_size=7)
    diff = np.abs(got.astype(np.float64) - want)
    rel = diff / np.maximum(np.abs(want), 1e-30)
    worst = int(np.argmax(diff - RTOL * np.abs(want)))
    line = (f"{model_type} [{op_set}]: max|diff| {diff.max():.2e}, max rel {rel.max():.2e} over {len(pairs)} pairs "
            f"(worst pair {worst}: {got[worst]:.7g} vs {want[worst]:.7g})")
    # Against float64 transformers, minibert's float32 must be about as close as transformers' own float32.
    ours, theirs = float(np.abs(got - exact).max()), float(np.abs(want - exact).max())
    line += f"; vs float64: minibert {ours:.2e}, transformers float32 {theirs:.2e}"
    print("\n" + line)
    assert np.all(diff <= ATOL + RTOL * np.abs(want)), line
    assert ours <= 2 * theirs + 1e-7, line
    n = len(PASSAGES)
    for q in range(len(QUERIES)):
        g = np.argsort(-got[q * n:(q + 1) * n], kind="stable").tolist()
        w = np.argsort(-want[q * n:(q + 1) * n], kind="stable").tolist()
        assert g == w, f"{model_type} [{op_set}] query {q}: ranking {g}, transformers {w}"


# ---------------------------------------------------------------------------------------------
# position ids, max_tokens


def test_position_ids_follow_transformers_per_pair():
    """create_position_ids_from_input_ids on each pair alone == position_ids on the packed batch."""
    rng = np.random.default_rng(0)
    pairs = [rng.integers(0, 5, size=n) for n in (1, 7, 3, 12, 5)]   # pad id 1 appears anywhere, also first
    ids = np.concatenate(pairs)
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in pairs])])
    got = position_ids(ids, offsets, 1)
    from transformers.models.roberta.modeling_roberta import RobertaEmbeddings
    want = np.concatenate([RobertaEmbeddings.create_position_ids_from_input_ids(
        torch.tensor(p)[None], padding_idx=1)[0].numpy() for p in pairs])
    assert got.tolist() == want.tolist()
    assert position_ids(np.zeros(0, np.int64), np.zeros(1, np.int64), 1).shape == (0,)


@pytest.mark.parametrize("positions, pad, tokens", [(514, 1, 512), (8194, 1, 8192), (66, 3, 62)])
def test_max_tokens(positions, pad, tokens):
    config = config_from_dict({"model_type": "xlm-roberta", "max_position_embeddings": positions,
                               "pad_token_id": pad, "vocab_size": 10})
    assert config.max_tokens == tokens


def test_defaults_follow_transformers():
    for model_type, vocab in (("roberta", 50265), ("xlm-roberta", 30522), ("camembert", 30522)):
        config = config_from_dict({"model_type": model_type})
        want = transformers.AutoConfig.for_model(model_type)
        assert (config.vocab_size, config.pad_token_id, config.type_vocab_size, config.layer_norm_eps) == \
            (want.vocab_size, want.pad_token_id, want.type_vocab_size, want.layer_norm_eps) == (vocab, 1, 2, 1e-12)


# ---------------------------------------------------------------------------------------------
# SentenceEncoder on a bare XLMRobertaModel


@pytest.fixture(scope="module")
def bare_xlmr(tmp_path_factory):
    """A bare XLMRobertaModel (with its pooler, as bge-m3 ships) saved as a sentence-transformers dir."""
    model_dir = tmp_path_factory.mktemp("bare") / "xlmr"
    model_dir.mkdir()
    for name in TOKENIZER_FILES:
        shutil.copy(GOLDENS / "xlmr-unigram" / name, model_dir / name)
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    torch.manual_seed(SEED)
    model = transformers.XLMRobertaModel(config_for("xlm-roberta", len(tokenizer)), add_pooling_layer=True).eval()
    redraw_(model, SEED + 1)
    model.save_pretrained(model_dir, safe_serialization=True)
    return model_dir


def test_bare_checkpoint_has_a_pooler(bare_xlmr):
    from safetensors import safe_open
    with safe_open(str(bare_xlmr / "model.safetensors"), "np") as f:
        assert "pooler.dense.weight" in set(f.keys())


@pytest.mark.parametrize("config_file, lower", [("sentence_bert_config.json", False),
                                                ("sentence_xlm-roberta_config.json", True)])
def test_sentence_encoder_on_xlmr(bare_xlmr, tmp_path, config_file, lower):
    """Mean pooling over a bare XLMRobertaModel; do_lower_case puts Lowercase before the Precompiled normalizer."""
    st = pytest.importorskip("sentence_transformers")
    texts = ["How does Python find a Module?", "", "Café naïve RÉSUMÉ 日本", topic_body("import", 2000),
             "a <pad> inside a text", "ＡＢＣ ﬁne"]
    where = tmp_path / "st"
    shutil.copytree(bare_xlmr, where)
    (where / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]), encoding="utf-8")
    (where / "1_Pooling").mkdir()
    (where / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 40,
                                                                 "pooling_mode_mean_tokens": True}), encoding="utf-8")
    (where / config_file).write_text(json.dumps({"max_seq_length": 128, "do_lower_case": lower}), encoding="utf-8")
    want = st.SentenceTransformer(str(where), device="cpu").encode(texts, convert_to_numpy=True)
    enc = SentenceEncoder(where)
    assert enc.max_seq_length == 128
    got = enc.encode(texts)
    diff = float(np.abs(got - want).max())
    print(f"\nSentenceEncoder on a bare XLMRobertaModel ({config_file}, do_lower_case {lower}): "
          f"max|diff| vs sentence-transformers {diff:.2e}")
    assert diff <= 1e-5


def test_bare_checkpoint_is_not_a_cross_encoder(bare_xlmr):
    with pytest.raises(ModelFormatError, match="bare XLM-RoBERTa encoder.*not a cross-encoder"):
        CrossEncoder(bare_xlmr)


# ---------------------------------------------------------------------------------------------
# errors


@pytest.fixture(scope="module")
def tiny_roberta(tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("tiny") / "roberta"
    save_model(model_dir, "roberta", "roberta-bpe", "RobertaForSequenceClassification", SEED + 2)
    return model_dir


def with_config(base: Path, where: Path, **changes) -> Path:
    shutil.copytree(base, where)
    config = json.loads((where / "config.json").read_text(encoding="utf-8"))
    for key, value in changes.items():
        if value is None and key != "pad_token_id":
            config.pop(key, None)
        else:
            config[key] = value
    (where / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return where


@pytest.mark.parametrize("changes, fragment", [
    ({"position_embedding_type": "relative_key"}, "unsupported position_embedding_type 'relative_key'"),
    ({"hidden_act": "gelu_new"}, "unsupported hidden_act 'gelu_new'"),
    ({"pad_token_id": None}, "'pad_token_id' is null"),
    ({"max_position_embeddings": 2}, "leaves no position for a token"),
    ({"model_type": "roberta-prelayernorm"}, "model_type is 'roberta-prelayernorm'"),
])
def test_unsupported_options_are_named(tiny_roberta, tmp_path, changes, fragment):
    with pytest.raises(ConfigError, match="config.json: .*" + fragment.replace("(", r"\(")):
        CrossEncoder(with_config(tiny_roberta, tmp_path / "m", **changes))


def test_missing_and_misshaped_tensors_are_named(tiny_roberta, tmp_path):
    from safetensors.numpy import load_file, save_file
    where = tmp_path / "m"
    shutil.copytree(tiny_roberta, where)
    tensors = load_file(str(where / "model.safetensors"))
    del tensors["classifier.out_proj.bias"]
    tensors["roberta.embeddings.position_embeddings.weight"] = tensors["roberta.embeddings.position_embeddings.weight"][:-1]
    tensors["roberta.pooler.dense.weight"] = np.zeros((40, 40), np.float32)
    save_file(tensors, str(where / "model.safetensors"))
    with pytest.raises(ModelFormatError) as info:
        CrossEncoder(where)
    message = str(info.value)
    assert "missing tensor classifier.out_proj.bias, expected shape [1]" in message
    assert "tensor roberta.embeddings.position_embeddings.weight: expected shape [202, 40], found [201, 40]" in message
    assert "unexpected tensor roberta.pooler.dense.weight" in message


def test_sentencepiece_only_directory_says_how_to_make_tokenizer_json(tiny_roberta, tmp_path):
    where = with_config(tiny_roberta, tmp_path / "m", model_type="xlm-roberta")
    (where / "tokenizer.json").unlink()
    tc = json.loads((where / "tokenizer_config.json").read_text(encoding="utf-8"))
    tc["tokenizer_class"] = "XLMRobertaTokenizer"
    (where / "tokenizer_config.json").write_text(json.dumps(tc), encoding="utf-8")
    (where / "sentencepiece.bpe.model").write_bytes(b"\0")
    with pytest.raises(ModelFormatError, match="sentencepiece.bpe.model.*save_pretrained"):
        CrossEncoder(where)


def test_wrong_tokenizer_model_kind_is_named(tiny_roberta, tmp_path):
    where = with_config(tiny_roberta, tmp_path / "m")
    tc = json.loads((where / "tokenizer_config.json").read_text(encoding="utf-8"))
    tc["tokenizer_class"] = "XLMRobertaTokenizerFast"
    (where / "tokenizer_config.json").write_text(json.dumps(tc), encoding="utf-8")
    with pytest.raises(ModelFormatError, match="tokenizer.json: a XLMRobertaTokenizer needs a Unigram model"):
        CrossEncoder(where)


def test_vocab_json_and_merges_txt_directory(tiny_roberta, tmp_path):
    """The older RoBERTa directory: vocab.json + merges.txt, no tokenizer.json: the same ids as transformers."""
    where = with_config(tiny_roberta, tmp_path / "m")
    raw = json.loads((where / "tokenizer.json").read_text(encoding="utf-8"))["model"]
    (where / "vocab.json").write_text(json.dumps(raw["vocab"]), encoding="utf-8")
    merges = [m if isinstance(m, str) else " ".join(m) for m in raw["merges"]]
    (where / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    (where / "tokenizer.json").unlink()
    pairs = make_pairs()
    want = transformers.AutoTokenizer.from_pretrained(where)(
        [q for q, _ in pairs], [p for _, p in pairs], truncation="longest_first", max_length=MAX_LENGTH)["input_ids"]
    got = [ids.tolist() for ids, _ in CrossEncoder(where, max_length=MAX_LENGTH).tokenizer.encode_pairs(pairs)]
    assert got == want
