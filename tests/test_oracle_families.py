"""trace / compare on every family: a transformers trace (padded) and a minibert trace (packed) of the same
pairs both compare clean, the head stage trace_from_transformers captures is the quantity minibert names,
and the RoBERTa-family position bug (positions from 0 instead of padding_idx + 1) is diagnosed on a real
RoBERTa trace (and the reverse on BERT), also in a pair with a padding token inside.

The models are the golden fixtures' small random models (tests/fixtures/goldens, see test_goldens.py),
loaded in transformers with eager attention in float32; the pairs are each fixture's golden pairs. A model
whose code is not in transformers (custom code: config.json's auto_map, GTE "new") cannot be loaded here;
the transformers-capture tests skip it, and its reference's own stages (its golden, made by that code in a
scratch environment) are written as a trace and compared instead.
"""

import contextlib
import io
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from safetensors.numpy import load_file  # noqa: E402

from minibert import (
    CrossEncoder,  # noqa: E402
    oracle,  # noqa: E402
)
from minibert.cli import main  # noqa: E402
from minibert.models import FAMILIES, Batch, family_of  # noqa: E402
from minibert.oracle.trace import write_trace  # noqa: E402
from minibert.runtime.load import load_config  # noqa: E402

# The goldens are cut at max_length on purpose.
pytestmark = pytest.mark.filterwarnings("ignore::minibert.TruncationWarning")

GOLDENS = Path(__file__).parent / "fixtures" / "goldens"
# Every golden model fixture (a checkpoint and its stages), and the family that reads it.
NAMES = sorted(p.parent.name for p in GOLDENS.glob("*/golden.npz"))
FAMILY = {name: family_of(load_config(GOLDENS / name)) for name in NAMES}
# The fixtures of the families that number positions from padding_idx + 1 (the RoBERTa family).
PADDING_IDX_NUMBERED = [name for name in NAMES if FAMILY[name].position_ids is not None]


def golden_meta(name):
    return json.loads((GOLDENS / name / "golden.json").read_text(encoding="utf-8"))


def custom_code(name) -> bool:
    """Is the fixture's model custom code (config.json's auto_map: transformers runs it only with trust_remote_code,
    from the Hub), not a transformers model? Its goldens come from that code, run in a scratch environment."""
    return "auto_map" in json.loads((GOLDENS / name / "config.json").read_text(encoding="utf-8"))


CUSTOM_CODE = [name for name in NAMES if custom_code(name)]
# The fixtures whose model transformers builds; the custom-code ones are checked against their reference's
# stages instead (test_the_references_own_trace_compares_clean).
# A decoder reranker's fixture (Qwen3) is a *ForCausalLM read through a chat template (not loadable as
# AutoModelForSequenceClassification): tests/test_oracle_decoders.py traces and compares it.
DECODERS = [name for name in NAMES if FAMILY[name].decoder]
IN_TRANSFORMERS = [name for name in NAMES if not custom_code(name) and name not in DECODERS]


@pytest.fixture(scope="module")
def loaded():
    cache = {}

    def get(name):
        """(transformers model, tokenizer, CrossEncoder, pairs) of a golden fixture."""
        if name not in cache:
            meta = golden_meta(name)
            model = transformers.AutoModelForSequenceClassification.from_pretrained(
                GOLDENS / name, attn_implementation="eager", dtype=torch.float32).eval()
            tokenizer = transformers.AutoTokenizer.from_pretrained(GOLDENS / name)
            ce = CrossEncoder(GOLDENS / name, max_length=meta["max_length_arg"])
            cache[name] = model, tokenizer, ce, [tuple(p) for p in meta["pairs"]]
        return cache[name]
    return get


def run_cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in argv])
    return status, out.getvalue(), err.getvalue()


def compare_json(model_dir, trace_path, *extra):
    status, out, err = run_cli("compare", "--model", model_dir, trace_path, "--json", *extra)
    assert status in (0, 1), err
    return status, json.loads(out)


def write_pairs(path, pairs):
    path.write_text("".join(json.dumps({"query": q, "passage": p}) + "\n" for q, p in pairs), encoding="utf-8")
    return path


def test_fixtures_cover_every_family():
    """A model fixture for every family's model. CamemBERT is RoBERTa's model under another name (its fixture
    is a tokenizer's only): its Family names the same head as RoBERTa's."""
    assert {f.name for f in FAMILY.values()} == {f.name for f in FAMILIES} - {"CamemBERT"}
    camembert, roberta = (next(f for f in FAMILIES if f.name == name) for name in ("CamemBERT", "RoBERTa"))
    assert (camembert.head_stage, camembert.head_module) == (roberta.head_stage, roberta.head_module)
    assert PADDING_IDX_NUMBERED


# ----------------------------------------------------------------------------------------------
# both traces of every family compare clean


