"""minibert trace / minibert compare: trace files, stage-by-stage comparison, and the diagnoses.

Clean traces (transformers padded, minibert packed, and the other way round) of the golden pairs must
compare clean; a trace with a planted bug must diverge at the right stage with the right diagnosis.
Every bug but one is planted in transformers itself (the independent producer); the position bug is
planted here in minibert's BERT, whose position table is shifted as a backend numbering positions off by
padding_idx + 1 would read it, and in a transformers RoBERTa in tests/test_oracle_families.py.
"""

import contextlib
import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from safetensors import safe_open  # noqa: E402
from safetensors.numpy import load_file, save_file  # noqa: E402

from minibert import (  # noqa: E402
    CrossEncoder,
    TraceError,
    oracle,  # noqa: E402
)
from minibert.cli import main  # noqa: E402
from minibert.models import Batch  # noqa: E402

GOLDENS = Path(__file__).parent / "fixtures" / "goldens"
MODELS = ("tiny-l1", "tiny-l3")


def golden_pairs(name):
    return [tuple(p) for p in json.loads((GOLDENS / name / "golden.json").read_text(encoding="utf-8"))["pairs"]]


@pytest.fixture(scope="module")
def hf():
    """name -> (transformers model, tokenizer), eval mode, eager attention."""
    loaded = {}

    def get(name):
        if name not in loaded:
            model = transformers.AutoModelForSequenceClassification.from_pretrained(
                GOLDENS / name, attn_implementation="eager").eval()
            loaded[name] = model, transformers.AutoTokenizer.from_pretrained(GOLDENS / name)
        return loaded[name]
    return get


@pytest.fixture(scope="module")
def models():
    loaded = {}

    def get(name):
        if name not in loaded:
            loaded[name] = CrossEncoder(GOLDENS / name, max_length=json.loads(
                (GOLDENS / name / "golden.json").read_text(encoding="utf-8"))["max_length_arg"])
        return loaded[name]
    return get


def run_cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in argv])
    return status, out.getvalue(), err.getvalue()


def write_pairs(path, pairs):
    path.write_text("".join(json.dumps({"query": q, "passage": p}) + "\n" for q, p in pairs), encoding="utf-8")
    return path


def compare_json(model_dir, trace_path, *extra):
    status, out, err = run_cli("compare", "--model", model_dir, trace_path, "--json", *extra)
    assert status in (0, 1), err
    return status, json.loads(out)


# ----------------------------------------------------------------------------------------------
# clean traces


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("layout", ["padded", "packed"])
def test_transformers_trace_compares_clean(tmp_path, hf, models, name, layout):
    model, tokenizer = hf(name)
    pairs, ce = golden_pairs(name), models(name)
    path = tmp_path / "theirs.safetensors"
    oracle.trace_from_transformers(model, tokenizer, pairs, path, layout=layout, max_length=ce.max_length)
    status, report = compare_json(GOLDENS / name, path, "--pairs", write_pairs(tmp_path / "p.jsonl", pairs),
                                  "--max-length", ce.max_length)
    assert status == 0, report
    assert report["tokens_match"] is True and report["first_divergence"] is None
    assert [s["name"] for s in report["stages"]] == ["embeddings", *[f"layer_{i}" for i in range(
        ce.config.num_hidden_layers)], "pooled", "logits"]
    assert all(s["ok"] and s["max_abs"] < 1e-5 and s["min_cosine"] > 0.999999 for s in report["stages"])


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("layout", ["packed", "padded"])
def test_minibert_trace_command_compares_clean(tmp_path, models, name, layout):
    ce, pairs = models(name), golden_pairs(name)
    pairs_file, path = write_pairs(tmp_path / "p.jsonl", pairs), tmp_path / "ours.safetensors"
    status, _, err = run_cli("trace", "--model", GOLDENS / name, pairs_file, "--out", path, "--layout", layout,
                             "--max-length", ce.max_length)
    assert status == 0, err
    tensors = load_file(str(path))  # the safetensors package reads what minibert writes
    with safe_open(str(path), "np") as f:
        assert f.metadata() == {"format": "minibert-trace/1", "layout": layout, "producer": "minibert",
                                "model": str(GOLDENS / name)}
    B = len(pairs)
    if layout == "packed":
        assert tensors["offsets"].shape == (B + 1,) and tensors["input_ids"].ndim == 1
    else:
        assert tensors["input_ids"].shape == tensors["attention_mask"].shape == tensors["layer_0"].shape[:2]
    assert tensors["logits"].shape == (B, ce.num_labels) and tensors["pooled"].shape == (B, ce.config.hidden_size)
    status, report = compare_json(GOLDENS / name, path, "--pairs", pairs_file, "--max-length", ce.max_length)
    assert status == 0 and all(s["max_abs"] == 0 for s in report["stages"]), report


