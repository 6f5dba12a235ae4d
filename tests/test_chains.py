"""sentence-transformers 6 module chains (modules.json): minibert against sentence-transformers' own CrossEncoder.

Every chain here is built by sentence-transformers itself, in the test, from the encoder of a golden
fixture (tests/fixtures/goldens: one per family, with its tokenizer; the encoder read by transformers'
AutoModel and saved bare) and modules whose every weight is re-drawn from a seeded generator, then saved
with CrossEncoder.save, as the Ettin rerankers are; minibert then reads the saved directory on its own.
Numbers first (|minibert - sentence-transformers| <= 1e-5 + 1e-5 |score|, predict with the Identity
activation), then every module's output as a stage, then decisions.

Needs torch, transformers and sentence-transformers (skipped without them).
"""

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
st = pytest.importorskip("sentence_transformers")

from torch import nn  # noqa: E402

from safetensors.numpy import load_file, save_file  # noqa: E402

from minibert import ConfigError, CrossEncoder, ModelFormatError, SentenceEncoder  # noqa: E402
from minibert.cli import main  # noqa: E402
from minibert.models import FAMILIES, family_of  # noqa: E402
from minibert.oracle import trace_from_sentence_transformers  # noqa: E402
from minibert.runtime.load import load_config  # noqa: E402
from op_sets import OP_SETS  # noqa: E402

from sentence_transformers.cross_encoder.modules import Dense, Transformer  # noqa: E402
from sentence_transformers.sentence_transformer.modules import Dropout, LayerNorm, Normalize, Pooling  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::minibert.TruncationWarning")

GOLDENS = Path(__file__).parent / "fixtures" / "goldens"
ATOL = RTOL = 1e-5
MODELS = sorted(p.parent.name for p in GOLDENS.glob("*/golden.npz"))


def custom_code(name: str) -> bool:
    """Is the fixture's model custom code (config.json's auto_map), which sentence-transformers' Transformer
    (transformers' AutoModel) runs only with trust_remote_code?"""
    return "auto_map" in json.loads((GOLDENS / name / "config.json").read_text(encoding="utf-8"))


def encoder_chain(name: str) -> bool:
    """Can the fixture's model be an encoder chain's Transformer: in transformers (custom code needs
    trust_remote_code) and an encoder (a decoder reranker's chain is Transformer(text-generation) + LogitScore:
    tests/parity/test_qwen3.py)?"""
    return not custom_code(name) and not family_of(load_config(GOLDENS / name)).decoder


def first_fixture_of_each_family() -> list[str]:
    """One golden model fixture per encoder family the registry holds whose model is in transformers (CamemBERT,
    RoBERTa's model, has none; a family of custom code cannot be built into a chain here)."""
    chosen = {}
    for name in MODELS:
        if encoder_chain(name):
            chosen.setdefault(family_of(load_config(GOLDENS / name)).name, name)
    return sorted(chosen.values())


BACKBONES = first_fixture_of_each_family()
IN_TRANSFORMERS = {family_of(load_config(GOLDENS / n)).name for n in MODELS if encoder_chain(n)}


def pairs_of(name: str) -> list[tuple[str, str]]:
    return [tuple(p) for p in json.loads((GOLDENS / name / "golden.json").read_text(encoding="utf-8"))["pairs"]]


def redraw_(module: nn.Module, seed: int) -> nn.Module:
    """Every parameter re-drawn (LayerNorm around 1): default init (ones, zeros) hides swapped or missing weights."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(module.named_parameters()):
            z = torch.randn(p.shape, generator=g)
            p.copy_(1.0 + 0.2 * z if name.startswith("norm.") and name.endswith("weight") else 0.4 * z)
    return module


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    """The bare encoder of a golden fixture, saved by transformers' AutoModel with its tokenizer."""
    cache = {}

    def get(name: str) -> tuple[Path, int]:
        if name not in cache:
            out = tmp_path_factory.mktemp(f"{name}-backbone")
            model = transformers.AutoModel.from_pretrained(GOLDENS / name, dtype=torch.float32)
            model.save_pretrained(out)
            for f in (GOLDENS / name).iterdir():
                if f.name.startswith(("tokenizer", "vocab", "special_tokens", "merges")):
                    shutil.copy(f, out / f.name)
            # sentence-transformers caps the tokenizer's length at max_position_embeddings, which for the RoBERTa
            # family runs past the position table (its positions start at padding_idx + 1): say the real limit
            tokenizer_config = out / "tokenizer_config.json"
            raw = json.loads(tokenizer_config.read_text()) if tokenizer_config.is_file() else {}
            raw["model_max_length"] = min(raw.get("model_max_length", 10 ** 6), load_config(GOLDENS / name).max_tokens)
            tokenizer_config.write_text(json.dumps(raw))
            cache[name] = out, model.config.hidden_size
        return cache[name]
    return get


