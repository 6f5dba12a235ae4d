"""Qwen3 read as a reranker, live: minibert against transformers' own Qwen3ForSequenceClassification and
Qwen3ForCausalLM (eager attention, float32) on token ids, and against sentence-transformers 6's CrossEncoder
(text in, scores out, through the chat template) on directories it saved itself. Tiny random models with
grouped-query attention, a head_dim that is not hidden_size / heads, sliding-window layers, tied and untied
language-model heads; the tokenizer files (a byte-level BPE with Qwen's chat tokens and a Qwen3-Reranker-like
template) are the qwen3-reranker golden's."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from op_sets import OP_SETS

from minibert import ConfigError, CrossEncoder
from minibert.formats.checkpoint import read_checkpoint
from minibert.models import llama, qwen3
from minibert.models.batch import Batch
from minibert.models.params import params_from_tensors
from minibert.ops import op_set
from parity.battery import DecoderParity, DecoderSpec

SHAPE = dict(vocab_size=300, hidden_size=48, intermediate_size=80, num_hidden_layers=3, num_attention_heads=4,
             num_key_value_heads=2, head_dim=16, max_position_embeddings=256, rms_norm_eps=1e-6,
             rope_parameters={"rope_type": "default", "rope_theta": 1000.0})
VARIANTS = {
    "gqa": dict(num_labels=1, pad_token_id=0),
    "two-labels": dict(num_labels=2, num_key_value_heads=4, attention_bias=True, pad_token_id=None),
    "sliding": dict(num_labels=1, use_sliding_window=True, sliding_window=6, max_window_layers=1, pad_token_id=0),
}


def randomize(model, seed):
    """Weights far from their initialization (norm weights too), so a missing norm or a swapped tensor shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 0.3 if "norm" in name else 0.2
            p.copy_((1.0 if "norm" in name else 0.0) + scale * torch.randn(p.shape, generator=g))


def pairs_of_ids(seed, lengths=(1, 2, 7, 19, 33)):
    rng = np.random.default_rng(seed)
    return [rng.integers(1, SHAPE["vocab_size"], n) for n in lengths]


def build_seq_cls(variant, path):
    """A random Qwen3ForSequenceClassification saved to path: transformers' model, minibert's config and params."""
    config = transformers.Qwen3Config(**(SHAPE | VARIANTS[variant]), attn_implementation="eager")
    torch.manual_seed(0)
    model = transformers.Qwen3ForSequenceClassification(config).eval()
    randomize(model, 1)
    model.save_pretrained(path)
    cfg = qwen3.Qwen3Config.from_dict(config.to_dict() | {"model_type": "qwen3"}, str(path / "config.json"))
    params = params_from_tensors(read_checkpoint(path / "model.safetensors"), qwen3.FAMILY, cfg, str(path))
    return model, cfg, params


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def seq_cls(request, tmp_path_factory):
    return build_seq_cls(request.param, tmp_path_factory.mktemp(request.param))


def transformers_logits(model, ids_list):
    out = []
    with torch.no_grad():
        for ids in ids_list:
            out.append(model(torch.tensor(ids)[None], output_hidden_states=True))
    return out