def test_text_report_and_stage_subset(tmp_path, hf, models):
    """Only some stages in the trace: those are compared, the others listed as missing."""
    model, tokenizer = hf("tiny-l1")
    path = tmp_path / "t.safetensors"
    oracle.trace_from_transformers(model, tokenizer, golden_pairs("tiny-l1"), path)
    tensors = load_file(str(path))
    del tensors["layer_0"], tensors["pooled"]
    save_file(tensors, str(path), metadata={"format": "minibert-trace/1", "layout": "padded"})
    status, out, _ = run_cli("compare", "--model", GOLDENS / "tiny-l1", path)
    assert status == 0
    assert "tokens: not checked" in out and "not in the trace: layer_0, pooled" in out and "every stage agrees" in out
    assert [line.split()[0] for line in out.splitlines()[3:6]] == ["embeddings", "layer_1", "logits"]


def test_padding_positions_are_ignored(tmp_path, hf):
    model, tokenizer = hf("tiny-l1")
    path = tmp_path / "t.safetensors"
    oracle.trace_from_transformers(model, tokenizer, golden_pairs("tiny-l1"), path)
    tensors = load_file(str(path))
    pad = tensors["attention_mask"] == 0
    assert pad.any()
    for name in ("embeddings", "layer_0", "layer_1"):
        tensors[name][pad] = np.nan
    tensors["input_ids"][pad] = 99999  # outside the vocabulary: never looked at
    save_file(tensors, str(path), metadata={"format": "minibert-trace/1", "layout": "padded"})
    assert compare_json(GOLDENS / "tiny-l1", path)[0] == 0


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_traces(tmp_path, hf, dtype):
    """A stage stored in float16 / bfloat16 is compared within its storage rounding on top of the tolerance."""
    from safetensors.torch import save_file as save_torch

    model, tokenizer = hf("tiny-l1")
    path = tmp_path / "t.safetensors"
    oracle.trace_from_transformers(model, tokenizer, golden_pairs("tiny-l1"), path)
    tensors = {k: torch.from_numpy(v) for k, v in load_file(str(path)).items()}
    tensors = {k: v.to(getattr(torch, dtype)) if v.dtype == torch.float32 else v for k, v in tensors.items()}
    save_torch(tensors, str(path), metadata={"format": "minibert-trace/1", "layout": "padded"})
    status, report = compare_json(GOLDENS / "tiny-l1", path)
    assert status == 0, report
    assert report["stages"][0]["max_abs"] > 1e-4  # the rounding is really there


def test_first_divergence_names_the_element(tmp_path, models):
    ce, pairs = models("tiny-l3"), golden_pairs("tiny-l3")
    path = tmp_path / "t.safetensors"
    oracle.trace_with_minibert(ce, pairs, path)
    tensors = load_file(str(path))
    offsets = tensors["offsets"]
    row = offsets[4] + 3
    reference = float(tensors["layer_1"][row, 7])
    tensors["layer_1"][row, 7] += 0.5
    tensors["layer_1"][offsets[6] + 1, 2] += 0.01  # smaller: not the worst
    save_file(tensors, str(path), metadata={"format": "minibert-trace/1", "layout": "packed"})
    status, report = compare_json(GOLDENS / "tiny-l3", path)
    assert status == 1
    assert [s["ok"] for s in report["stages"]] == [True, True, False, True, True, True]  # only layer_1 is off
    div = report["first_divergence"]
    assert (div["stage"], div["pair"], div["token"], div["dim"]) == ("layer_1", 4, 3, 7)
    assert div["reference"] == pytest.approx(reference) and div["theirs"] == pytest.approx(reference + 0.5)
    layer_1 = report["stages"][2]
    assert layer_1["max_abs"] == pytest.approx(0.5, rel=1e-6) and layer_1["min_cosine"] < 0.9999