def save_chain(where: Path, backbone_dir: Path, modules: list, seed: int = 0, activation=nn.Identity(),
               prompts=None, default_prompt_name=None) -> Path:
    """A CrossEncoder of sentence-transformers' Transformer (feature-extraction) and `modules`, saved.

    A Dense right before a LayerNorm gets small weights, so that the LayerNorm's input varies by about 1e-5:
    then its eps (1e-5, fixed in sentence-transformers) shows in the numbers, and a wrong one fails."""
    for i, module in enumerate(modules):
        redraw_(module, seed + i)
        if isinstance(module, Dense) and i + 1 < len(modules) and isinstance(modules[i + 1], LayerNorm):
            with torch.no_grad():
                module.linear.weight.mul_(2e-3)
    transformer = Transformer(str(backbone_dir), transformer_task="feature-extraction")
    model = st.CrossEncoder(modules=[transformer, *modules], device="cpu", activation_fn=activation,
                            prompts=prompts, default_prompt_name=default_prompt_name)
    model.save(str(where))
    return where


def st_predict(model_dir: Path, pairs, **kwargs) -> np.ndarray:
    model = st.CrossEncoder(str(model_dir), device="cpu")
    return np.asarray(model.predict(pairs, activation_fn=nn.Identity(), batch_size=8, **kwargs), dtype=np.float32)


def assert_close(got, want, what: str):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    excess = np.abs(got - want) - (ATOL + RTOL * np.abs(want))
    print(f"{what}: max |minibert - sentence-transformers| {np.abs(got - want).max():.2e}")
    assert excess.max() <= 0, f"{what}: max |diff| {np.abs(got - want).max():.2e}"


def ettin_modules(H: int) -> list:
    """Ettin's reranker head: Pooling(cls) -> Dense(H -> H, no bias, GELU) -> LayerNorm -> Dense(H -> 1)."""
    return [Pooling(H, pooling_mode="cls"), Dense(H, H, bias=False, activation_function=nn.GELU()), LayerNorm(H),
            Dense(H, 1, activation_function=nn.Identity(), module_output_name="scores")]


# ---------------------------------------------------------------------------------------------
# Ettin's chain on every family's encoder


@pytest.fixture(scope="module")
def ettin(backbone, tmp_path_factory):
    cache = {}

    def get(name: str) -> Path:
        if name not in cache:
            backbone_dir, H = backbone(name)
            cache[name] = save_chain(tmp_path_factory.mktemp(f"{name}-ettin"), backbone_dir, ettin_modules(H), seed=7)
        return cache[name]
    return get


def test_every_family_in_transformers_has_a_backbone():
    assert {family_of(load_config(GOLDENS / n)).name for n in BACKBONES} == IN_TRANSFORMERS
    assert len(IN_TRANSFORMERS) >= 7   # every family but CamemBERT (a tokenizer fixture) and the custom-code ones
    assert IN_TRANSFORMERS <= {f.name for f in FAMILIES}


@pytest.mark.parametrize("op_set", OP_SETS)
@pytest.mark.parametrize("name", BACKBONES)
def test_ettin_chain_on_every_family(ettin, name, op_set):
    model_dir, pairs = ettin(name), pairs_of(name)
    ce = CrossEncoder(model_dir, ops=op_set)
    assert ce.pipeline is not None and ce.num_labels == 1 and ce.stored_activation == "Identity"
    assert_close(ce.predict(pairs), st_predict(model_dir, pairs), f"{name} ettin [{op_set}]")