@pytest.mark.parametrize("ops", OP_SETS)
def test_sequence_classification_matches_transformers(seq_cls, ops):
    model, cfg, params = seq_cls
    ids = pairs_of_ids(2)
    batch = Batch.pack([(i, np.zeros_like(i)) for i in ids])
    logits, stages = llama.forward(params, cfg, batch, op_set(ops), return_stages=True)
    fast = llama.forward(params, cfg, batch, op_set(ops))   # the last layer at the last token only
    theirs = transformers_logits(model, ids)
    expected = np.concatenate([o.logits.numpy() for o in theirs])
    assert logits.shape == (len(ids), cfg.num_labels)
    np.testing.assert_allclose(logits, expected, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(fast, logits, atol=1e-6, rtol=1e-6)
    for b, o in enumerate(theirs):   # every stage, pair by pair
        rows = slice(batch.offsets[b], batch.offsets[b + 1])
        for i, hidden in enumerate(o.hidden_states):
            name = "embeddings" if i == 0 else f"layer_{i - 1}"
            np.testing.assert_allclose(stages[name][rows], hidden[0].numpy(), atol=2e-5, rtol=1e-5, err_msg=name)


def test_score_read_at_last_non_pad_token(tmp_path):
    """A pair ending in pad_token_id is read at its last other token, as transformers reads it."""
    model, cfg, params = build_seq_cls("gqa", tmp_path)
    assert cfg.pad_token_id == 0
    ids = [np.array([5, 9, 17, 0, 0]), np.array([4, 8])]
    batch = Batch.pack([(i, np.zeros_like(i)) for i in ids])
    expected = np.concatenate([o.logits.numpy() for o in transformers_logits(model, ids)])
    np.testing.assert_allclose(llama.forward(params, cfg, batch, op_set("numpy")), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_causal_lm_token_logits(tmp_path, tied):
    """Qwen3ForCausalLM's next-token logits after the last token, for two vocabulary rows (a reranker's yes / no):
    the last token's hidden state times lm_head_rows (lm_head.weight, or the tied embedding)."""
    config = transformers.Qwen3Config(**SHAPE, tie_word_embeddings=tied, attn_implementation="eager")
    torch.manual_seed(0)
    model = transformers.Qwen3ForCausalLM(config).eval()
    randomize(model, 3)
    if tied:
        model.tie_weights()
    model.save_pretrained(tmp_path)
    cfg = qwen3.Qwen3Config.from_dict(config.to_dict() | {"model_type": "qwen3"}, str(tmp_path / "config.json"))
    tensors = read_checkpoint(tmp_path / "model.safetensors")
    params = params_from_tensors(tensors, qwen3.FAMILY, cfg, str(tmp_path), head=False)
    ids = pairs_of_ids(4)
    batch = Batch.pack([(i, np.zeros_like(i)) for i in ids])
    rows = [7, 123]
    last = llama.encoder(params, cfg, batch, op_set("numpy"), last_only=True)       # [B, H]
    got = last @ llama.lm_head_rows(tensors, cfg, rows).T                         # LogitScore's two rows
    with torch.no_grad():
        expected = np.stack([model(torch.tensor(i)[None]).logits[0, -1, rows].numpy() for i in ids])
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)



# ----------------------------------------------------------------------------------------------
# text in, scores out: minibert's CrossEncoder against sentence-transformers' on the directories it saves

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "goldens" / "qwen3-reranker"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
PAIRS = [("what is the capital of France?", "Paris is the capital and largest city of France."),
         ("what is the capital of France?", "The cat sat on the mat."),
         ("how do I define a function?", "Functions are defined with the def keyword. " * 12),   # cut: the tail kept
         ("why is the sky blue? " * 10, "Rayleigh scattering."),
         ("", ""), ("yes", "no"), ("日本語", "🐍 emoji")]
DECODER_SHAPES = {
    "gqa-tied": dict(num_key_value_heads=2, tie_word_embeddings=True),
    "mha-untied-window": dict(num_key_value_heads=4, tie_word_embeddings=False, use_sliding_window=True,
                              sliding_window=9, max_window_layers=1),
}


class TestQwen3(DecoderParity):
    spec = DecoderSpec("qwen3")


def vocab_size() -> int:
    return len(json.loads((GOLDEN / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]) + 3


def bare_reranker(path: Path, shape: str, seq_cls: bool = False) -> Path:
    """A random Qwen3 (ForCausalLM, or ForSequenceClassification with one label) with the golden's tokenizer files
    and chat template, saved as transformers saves it: what a Hub repository holds."""
    path.mkdir(parents=True)
    for name in TOKENIZER_FILES:
        shutil.copy(GOLDEN / name, path / name)
    tc = json.loads((GOLDEN / "tokenizer_config.json").read_text(encoding="utf-8"))
    tokens = json.loads((GOLDEN / "tokenizer.json").read_text(encoding="utf-8"))["added_tokens"]
    pad = next(t["id"] for t in tokens if t["content"] == tc["pad_token"])
    config = transformers.Qwen3Config(**(SHAPE | {"vocab_size": vocab_size(), "max_position_embeddings": 160}
                                         | DECODER_SHAPES[shape]), num_labels=1, pad_token_id=pad,
                                      attn_implementation="eager")
    torch.manual_seed(0)
    cls = transformers.Qwen3ForSequenceClassification if seq_cls else transformers.Qwen3ForCausalLM
    model = cls(config).eval()
    randomize(model, 11)
    model.save_pretrained(path)
    tc["model_max_length"] = 120
    (path / "tokenizer_config.json").write_text(json.dumps(tc), encoding="utf-8")
    return path


@pytest.fixture(scope="module", params=sorted(DECODER_SHAPES))
def rerankers(request, tmp_path_factory):
    """(bare directory, the directory sentence-transformers' CrossEncoder saves from it, that CrossEncoder)."""
    from sentence_transformers import CrossEncoder as STCrossEncoder

    root = tmp_path_factory.mktemp(request.param)
    bare = bare_reranker(root / "bare", request.param)
    st = STCrossEncoder(str(bare), device="cpu")
    st.save(str(root / "st"))
    return bare, root / "st", st


def assert_scores_close(got, want, what):
    """max |diff| / (1 + |score|) within 1e-5, and each query's order of its passages the same."""
    worst = float(np.max(np.abs(got - want) / (1 + np.abs(want))))
    assert worst <= 1e-5, f"{what}: max |diff| / (1 + |score|) {worst:.2e}"


@pytest.mark.parametrize("ops", OP_SETS)
@pytest.mark.parametrize("saved", [False, True], ids=["bare", "st-saved"])
def test_predict_matches_sentence_transformers(rerankers, saved, ops):
    """Raw scores (logit('yes') - logit('no')) and the stored activation (Sigmoid), with and without a prompt (a
    system message), pairs cut at max_length with the template's tail written back, empty texts."""
    bare, saved_dir, st = rerankers
    ce = CrossEncoder(saved_dir if saved else bare, ops=ops)
    assert ce.max_length == st.max_seq_length == 120 and ce.num_labels == 1
    for prompt in (None, "Find the passage that answers the question"):
        kwargs = {"prompt": prompt} if prompt else {}
        want = st.predict(PAIRS, activation_fn=torch.nn.Identity(), **kwargs)
        assert_scores_close(ce.predict(PAIRS, batch_size=3, **kwargs), want, f"raw, prompt {prompt!r}")
        assert_scores_close(ce.predict(PAIRS, activation="stored", **kwargs), st.predict(PAIRS, **kwargs),
                            f"stored activation, prompt {prompt!r}")


def test_token_ids_are_sentence_transformers(rerankers):
    _, saved_dir, st = rerankers
    enc = st.preprocess(PAIRS)
    want = [row[mask == 1].tolist() for row, mask in zip(enc["input_ids"], enc["attention_mask"])]
    got = [ids.tolist() for ids, _ in CrossEncoder(saved_dir).tokenizer.encode_pairs(PAIRS)]
    assert got == want
    assert max(len(ids) for ids in got) == 120   # the long pairs are cut


def test_sequence_classification_directory_matches_sentence_transformers(tmp_path):
    """A seq-cls conversion (Qwen3ForSequenceClassification with the chat template, as vLLM and Infinity serve
    Qwen3-Reranker): sentence-transformers renders its pairs through the template too."""
    from sentence_transformers import CrossEncoder as STCrossEncoder

    path = bare_reranker(tmp_path / "seq-cls", "gqa-tied", seq_cls=True)
    st = STCrossEncoder(str(path), device="cpu")
    want = st.predict(PAIRS, activation_fn=torch.nn.Identity())
    assert_scores_close(CrossEncoder(path).predict(PAIRS), want, "seq-cls")


def test_bad_decoder_directories_are_named(tmp_path):
    """No yes / no token, a template that does not render a pair, an unsupported rope_scaling: a ConfigError
    naming the field or the file."""
    path = bare_reranker(tmp_path / "base", "gqa-tied")
    no_template = tmp_path / "no-template"
    shutil.copytree(path, no_template)
    (no_template / "chat_template.jinja").unlink()
    assert not CrossEncoder(no_template).tokenizer.prompt_as_message   # the text path: the tokenizer's pair encoding

    broken = tmp_path / "broken-template"
    shutil.copytree(path, broken)
    (broken / "chat_template.jinja").write_text("{{ raise_exception('no documents here') }}", encoding="utf-8")
    with pytest.raises(ConfigError, match="does not render a query / document pair: no documents here"):
        CrossEncoder(broken).predict([("q", "d")])

    unparsable = tmp_path / "unparsable-template"
    shutil.copytree(path, unparsable)
    (unparsable / "chat_template.jinja").write_text("{% if %}", encoding="utf-8")
    with pytest.raises(ConfigError, match="does not compile"):
        CrossEncoder(unparsable)

    no_yes = tmp_path / "no-yes"
    shutil.copytree(path, no_yes)
    tokenizer = json.loads((no_yes / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = tokenizer["model"]["vocab"]
    vocab["y_e_s"] = vocab.pop("yes")   # the token, and the merge that makes it, renamed away
    merges = tokenizer["model"]["merges"]
    tokenizer["model"]["merges"] = [m for m in merges if "".join(m.split(" ") if isinstance(m, str) else m) != "yes"]
    (no_yes / "tokenizer.json").write_text(json.dumps(tokenizer), encoding="utf-8")
    with pytest.raises(ConfigError, match="no such token"):
        CrossEncoder(no_yes)

    scaled = tmp_path / "rope-scaling"
    shutil.copytree(path, scaled)
    config = json.loads((scaled / "config.json").read_text(encoding="utf-8"))
    config["rope_parameters"] = {"rope_type": "yarn", "rope_theta": 1000.0, "factor": 4.0}
    (scaled / "config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"config.json: unsupported rope_parameters rope_type 'yarn'"):
        CrossEncoder(scaled)