@pytest.mark.parametrize("name", IN_TRANSFORMERS)
def test_transformers_and_minibert_traces_compare_clean(tmp_path, loaded, name):
    model, tokenizer, ce, pairs = loaded(name)
    stages = list(oracle.reference_stages(ce.params, ce.config, Batch.pack(ce.tokenizer.encode_pairs(pairs))))
    L = ce.config.num_hidden_layers
    head = family_of(ce.config).head_stage
    assert stages == ["embeddings", *(f"layer_{i}" for i in range(L)), head, "logits"]   # minibert's stage names
    assert golden_meta(name).get("stages", stages) == stages                              # and the goldens'
    pairs_file = write_pairs(tmp_path / "pairs.jsonl", pairs)
    theirs, ours = tmp_path / "theirs.safetensors", tmp_path / "ours.safetensors"
    oracle.trace_from_transformers(model, tokenizer, pairs, theirs, max_length=ce.max_length)
    status, _, err = run_cli("trace", "--model", GOLDENS / name, pairs_file, "--out", ours, "--layout", "packed",
                             "--max-length", ce.max_length)
    assert status == 0, err
    assert load_file(str(theirs))["input_ids"].ndim == 2 and load_file(str(ours))["input_ids"].ndim == 1
    for path, worst in ((theirs, 1e-5), (ours, 0.0)):
        status, report = compare_json(GOLDENS / name, path, "--pairs", pairs_file, "--max-length", ce.max_length)
        assert status == 0, (path.name, report)
        assert report["tokens_match"] is True and report["first_divergence"] is None
        assert [s["name"] for s in report["stages"]] == stages, path.name   # every stage, none missing
        bad = [(s["name"], s["max_abs"]) for s in report["stages"] if not s["max_abs"] <= worst]
        assert not bad, (path.name, bad)
        print(f"{name} {path.stem}: worst stage max abs {max(s['max_abs'] for s in report['stages']):.2g}")


@pytest.mark.parametrize("name", CUSTOM_CODE)
def test_the_references_own_trace_compares_clean(tmp_path, name):
    """For a custom-code model: its golden (every stage of the reference, run by its own code) written as a packed
    trace compares clean, every stage within 1e-5, and so does minibert's own trace (exactly)."""
    meta = golden_meta(name)
    with np.load(GOLDENS / name / "golden.npz", allow_pickle=False) as npz:
        golden = {k: npz[k] for k in npz.files}
    offsets = np.concatenate([[0], np.cumsum(golden["lengths"])])
    batch = Batch.pack([(golden["input_ids"][a:b], golden["token_type_ids"][a:b]) for a, b in itertools.pairwise(offsets)])
    theirs, ours = tmp_path / "theirs.safetensors", tmp_path / "ours.safetensors"
    write_trace(theirs, {stage: golden[stage] for stage in meta["stages"]}, batch, producer=meta["generator"],
                token_types=False)
    pairs_file = write_pairs(tmp_path / "pairs.jsonl", [tuple(p) for p in meta["pairs"]])
    status, _, err = run_cli("trace", "--model", GOLDENS / name, pairs_file, "--out", ours, "--layout", "packed",
                             "--max-length", meta["max_length"])
    assert status == 0, err
    for path, worst in ((theirs, 1e-5), (ours, 0.0)):
        status, report = compare_json(GOLDENS / name, path, "--pairs", pairs_file, "--max-length", meta["max_length"])
        assert status == 0, (path.name, report)
        assert report["tokens_match"] is True and report["first_divergence"] is None
        assert [s["name"] for s in report["stages"]] == meta["stages"], path.name
        bad = [(s["name"], s["max_abs"]) for s in report["stages"] if not s["max_abs"] <= worst]
        assert not bad, (path.name, bad)
        print(f"{name} {path.stem}: worst stage max abs {max(s['max_abs'] for s in report['stages']):.2g}")


def named_head_stage(model, last, mask):
    """The head stage as minibert names it, computed here from transformers' own modules on the last hidden
    states [B, T, H] (dropout is the identity in eval mode)."""
    first = last[:, 0]
    model_type = model.config.model_type
    if model_type == "bert":
        return model.bert.pooler(last)                                   # tanh(dense([CLS]))
    if model_type in ("roberta", "xlm-roberta", "camembert"):
        return torch.tanh(model.classifier.dense(first))                 # head_dense
    if model_type == "electra":
        return model.classifier.activation(model.classifier.dense(first))  # GELU(dense([CLS]))
    if model_type == "distilbert":
        return torch.relu(model.pre_classifier(first))
    if model_type == "deberta-v2":
        return model.pooler(last)                                        # ContextPooler
    if model_type == "modernbert":
        if model.config.classifier_pooling == "cls":
            pooled = first
        else:
            m = mask.unsqueeze(-1).to(last.dtype)
            pooled = (last * m).sum(dim=1) / mask.sum(dim=1, keepdim=True)
        return model.head(pooled)                                        # norm(act(dense(pooled)))
    raise AssertionError(model_type)


