"""`minibert compare --onnx`: ONNX graphs exported here, from the golden fixtures, the ways people deploy them.

Clean graphs must compare clean with every stage located: torch.onnx at opset 17 (LayerNormalization) and at
opset 14 with SDPA attention (what optimum and sentence-transformers' backend="onnx" export: LayerNorm written
out) for BERT, XLM-R and ModernBERT (pre-LN); onnxruntime's transformer optimizer output (fused
EmbedLayerNormalization, Attention, SkipLayerNormalization). quantize_dynamic's int8 graph diverges where
int8 first enters (the quantized word embeddings) yet ranks alike. Bugs planted in graphs must be found at
their stage: one initializer changed in one layer, a tanh GELU, XLM-R positions from 0, the pooler left out.
Every graph is exported once per module (tools/export_onnx.py's functions).
"""

import contextlib
import importlib.util
import io
import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import transformers
from onnx import numpy_helper

from minibert import CrossEncoder
from minibert.cli import main
from minibert.oracle import onnx_graph

ROOT = Path(__file__).resolve().parents[1]
GOLDENS = ROOT / "tests" / "fixtures" / "goldens"
SPEC = importlib.util.spec_from_file_location("export_onnx", ROOT / "tools" / "export_onnx.py")
export_onnx = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(export_onnx)


def golden(name):
    meta = json.loads((GOLDENS / name / "golden.json").read_text(encoding="utf-8"))
    return [tuple(p) for p in meta["pairs"]], meta["max_length"]


def run_cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in argv])
    return status, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture(scope="module")
def pairs_file(workdir):
    """name -> the golden fixture's pairs as a JSON lines file."""
    def get(name):
        path = workdir / f"{name}.jsonl"
        if not path.exists():
            path.write_text("".join(json.dumps({"query": q, "passage": p}) + "\n" for q, p in golden(name)[0]),
                            encoding="utf-8")
        return path
    return get


@pytest.fixture(scope="module")
def graphs(workdir):
    """key -> an ONNX graph, exported once: (fixture, variant)."""
    made = {}

    def get(name, variant="plain"):
        key = (name, variant)
        if key not in made:
            made[key] = build(name, variant, workdir / f"{name}-{variant}.onnx", get)
        return made[key]
    return get


def build(name, variant, path, get):
    model, names = export_onnx.load(GOLDENS / name)
    if variant == "plain":
        return export_onnx.export(export_onnx.logits_only(model, names), path, names)
    if variant == "opset14-sdpa":   # as optimum exports (its BERT default: opset 14, SDPA attention)
        model = transformers.AutoModelForSequenceClassification.from_pretrained(
            GOLDENS / name, attn_implementation="sdpa").eval()
        return export_onnx.export(export_onnx.logits_only(model, names), path, names, opset=14)
    if variant == "optimized":
        return export_onnx.optimize(get(name), path, GOLDENS / name)
    if variant == "int8":
        return export_onnx.quantize(get(name), path)
    if variant == "gelu-tanh":      # the same weights, the tanh approximation of GELU
        model = transformers.AutoModelForSequenceClassification.from_pretrained(
            GOLDENS / name, attn_implementation="eager", hidden_act="gelu_pytorch_tanh").eval()
        return export_onnx.export(export_onnx.logits_only(model, names), path, names)
    if variant == "layer1-bias":    # one initializer changed: layer 1's attention LayerNorm bias, + 0.05
        graph = onnx.load(str(get(name)))
        target = next(t for t in graph.graph.initializer if "layer.1.attention.output.LayerNorm.bias" in t.name)
        target.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(target) + np.float32(0.05), target.name))
        onnx.save(graph, str(path))
        return path
    if variant == "positions-from-0":   # RoBERTa's positions count from padding_idx + 1; these from 0
        return export_onnx.export(FromZero(model), path, names)
    if variant == "no-pooler":          # the classifier on the raw [CLS] state
        return export_onnx.export(NoPooler(model), path, names)
    if variant == "two-layers":         # the first two of three layers: a graph of another model
        model = transformers.AutoModelForSequenceClassification.from_pretrained(
            GOLDENS / name, attn_implementation="eager", num_hidden_layers=2).eval()
        return export_onnx.export(export_onnx.logits_only(model, names), path, names)
    if variant == "sigmoid":            # a graph that ends with the sigmoid
        return export_onnx.export(Sigmoid(model), path, names)
    raise AssertionError(variant)


class FromZero(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        positions = torch.arange(input_ids.shape[1]).expand_as(input_ids)
        return self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions).logits