@pytest.mark.parametrize("name", BACKBONES)
def test_every_module_output_is_a_stage(ettin, tmp_path, name):
    """sentence-transformers' own trace (the encoder's hidden states, every module's output, the scores) against
    minibert's stages on its token ids: `minibert compare` finds every stage, 1_Pooling, 2_Dense, 3_LayerNorm and
    logits included, within 1e-5."""
    model_dir, pairs = ettin(name), pairs_of(name)[:6]
    trace = tmp_path / "theirs.safetensors"
    trace_from_sentence_transformers(st.CrossEncoder(str(model_dir), device="cpu"), pairs, trace)
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps({"query": q, "passage": p}) + "\n" for q, p in pairs))
    status, out = run_cli("compare", "--model", model_dir, trace, "--pairs", tmp_path / "pairs.jsonl", "--json",
                          "--atol", ATOL, "--rtol", RTOL)
    report = json.loads(out)
    assert status == 0 and report["tokens_match"] is True, report
    names = [s["name"] for s in report["stages"]]
    assert names[-4:] == ["1_Pooling", "2_Dense", "3_LayerNorm", "logits"] and "embeddings" in names, names
    print(f"{name}: worst stage max abs {max(s['max_abs'] for s in report['stages']):.2g}")
    # the same trace with a planted difference in one module fails at that module
    planted = load_file(str(trace))
    planted["2_Dense"][0, 1] += 0.01
    save_file(planted, str(tmp_path / "planted.safetensors"), metadata={"format": "minibert-trace/1",
                                                                       "layout": "padded"})
    status, out = run_cli("compare", "--model", model_dir, tmp_path / "planted.safetensors", "--json")
    assert status == 1 and json.loads(out)["first_divergence"]["stage"] == "2_Dense"


def run_cli(*argv) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        status = main([str(a) for a in argv])
    return status, out.getvalue()


# ---------------------------------------------------------------------------------------------
# every pooling mode and module, on BERT's encoder


POOLINGS = {"mean": "mean", "max": "max", "mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
            "weightedmean": "weightedmean", "lasttoken": "lasttoken", "cls+mean+max": ["cls", "mean", "max"]}
BERT = BACKBONES[0] if "tiny-l1" not in BACKBONES else "tiny-l1"


@pytest.mark.parametrize("op_set", OP_SETS)
@pytest.mark.parametrize("mode", sorted(POOLINGS))
def test_every_pooling_mode(backbone, tmp_path, mode, op_set):
    backbone_dir, H = backbone(BERT)
    width = H * (3 if isinstance(POOLINGS[mode], list) else 1)
    model_dir = save_chain(tmp_path / "chain", backbone_dir, [
        Pooling(H, pooling_mode=POOLINGS[mode]),
        Dense(width, 1, activation_function=nn.Identity(), module_output_name="scores")], seed=3)
    pairs = pairs_of(BERT)
    assert_close(CrossEncoder(model_dir, ops=op_set).predict(pairs), st_predict(model_dir, pairs),
                 f"pooling {mode} [{op_set}]")


ACTIVATION_CLASSES = {"Identity": nn.Identity, "Tanh": nn.Tanh, "GELU": nn.GELU, "ReLU": nn.ReLU, "Sigmoid": nn.Sigmoid}


@pytest.mark.parametrize("act", sorted(ACTIVATION_CLASSES))
def test_dense_activations_normalize_dropout_and_several_labels(backbone, tmp_path, act):
    """A longer chain: mean pooling, Dense (no bias, each activation), Dropout, LayerNorm, Normalize, Dense to 3
    labels; sentence-transformers' predict gives [n, 3]."""
    backbone_dir, H = backbone(BERT)
    model_dir = save_chain(tmp_path / "chain", backbone_dir, [
        Pooling(H, pooling_mode="mean"), Dense(H, 17, bias=False, activation_function=ACTIVATION_CLASSES[act]()),
        Dropout(0.3), LayerNorm(17), Normalize(),
        Dense(17, 3, activation_function=nn.Identity(), module_output_name="scores")], seed=5)
    pairs = pairs_of(BERT)
    ce = CrossEncoder(model_dir)
    assert ce.num_labels == 3 and ce.id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}
    assert_close(ce.predict(pairs), st_predict(model_dir, pairs), f"dense {act}")


def test_a_dense_activation_the_file_leaves_out_is_tanh(backbone, tmp_path):
    """sentence-transformers' Dense defaults to nn.Tanh when its config names no activation_function."""
    backbone_dir, H = backbone(BERT)
    model_dir = save_chain(tmp_path / "chain", backbone_dir, [
        Pooling(H, pooling_mode="cls"), Dense(H, H, activation_function=nn.Identity()),
        Dense(H, 1, activation_function=nn.Identity(), module_output_name="scores")], seed=9)
    config = model_dir / "2_Dense" / "config.json"
    raw = json.loads(config.read_text())
    del raw["activation_function"]
    config.write_text(json.dumps(raw))
    pairs = pairs_of(BERT)
    assert_close(CrossEncoder(model_dir).predict(pairs), st_predict(model_dir, pairs), "dense default activation")


# ---------------------------------------------------------------------------------------------
# what config_sentence_transformers.json says: the stored activation, prompts