@pytest.mark.parametrize("name", IN_TRANSFORMERS)
def test_captured_stages_are_the_named_quantities(tmp_path, loaded, name):
    """The trace's last layer is the base model's last hidden state (ModernBERT's after final_norm), and its head
    stage is the quantity minibert names, computed again from transformers' modules: equal, bit for bit."""
    model, tokenizer, ce, pairs = loaded(name)
    path = tmp_path / "theirs.safetensors"
    oracle.trace_from_transformers(model, tokenizer, pairs, path, max_length=ce.max_length)
    trace = load_file(str(path))
    L = ce.config.num_hidden_layers
    enc = {k: torch.from_numpy(trace[k]) for k in ("input_ids", "attention_mask", "token_type_ids") if k in trace}
    with torch.no_grad():
        last = model.base_model(**enc).last_hidden_state                     # [B, T, H]
        head = named_head_stage(model, last, enc["attention_mask"])          # [B, H]
    assert np.array_equal(trace[f"layer_{L - 1}"], last.numpy())
    stage = family_of(ce.config).head_stage
    assert stage in trace and np.array_equal(trace[stage], head.numpy()), stage
    if model.config.model_type == "modernbert":   # the last layer is after the final norm, as minibert's is
        before = []
        hook = model.base_model.final_norm.register_forward_pre_hook(lambda m, inp: before.append(inp[0]))
        try:
            with torch.no_grad():
                model.base_model(**enc)
                after = model.base_model.final_norm(before[0])
        finally:
            hook.remove()
        assert np.array_equal(trace[f"layer_{L - 1}"], after.numpy())
        assert not np.allclose(trace[f"layer_{L - 1}"], before[0].numpy(), atol=1e-3)


# ----------------------------------------------------------------------------------------------
# the RoBERTa-family position bug, planted in transformers


@contextlib.contextmanager
def positions_from_zero(model):
    """Every forward of `model` gets position ids 0, 1, 2, ... (a backend that numbers RoBERTa's positions
    as BERT's), where RoBERTa counts from padding_idx + 1."""
    def hook(module, args, kwargs):
        B, T = kwargs["input_ids"].shape
        kwargs["position_ids"] = torch.arange(T).expand(B, T)
        return args, kwargs
    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


# the bug is planted in transformers' model (jina-reranker-v2's is custom code)
@pytest.mark.parametrize("name", [name for name in PADDING_IDX_NUMBERED if name in IN_TRANSFORMERS])
def test_roberta_positions_from_zero_are_diagnosed(tmp_path, loaded, name):
    model, tokenizer, ce, pairs = loaded(name)
    path = tmp_path / "planted.safetensors"
    with positions_from_zero(model):
        oracle.trace_from_transformers(model, tokenizer, pairs, path, max_length=ce.max_length)
    status, report = compare_json(GOLDENS / name, path)
    assert status == 1
    div = report["first_divergence"]
    assert div["stage"] == "embeddings", report
    shift = ce.config.pad_token_id + 1
    assert f"every position {shift} (padding_idx + 1) lower" in div["diagnosis"], div
    assert "position ids are off by padding_idx + 1" in div["diagnosis"]
    # the same model without the planted bug compares clean: the diagnosis is the hook's doing
    oracle.trace_from_transformers(model, tokenizer, pairs, path, max_length=ce.max_length)
    assert compare_json(GOLDENS / name, path)[0] == 0


@contextlib.contextmanager
def positions_from_padding_idx(model):
    """The reverse: a BERT model given RoBERTa's position ids (from padding_idx + 1; a padding token is not
    counted), as transformers' create_position_ids_from_input_ids makes them."""
    pad = model.config.pad_token_id

    def hook(module, args, kwargs):
        real = kwargs["input_ids"].ne(pad).long()
        kwargs["position_ids"] = torch.cumsum(real, dim=1) * real + pad
        return args, kwargs
    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def test_bert_positions_from_padding_idx_are_diagnosed(tmp_path, loaded):
    """On BERT, with a pair that has a [PAD] token inside, where the two numberings part by one more."""
    model, tokenizer, ce, pairs = loaded("tiny-l1")
    short = [p for p, (ids, _) in zip(pairs, ce.tokenizer.encode_pairs(pairs)) if len(ids) < 40]
    pairs = short + [("what is [PAD] here?", "a [PAD] token inside the passage")]
    assert (ce.tokenizer.encode_pairs(pairs[-1:])[0][0] == ce.config.pad_token_id).sum() == 2
    path = tmp_path / "planted.safetensors"
    with positions_from_padding_idx(model):
        oracle.trace_from_transformers(model, tokenizer, pairs, path)
    status, report = compare_json(GOLDENS / "tiny-l1", path)
    assert status == 1
    div = report["first_divergence"]
    assert div["stage"] == "embeddings", report
    assert f"every position {ce.config.pad_token_id + 1} (padding_idx + 1) higher" in div["diagnosis"], div