def test_token_ids_checked_with_pairs(tmp_path, hf, models):
    model, tokenizer = hf("tiny-l1")
    pairs = golden_pairs("tiny-l1")
    path = tmp_path / "t.safetensors"
    oracle.trace_from_transformers(model, tokenizer, pairs, path)
    changed = list(pairs)
    changed[2] = (pairs[2][0], "cats sit on mats")
    status, report = compare_json(GOLDENS / "tiny-l1", path, "--pairs", write_pairs(tmp_path / "p.jsonl", changed))
    assert status == 1 and report["tokens_match"] is False and report["first_divergence"] is None
    status, out, _ = run_cli("compare", "--model", GOLDENS / "tiny-l1", path, "--pairs", tmp_path / "p.jsonl")
    assert status == 1 and "tokens: DIFFER: pair 2, token " in out and "minibert's id is" in out
    status, report = compare_json(GOLDENS / "tiny-l1", path, "--pairs", write_pairs(tmp_path / "q.jsonl", pairs[:3]))
    assert status == 1 and report["tokens_match"] is False


# ----------------------------------------------------------------------------------------------
# planted bugs: each is caught at the right stage, with the right diagnosis


def run_transformers(model, enc, **call):
    """hidden states, pooled and logits of a transformers BERT, as a dict of [B, T, H] / [B, X] arrays."""
    captured = {}
    hook = model.bert.pooler.register_forward_hook(lambda m, i, o: captured.__setitem__("pooled", o))
    try:
        with torch.no_grad():
            out = model(**{**dict(enc), **call}, output_hidden_states=True)
    finally:
        hook.remove()
    stages = {"embeddings": out.hidden_states[0], **{f"layer_{i}": h for i, h in enumerate(out.hidden_states[1:])},
              "pooled": captured["pooled"], "logits": out.logits}
    return {k: v.float().numpy() for k, v in stages.items()}


def planted_trace(path, model, tokenizer, pairs, plant, with_types=True):
    enc = tokenizer([q for q, _ in pairs], [p for _, p in pairs], padding=True, truncation="longest_first",
                    return_tensors="pt")
    stages = plant(model, enc)
    tensors = {"input_ids": enc["input_ids"].numpy(), "attention_mask": enc["attention_mask"].numpy()}
    if with_types:
        tensors["token_type_ids"] = enc["token_type_ids"].numpy()
    tensors = {k: np.ascontiguousarray(v) for k, v in {**tensors, **stages}.items()}  # save_file needs contiguous
    save_file(tensors, str(path), metadata={"format": "minibert-trace/1", "layout": "padded",
                                                          "producer": "a planted bug"})


def no_pooler(model, enc):
    stages = run_transformers(model, enc)
    raw = torch.from_numpy(stages["layer_1"][:, 0])                   # [B, H] the raw [CLS]
    stages["pooled"] = raw.numpy()
    with torch.no_grad():
        stages["logits"] = model.classifier(raw).numpy()
    return stages


def no_token_types(model, enc):
    return run_transformers(model, enc, token_type_ids=None)


def no_padding_mask(model, enc):
    return run_transformers(model, enc, attention_mask=torch.ones_like(enc["attention_mask"]))


@contextlib.contextmanager
def changed(model, gelu=None, eps=None):
    saved = []
    for module in model.modules():
        if gelu and hasattr(module, "intermediate_act_fn"):
            saved.append((module, "intermediate_act_fn", module.intermediate_act_fn))
            module.intermediate_act_fn = transformers.activations.ACT2FN[gelu]
        if eps and isinstance(module, torch.nn.LayerNorm):
            saved.append((module, "eps", module.eps))
            module.eps = eps
    try:
        yield
    finally:
        for module, attr, value in saved:
            setattr(module, attr, value)


def tanh_gelu(model, enc):
    with changed(model, gelu="gelu_new"):
        return run_transformers(model, enc)


def eps_1e5(model, enc):
    with changed(model, eps=1e-5):
        return run_transformers(model, enc)