@pytest.mark.parametrize("activation", [nn.Sigmoid(), nn.Identity(), nn.Tanh()], ids=["sigmoid", "identity", "tanh"])
def test_raw_scores_by_default_and_the_stored_activation_by_name(ettin, backbone, tmp_path, activation):
    backbone_dir, H = backbone(BERT)
    model_dir = save_chain(tmp_path / "chain", backbone_dir, ettin_modules(H), seed=7, activation=activation)
    pairs = pairs_of(BERT)
    ce = CrossEncoder(model_dir)
    default = st.CrossEncoder(str(model_dir), device="cpu").predict(pairs)   # the stored activation applied
    assert_close(ce.predict(pairs, activation="stored"), default, "stored activation")
    assert_close(ce.predict(pairs), st_predict(model_dir, pairs), "raw")      # minibert: raw unless asked
    assert ce.stored_activation == type(activation).__name__


def test_prompts_go_before_the_query(backbone, tmp_path):
    backbone_dir, H = backbone(BERT)
    model_dir = save_chain(tmp_path / "chain", backbone_dir, ettin_modules(H), seed=7,
                           prompts={"web": "query: ", "code": "find code: "}, default_prompt_name="web")
    pairs = pairs_of(BERT)[:8]
    ce = CrossEncoder(model_dir)
    assert_close(ce.predict(pairs), st_predict(model_dir, pairs), "default prompt")
    assert_close(ce.predict(pairs, prompt_name="code"), st_predict(model_dir, pairs, prompt_name="code"), "named")
    assert_close(ce.predict(pairs, prompt="x: "), st_predict(model_dir, pairs, prompt="x: "), "explicit prompt")
    np.testing.assert_array_equal(ce.predict(pairs), ce.predict([("query: " + q, p) for q, p in pairs], prompt=""))
    assert [h["corpus_id"] for h in ce.rank(pairs[0][0], [p for _, p in pairs])] == \
        [h["corpus_id"] for h in ce.rank("query: " + pairs[0][0], [p for _, p in pairs], prompt="")]


# ---------------------------------------------------------------------------------------------
# directories sentence-transformers 6 writes for other cross-encoders


def test_a_sequence_classification_transformer_alone_is_the_familys_head(tmp_path):
    """sentence-transformers 6 re-saves a transformers *ForSequenceClassification as one Transformer module
    (task sequence-classification): the same model as the plain directory."""
    st.CrossEncoder(str(GOLDENS / "tiny-l1"), device="cpu").save(str(tmp_path / "resaved"))
    assert json.loads((tmp_path / "resaved" / "sentence_bert_config.json").read_text())["transformer_task"] == \
        "sequence-classification"
    pairs = pairs_of("tiny-l1")
    resaved, plain = CrossEncoder(tmp_path / "resaved"), CrossEncoder(GOLDENS / "tiny-l1")
    np.testing.assert_array_equal(resaved.predict(pairs), plain.predict(pairs))
    assert resaved.stored_activation == "Sigmoid"


def test_a_sentence_encoder_with_dense_and_layer_norm(backbone, tmp_path):
    """SentenceEncoder runs the same modules: Pooling, Dense, LayerNorm, Normalize, against SentenceTransformer."""
    backbone_dir, H = backbone(BERT)
    modules = [Pooling(H, pooling_mode="mean"), Dense(H, 11, activation_function=nn.Tanh()), LayerNorm(11),
               Normalize()]
    for i, module in enumerate(modules):
        redraw_(module, 30 + i)
    model = st.SentenceTransformer(modules=[Transformer(str(backbone_dir)), *modules], device="cpu")
    model.save(str(tmp_path / "st"))
    texts = [q for q, _ in pairs_of(BERT)]
    want = st.SentenceTransformer(str(tmp_path / "st"), device="cpu").encode(texts, convert_to_numpy=True)
    enc = SentenceEncoder(tmp_path / "st")
    assert enc.get_embedding_dimension() == 11
    assert_close(enc.encode(texts), want, "sentence encoder chain")