class NoPooler(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        hidden = self.model.bert(input_ids=input_ids, attention_mask=attention_mask,
                                 token_type_ids=token_type_ids).last_hidden_state
        return self.model.classifier(hidden[:, 0])


class Sigmoid(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        return torch.sigmoid(self.model(input_ids=input_ids, attention_mask=attention_mask,
                                        token_type_ids=token_type_ids).logits)


def compare(name, graph, pairs_file, *extra):
    status, out, err = run_cli("compare", "--model", GOLDENS / name, "--onnx", graph, "--pairs", pairs_file(name),
                               "--max-length", golden(name)[1], "--json", *extra)
    assert status in (0, 1), err
    return status, json.loads(out)


def stage_names(name):
    ce = CrossEncoder(GOLDENS / name)
    L = ce.config.num_hidden_layers
    return ["embeddings", *(f"layer_{i}" for i in range(L)), ce.family.head_stage, "logits"]


def ops_of(path) -> set:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


# ---------------------------------------------------------------------------------------------
# clean graphs


@pytest.mark.parametrize("name,variant,norm", [
    ("tiny-l3", "plain", "LayerNormalization"),
    ("tiny-l3", "opset14-sdpa", "ReduceMean"),
    ("xlmr-unigram", "plain", "LayerNormalization"),
    ("xlmr-unigram", "opset14-sdpa", "ReduceMean"),
    ("modernbert-cls", "plain", "LayerNormalization"),
])
def test_exports_compare_clean_with_every_stage_located(graphs, pairs_file, name, variant, norm):
    graph = graphs(name, variant)
    assert norm in ops_of(graph) and "Softmax" in ops_of(graph)       # the structure this case is about
    status, report = compare(name, graph, pairs_file)
    assert status == 0, report
    assert report["first_divergence"] is None and report["tokens_match"] is None
    assert [s["name"] for s in report["stages"]] == stage_names(name)
    assert report["onnx"]["not_located"] == {}
    assert max(s["max_abs"] for s in report["stages"]) <= 2e-5, report["stages"]


def test_modernbert_layers_are_the_residual_stream(graphs):
    """Pre-LN: a ModernBERT layer's output is the sum its next layer normalizes, not a norm's output; the last
    one is the final norm's."""
    graph = onnx_graph.Graph(graphs("modernbert-cls"))
    located = onnx_graph.locate(graph, stage_names("modernbert-cls"))
    ops = {stage: graph.op(tensor) for stage, tensor in located.tensors.items()}
    assert ops == {"embeddings": "LayerNormalization", "layer_0": "Add", "layer_1": "Add",
                   "layer_2": "LayerNormalization", "pooled": "LayerNormalization", "logits": "Gemm"}


def test_onnxruntime_optimizer_output_compares_clean(graphs, pairs_file):
    graph = graphs("tiny-l3", "optimized")
    assert {"EmbedLayerNormalization", "Attention", "SkipLayerNormalization"} <= ops_of(graph)
    assert "Softmax" not in ops_of(graph) and "LayerNormalization" not in ops_of(graph)
    status, report = compare("tiny-l3", graph, pairs_file)
    assert status == 0, report
    assert report["onnx"]["not_located"] == {}
    assert [s["name"] for s in report["stages"]] == stage_names("tiny-l3")
    assert max(s["max_abs"] for s in report["stages"]) <= 2e-5, report["stages"]
    found = report["onnx"]["located"]
    by_op = onnx_graph.Graph(graph)
    assert by_op.op(found["embeddings"]) == "EmbedLayerNormalization"
    assert {by_op.op(found[f"layer_{i}"]) for i in range(3)} == {"SkipLayerNormalization"}


def test_int8_graph_diverges_where_int8_enters_and_still_ranks_alike(graphs, pairs_file):
    graph = graphs("tiny-l3", "int8")
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops_of(graph)
    status, report = compare("tiny-l3", graph, pairs_file, "--atol", "1e-3", "--rtol", "1e-3")
    assert status == 1 and report["onnx"]["not_located"] == {}
    stages = {s["name"]: s for s in report["stages"]}
    first = report["first_divergence"]["stage"]
    assert first == "embeddings", report     # the word embeddings are int8 (a quantized Gather)
    diagnosis = report["first_divergence"]["diagnosis"]
    assert "the graph is quantized (" in diagnosis and "minibert agree --onnx" in diagnosis, diagnosis
    # int8 kernels differ by CPU (VNNI or not): 0.989 seen on an AVX-512 machine, above 0.99 on an AVX2 one
    assert stages["logits"]["min_cosine"] > 0.98 and stages["logits"]["max_abs"] < 0.5, stages["logits"]


def test_a_graph_ending_in_a_sigmoid_is_compared_before_it(graphs, pairs_file):
    status, report = compare("tiny-l1", graphs("tiny-l1", "sigmoid"), pairs_file)
    assert status == 0, report
    assert any("Sigmoid" in note for note in report["onnx"]["notes"])
    status, out, _ = run_cli("compare", "--model", GOLDENS / "tiny-l1", "--onnx", graphs("tiny-l1", "sigmoid"),
                             "--pairs", pairs_file("tiny-l1"))
    assert status == 0 and "note: the graph ends with a Sigmoid" in out and "every stage agrees" in out, out
    assert re.search(r"^  pooled +<- \S+$", out, re.MULTILINE), out


# ---------------------------------------------------------------------------------------------
# planted bugs, each found at its stage


def test_one_changed_initializer_is_found_at_its_layer(graphs, pairs_file):
    status, report = compare("tiny-l3", graphs("tiny-l3", "layer1-bias"), pairs_file)
    assert status == 1
    ok = {s["name"]: s["ok"] for s in report["stages"]}
    assert ok["embeddings"] and ok["layer_0"] and not ok["layer_1"]
    assert report["first_divergence"]["stage"] == "layer_1"


def test_a_tanh_gelu_is_found_and_diagnosed(graphs, pairs_file):
    status, report = compare("tiny-l3", graphs("tiny-l3", "gelu-tanh"), pairs_file)
    assert status == 1
    divergence = report["first_divergence"]
    assert divergence["stage"] == "layer_0" and "tanh approximation of GELU" in divergence["diagnosis"], divergence


def test_xlmr_positions_from_zero_are_diagnosed_at_the_embeddings(graphs, pairs_file):
    status, report = compare("xlmr-unigram", graphs("xlmr-unigram", "positions-from-0"), pairs_file)
    assert status == 1
    divergence = report["first_divergence"]
    assert divergence["stage"] == "embeddings" and "padding_idx + 1" in divergence["diagnosis"], divergence


def test_a_missing_pooler_is_found_at_the_head(graphs, pairs_file):
    status, report = compare("tiny-l3", graphs("tiny-l3", "no-pooler"), pairs_file)
    assert status == 1
    assert all(s["ok"] for s in report["stages"] if s["name"] not in ("pooled", "logits"))
    divergence = report["first_divergence"]
    assert divergence["stage"] == "pooled" and "pooler's dense + tanh is missing" in divergence["diagnosis"]


def test_stages_that_cannot_be_located_are_named_and_the_rest_compared(graphs, pairs_file):
    status, report = compare("tiny-l3", graphs("tiny-l3", "two-layers"), pairs_file)
    assert status == 1
    missing = report["onnx"]["not_located"]
    assert list(missing) == ["embeddings", "layer_0", "layer_1", "layer_2"]
    assert "found 2 attention nodes" in missing["layer_0"] and "3 layers" in missing["layer_0"]
    assert [s["name"] for s in report["stages"]] == ["pooled", "logits"]
    status, out, _ = run_cli("compare", "--model", GOLDENS / "tiny-l3", "--onnx", graphs("tiny-l3", "two-layers"),
                             "--pairs", pairs_file("tiny-l3"))
    assert status == 1 and "not located in the graph: embeddings (found 2 attention nodes" in out, out


# ---------------------------------------------------------------------------------------------
# usage errors


def test_usage_errors_are_one_line_and_exit_2(graphs, pairs_file, workdir):
    model, pairs = GOLDENS / "tiny-l1", pairs_file("tiny-l1")
    not_onnx = workdir / "not.onnx"
    not_onnx.write_bytes(b"this is not a protobuf \xff\xfe")
    renamed = workdir / "renamed-input.onnx"
    graph = onnx.load(str(graphs("tiny-l1")))
    graph.graph.input[0].name = "ids"
    for node in graph.graph.node:
        node.input[:] = ["ids" if name == "input_ids" else name for name in node.input]
    onnx.save(graph, str(renamed))
    for argv, words in (
            (["--onnx", graphs("tiny-l1")], "--onnx needs --pairs"),
            (["theirs.safetensors", "--onnx", graphs("tiny-l1"), "--pairs", pairs], "not both"),
            (["--pairs", pairs], "give THEIRS"),
            (["--onnx", not_onnx, "--pairs", pairs], "not an ONNX model"),
            (["--onnx", workdir / "missing.onnx", "--pairs", pairs], "no such file"),
            (["--onnx", renamed, "--pairs", pairs], "graph input 'ids' is not one minibert can feed")):
        status, out, err = run_cli("compare", "--model", model, *argv)
        assert status == 2 and out == "" and words in err and len(err.splitlines()) == 1, (argv, err)