def softmax_logits(model, enc):
    stages = run_transformers(model, enc)
    stages["logits"] = torch.softmax(torch.from_numpy(stages["logits"]), dim=-1).numpy()
    return stages


PLANTS = [
    pytest.param(no_pooler, "pooled", "`pooled` equals the raw first-token ([CLS]) hidden state of layer_1: "
                 "the pooler's dense + tanh is missing", id="pooler-missing"),
    pytest.param(no_token_types, "embeddings", "token_type_ids are not passed", id="token-types-not-passed"),
    pytest.param(no_padding_mask, "layer_0", "the padding mask is not applied", id="padding-mask"),
    pytest.param(tanh_gelu, "layer_0", "tanh approximation of GELU", id="tanh-gelu"),
    pytest.param(eps_1e5, "embeddings", "LayerNorm epsilon 1e-05", id="layer-norm-eps"),
    pytest.param(softmax_logits, "logits", "a softmax over a single logit", id="softmax-one-logit"),
]


@pytest.mark.parametrize("plant, stage, diagnosis", PLANTS)
def test_planted_bug_is_diagnosed(tmp_path, hf, plant, stage, diagnosis):
    model, tokenizer = hf("tiny-l1")
    path = tmp_path / "planted.safetensors"
    planted_trace(path, model, tokenizer, golden_pairs("tiny-l1"), plant)
    status, report = compare_json(GOLDENS / "tiny-l1", path)
    assert status == 1
    div = report["first_divergence"]
    assert div["stage"] == stage, report
    assert diagnosis in div["diagnosis"], div
    stages = [s["name"] for s in report["stages"]]
    assert all(s["ok"] for s in report["stages"][:stages.index(stage)])


def test_token_types_diagnosed_when_the_trace_has_none(tmp_path, hf):
    """A trace without token_type_ids: minibert takes the types from the pair template ([SEP] splits them)."""
    model, tokenizer = hf("tiny-l1")
    path = tmp_path / "planted.safetensors"
    planted_trace(path, model, tokenizer, golden_pairs("tiny-l1"), no_token_types, with_types=False)
    status, report = compare_json(GOLDENS / "tiny-l1", path)
    assert status == 1 and "token_type_ids are not passed" in report["first_divergence"]["diagnosis"]
    planted_trace(path, model, tokenizer, golden_pairs("tiny-l1"), lambda m, e: run_transformers(m, e),
                  with_types=False)
    assert compare_json(GOLDENS / "tiny-l1", path)[0] == 0


def test_the_diagnoses_do_not_fire_on_other_bugs(tmp_path, hf):
    """A planted error that fits no signature gets no diagnosis."""
    model, tokenizer = hf("tiny-l1")
    path = tmp_path / "planted.safetensors"

    def scaled_ffn(model, enc):
        with torch.no_grad():
            weight = model.bert.encoder.layer[1].output.dense.weight
            weight *= 1.01
            try:
                return run_transformers(model, enc)
            finally:
                weight /= 1.01
    planted_trace(path, model, tokenizer, golden_pairs("tiny-l1"), scaled_ffn)
    status, report = compare_json(GOLDENS / "tiny-l1", path)
    assert status == 1 and report["first_divergence"]["stage"] == "layer_1"
    assert report["first_divergence"]["diagnosis"] is None


@pytest.mark.parametrize("sign, how", [(+1, "lower"), (-1, "higher")])
def test_positions_off_by_padding_idx_plus_one(tmp_path, models, sign, how):
    """A backend whose position ids are padding_idx + 1 off (RoBERTa's numbering, 0 instead of padding_idx + 1,
    or the reverse) reads the position table shifted; planted here on BERT by rolling minibert's table."""
    ce, pairs = models("tiny-l1"), golden_pairs("tiny-l1")
    shift = ce.config.pad_token_id + 1
    embeddings = dataclasses.replace(ce.params.embeddings,
                                     position=np.roll(ce.params.embeddings.position, sign * shift, axis=0))
    params = dataclasses.replace(ce.params, embeddings=embeddings)
    batch = Batch.pack(ce.tokenizer.encode_pairs(pairs))
    path = tmp_path / "planted.safetensors"
    oracle.write_trace(path, oracle.reference_stages(params, ce.config, batch), batch, "padded")
    status, report = compare_json(GOLDENS / "tiny-l1", path)
    assert status == 1 and report["first_divergence"]["stage"] == "embeddings"
    assert f"every position {shift} (padding_idx + 1) {how}" in report["first_divergence"]["diagnosis"]