def test_the_commands_the_server_and_the_batch_scorer_read_a_chain(ettin, tmp_path):
    """score, rank, explain and trace on the command line, the server's backend and the Ray Data scorer: all
    through CrossEncoder, so all give predict's numbers."""
    model_dir, pairs = ettin(BERT), pairs_of(BERT)[:5]
    want = CrossEncoder(model_dir).predict(pairs)
    (tmp_path / "pairs.tsv").write_text("".join(f"{q}\t{p}\n" for q, p in pairs))
    status, out = run_cli("score", "--model", model_dir, tmp_path / "pairs.tsv")
    assert status == 0 and np.allclose([float(line) for line in out.split()], want, atol=1e-6)
    query = pairs[0][0]
    (tmp_path / "passages.txt").write_text("".join(p + "\n" for q, p in pairs if q == query))
    status, out = run_cli("rank", "--model", model_dir, "-q", query, tmp_path / "passages.txt")
    assert status == 0 and out.count("\n") == sum(q == query for q, _ in pairs)
    status, out = run_cli("explain", "--model", model_dir, "-q", query, "-p", pairs[0][1])
    assert status == 0 and "1_Pooling" in out and "3_LayerNorm" in out, out
    status, _ = run_cli("trace", "--model", model_dir, tmp_path / "pairs.tsv", "--out", tmp_path / "ours.safetensors")
    assert status == 0 and "2_Dense" in load_file(str(tmp_path / "ours.safetensors"))
    from minibert.serve.backend import Backend
    backend = Backend.load(model_dir)
    assert backend.kind == "reranker" and np.allclose(backend.run(pairs)[:, 0], want, atol=1e-6)
    from minibert.batch import CrossEncoderScorer
    scored = CrossEncoderScorer(str(model_dir))({"query": np.array([q for q, _ in pairs], dtype=object),
                                                  "passage": np.array([p for _, p in pairs], dtype=object)})
    assert np.allclose(scored["score"], want, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# chains minibert refuses, by name


def _edit(path: Path, **changes):
    raw = json.loads(path.read_text())
    raw.update(changes)
    raw = {k: v for k, v in raw.items() if v is not None}
    path.write_text(json.dumps(raw))


@pytest.mark.parametrize("change, error, fragments", [
    (lambda d: shutil.rmtree(d / "2_Dense"), ModelFormatError, ["2_Dense/config.json", "not found"]),
    (lambda d: (d / "2_Dense" / "model.safetensors").unlink(), ModelFormatError,
     ["2_Dense", "no weights", "model.safetensors or pytorch_model.bin"]),
    (lambda d: _edit(d / "2_Dense" / "config.json", in_features=5), ModelFormatError,
     ["2_Dense/config.json", "in_features is 5"]),
    (lambda d: _edit(d / "2_Dense" / "config.json", bias=True), ModelFormatError,
     ["2_Dense/model.safetensors", "missing tensor linear.bias"]),
    (lambda d: _edit(d / "2_Dense" / "config.json", activation_function="torch.nn.modules.activation.Mish"),
     ConfigError, ["2_Dense/config.json", "'activation_function'", "Mish"]),
    (lambda d: _edit(d / "2_Dense" / "config.json", use_residual=True), ConfigError, ["'use_residual'"]),
    (lambda d: _edit(d / "config_sentence_transformers.json", model_type=None), ModelFormatError,
     ["model.safetensors", "bare ModernBERT encoder", "no classification head"]),
    (lambda d: _edit(d / "config_sentence_transformers.json", activation_fn="my.Activation"), ConfigError,
     ["config_sentence_transformers.json", "'activation_fn'"]),
    (lambda d: _edit(d / "4_Dense" / "config.json", module_output_name="sentence_embedding"), ModelFormatError,
     ["modules.json", "end with 'sentence_embedding'", "'scores'"]),
    (lambda d: (d / "modules.json").write_text(json.dumps(
        json.loads((d / "modules.json").read_text()) + [{"idx": 5, "name": "5", "path": "5_Router",
                                                         "type": "sentence_transformers.base.modules.router.Router"}])),
     ModelFormatError, ["'5_Router' (Router)", "not implemented"]),
    (lambda d: _edit(d / "sentence_bert_config.json", modality_config={"message": {"method": "forward"}}),
     ConfigError, ["sentence_bert_config.json", "'modality_config'", "message"]),
], ids=["no-module-folder", "no-module-weights", "dense-shape", "dense-bias-missing", "unknown-activation",
        "residual", "not-a-cross-encoder", "untrusted-activation", "no-scores", "router", "chat-template"])
def test_bad_chains_are_named(ettin, tmp_path, change, error, fragments):
    model_dir = tmp_path / "chain"
    shutil.copytree(ettin(BERT if "no classification head" not in fragments else "modernbert-cls"), model_dir)
    change(model_dir)
    with pytest.raises(error) as caught:
        CrossEncoder(model_dir)
    for fragment in fragments:
        assert fragment in str(caught.value), (fragment, str(caught.value))