# ----------------------------------------------------------------------------------------------
# bad trace files: exit status 2, a message that names the tensor


@pytest.fixture()
def good(tmp_path, models):
    """A good packed trace's tensors and metadata, to break one thing at a time."""
    ce = models("tiny-l1")
    path = tmp_path / "good.safetensors"
    oracle.trace_with_minibert(ce, golden_pairs("tiny-l1")[:4], path)
    return load_file(str(path)), {"format": "minibert-trace/1", "layout": "packed"}


def broken(tmp_path, tensors, metadata):
    path = tmp_path / "bad.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    return path


def expect_exit_2(path, *words):
    status, out, err = run_cli("compare", "--model", GOLDENS / "tiny-l1", path)
    assert status == 2 and out == "", (status, out, err)
    assert err.startswith("minibert: error: ") and err.count("\n") == 1, err
    for word in words:
        assert word in err, err
    with pytest.raises(TraceError):
        ce = CrossEncoder(GOLDENS / "tiny-l1")
        oracle.compare(ce.params, ce.config, oracle.read_trace(path))


def test_truncated_file(tmp_path, good):
    path = broken(tmp_path, *good)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) - 100])
    expect_exit_2(path, "truncated", "tensor '")


def test_not_a_safetensors_file(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      ")
    expect_exit_2(path, "not valid JSON")


@pytest.mark.parametrize("case, words", [
    ("format", ["__metadata__ format must be 'minibert-trace/1'", "None"]),
    ("layout", ["__metadata__ layout must be 'padded' or 'packed'", "'diagonal'"]),
    ("ids-float", ["tensor 'input_ids' must be int64 (I64), found F32"]),
    ("ids-int32", ["tensor 'input_ids' must be int64 (I64), found I32"]),
    ("stage-int", ["tensor 'layer_0': a stage must be float32, float16 or bfloat16, found I64"]),
    ("no-logits", ["no tensor 'logits'"]),
    ("no-offsets", ["a packed trace needs tensor 'offsets'"]),
    ("offsets", ["tensor 'offsets' must rise from 0 to len(input_ids)"]),
    ("short-stage", ["tensor 'layer_1': expected [N, X]"]),
    ("logits-rows", ["tensor 'logits': expected [B, X] = [4, X]"]),
    ("width", ["tensor 'pooled': expected [B, X] = [4, 32]", "found [4, 31]"]),
    ("unknown-stage", ["tensor 'layer_2' is not a stage of this BERT model", "embeddings, layer_0, layer_1, pooled"]),
    ("vocab", ["'input_ids'", "token id 5000 is outside the model's range [0, 1200)"]),
    ("no-pairs", ["tensor 'input_ids' holds no pairs"]),
    ("types-range", ["tensor 'token_type_ids': token type id 2 is outside the model's range [0, 2)"]),
    ("too-long", ["tensor 'input_ids': a pair of ", "tokens is longer than the model's 64 positions"]),
    ("types-shape", ["tensor 'token_type_ids' must have input_ids' shape"]),
    ("mask-in-packed", ["tensor 'attention_mask' does not belong in a packed trace"]),
])
def test_inconsistent_packed_trace(tmp_path, good, case, words):
    tensors, metadata = good
    n = len(tensors["input_ids"])
    if case == "format":
        metadata = {"layout": "packed"}
    elif case == "layout":
        metadata = {**metadata, "layout": "diagonal"}
    elif case == "ids-float":
        tensors["input_ids"] = tensors["input_ids"].astype(np.float32)
    elif case == "ids-int32":
        tensors["input_ids"] = tensors["input_ids"].astype(np.int32)
    elif case == "stage-int":
        tensors["layer_0"] = tensors["layer_0"].astype(np.int64)
    elif case == "no-logits":
        del tensors["logits"]
    elif case == "no-offsets":
        del tensors["offsets"]
    elif case == "offsets":
        tensors["offsets"] = tensors["offsets"] + 1
    elif case == "short-stage":
        tensors["layer_1"] = tensors["layer_1"][:-1]
    elif case == "logits-rows":
        tensors["logits"] = tensors["logits"][:3]
    elif case == "width":
        tensors["pooled"] = tensors["pooled"][:, :31].copy()
    elif case == "unknown-stage":
        tensors["layer_2"] = tensors["layer_1"]
    elif case == "vocab":
        tensors["input_ids"][5] = 5000
    elif case == "no-pairs":
        tensors = {"input_ids": np.zeros(0, np.int64), "offsets": np.zeros(1, np.int64),
                   "logits": np.zeros((0, 1), np.float32)}
    elif case == "types-range":
        tensors["token_type_ids"][3] = 2
    elif case == "too-long":  # the four pairs' tokens as one pair, longer than the 64 positions
        tensors["offsets"] = np.array([0, n], np.int64)
        tensors["logits"], tensors["pooled"] = tensors["logits"][:1].copy(), tensors["pooled"][:1].copy()
    elif case == "types-shape":
        tensors["token_type_ids"] = tensors["token_type_ids"][:n - 1]
    elif case == "mask-in-packed":
        tensors["attention_mask"] = np.ones(n, np.int64)
    expect_exit_2(broken(tmp_path, tensors, metadata), *words)


@pytest.mark.parametrize("case, words", [
    ("no-mask", ["a padded trace needs tensor 'attention_mask' [B, T]"]),
    ("mask-values", ["tensor 'attention_mask' must hold only 0 and 1"]),
    ("left-padding", ["tensor 'attention_mask' row {row}: the real tokens (1) must come first"]),
    ("ids-1d", ["tensor 'input_ids' of a padded trace must be [B, T], found [4]"]),
    ("stage-shape", ["tensor 'embeddings': expected [B, T, X]"]),
    ("offsets-in-padded", ["tensor 'offsets' does not belong in a padded trace"]),
])
def test_inconsistent_padded_trace(tmp_path, models, case, words):
    ce = models("tiny-l1")
    path = tmp_path / "good.safetensors"
    oracle.trace_with_minibert(ce, golden_pairs("tiny-l1")[:4], path, layout="padded")
    tensors, metadata = load_file(str(path)), {"format": "minibert-trace/1", "layout": "padded"}
    mask = tensors["attention_mask"]
    padded_row = int(np.flatnonzero((mask == 0).any(axis=1))[0])
    if case == "no-mask":
        del tensors["attention_mask"]
    elif case == "mask-values":
        tensors["attention_mask"] = mask * 2
    elif case == "left-padding":
        tensors["attention_mask"] = mask[:, ::-1].copy()
    elif case == "ids-1d":
        tensors["input_ids"] = tensors["input_ids"][:, 0].copy()
    elif case == "stage-shape":
        tensors["embeddings"] = tensors["embeddings"][:, :-1].copy()
    elif case == "offsets-in-padded":
        tensors["offsets"] = np.arange(5, dtype=np.int64)
    expect_exit_2(broken(tmp_path, tensors, metadata), *[w.format(row=padded_row) for w in words])


def test_missing_file_and_bad_usage(tmp_path):
    status, _, err = run_cli("compare", "--model", GOLDENS / "tiny-l1", tmp_path / "nope.safetensors")
    assert status == 2 and "nope.safetensors" in err
    status, _, err = run_cli("compare", "--model", GOLDENS / "tiny-l1")
    assert status == 2 and "THEIRS" in err
    status, _, err = run_cli("compare", "--model", GOLDENS / "tiny-l1", tmp_path / "x", "--atol", "nan")
    assert status == 2 and "--atol: expected a finite number >= 0, found 'nan'" in err


def test_trace_needs_pairs(tmp_path):
    (tmp_path / "empty.tsv").write_text("", encoding="utf-8")
    status, _, err = run_cli("trace", "--model", GOLDENS / "tiny-l1", tmp_path / "empty.tsv", "--out", tmp_path / "t")
    assert status == 2 and "no pairs to trace" in err and not (tmp_path / "t").exists()


def test_importing_oracle_does_not_import_torch():
    import subprocess
    import sys
    code = "import sys, minibert.oracle, minibert.oracle.explain, minibert.cli; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"
