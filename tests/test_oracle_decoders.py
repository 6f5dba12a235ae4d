"""trace / compare on a decoder reranker: transformers' trace (its *ForCausalLM scored from "yes" and "no" as
LogitScore scores it, and a *ForSequenceClassification), sentence-transformers' (long conversations cut with the
template's tail kept, left-padded) and minibert's own all compare clean stage by stage on the ids minibert forms;
three bugs real decoder backends have had (another rope_theta, GPT-J's interleaved rotary, the head reading
another row than the last token) are found at the right stage and diagnosed.

The models: the qwen3-reranker golden (Qwen3ForCausalLM + LogitScore, a chat template) and a random
Qwen3ForSequenceClassification of the same shape with its tokenizer files, built here.
"""

import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from test_oracle import compare_json, run_cli, write_pairs  # noqa: E402

from minibert import CrossEncoder, oracle  # noqa: E402
from minibert.errors import InputError  # noqa: E402
from minibert.models import Batch  # noqa: E402
from minibert.ops import NUMPY  # noqa: E402
from minibert.oracle.diagnose import rotary_interleaved  # noqa: E402
from minibert.oracle.trace import write_trace  # noqa: E402

GOLDEN = Path(__file__).parent / "fixtures" / "goldens" / "qwen3-reranker"
PAIRS = [("how do I define a function?", "Functions are defined with the def keyword."),
         ("how do I define a function?", "The cat sat on the mat."),
         ("", ""), ("yes", "no"), ("why is the sky blue?", "Rayleigh scattering.")]
LONG = ("a long one", "Functions are defined with the def keyword. " * 40)   # cut at max_length (160)
STAGES = ["embeddings", "layer_0", "layer_1", "last_token", "logits"]


def assert_clean(model_dir, trace_path, pairs_file, worst):
    status, report = compare_json(model_dir, trace_path, "--pairs", pairs_file)
    assert status == 0 and report["tokens_match"] is True and report["first_divergence"] is None, report
    assert [s["name"] for s in report["stages"]] == STAGES                 # every stage, none missing
    assert max(s["max_abs"] for s in report["stages"]) <= worst, report["stages"]


@pytest.fixture(scope="module")
def causal():
    model = transformers.AutoModelForCausalLM.from_pretrained(GOLDEN, attn_implementation="eager",
                                                              dtype=torch.float32).eval()
    return GOLDEN, model, transformers.AutoTokenizer.from_pretrained(GOLDEN)


@pytest.fixture(scope="module")
def seq_cls(tmp_path_factory):
    """A random Qwen3ForSequenceClassification (every weight far from its init) with the golden's tokenizer files."""
    path = tmp_path_factory.mktemp("qwen3-seq-cls")
    config = transformers.AutoConfig.from_pretrained(GOLDEN, num_labels=1, attn_implementation="eager")
    torch.manual_seed(0)
    model = transformers.Qwen3ForSequenceClassification(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_((1.0 if "norm" in name else 0.0) + 0.3 * torch.randn(p.shape))
    model.save_pretrained(path)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(GOLDEN / name, path / name)
    return path, model, transformers.AutoTokenizer.from_pretrained(path)


@pytest.mark.parametrize("kind", ["causal", "seq_cls"])
def test_transformers_and_minibert_traces_compare_clean(request, tmp_path, kind):
    """transformers' trace (padded) and minibert's (`minibert trace`, packed): the same ids as minibert's, every
    stage, within 1e-5 and exactly."""
    model_dir, model, tokenizer = request.getfixturevalue(kind)
    pairs_file = write_pairs(tmp_path / "pairs.jsonl", PAIRS)
    theirs, ours = tmp_path / "theirs.safetensors", tmp_path / "ours.safetensors"
    oracle.trace_from_transformers(model, tokenizer, PAIRS, theirs)
    status, _, err = run_cli("trace", "--model", model_dir, pairs_file, "--out", ours)
    assert status == 0, err
    assert_clean(model_dir, theirs, pairs_file, 1e-5)
    assert_clean(model_dir, ours, pairs_file, 0.0)


def test_captured_logits_are_transformers_own(causal, tmp_path):
    """The trace's logits are logit('yes') - logit('no') of transformers' own forward on each pair alone, and its
    last_token stage is hidden_states[-1] at the pair's last token (the first pair's: it is the longest)."""
    _, model, tokenizer = causal
    path = tmp_path / "t.safetensors"
    oracle.trace_from_transformers(model, tokenizer, PAIRS, path, layout="packed")
    trace = oracle.read_trace(path)
    yes, no = tokenizer.convert_tokens_to_ids(["yes", "no"])
    for b in range(len(PAIRS)):
        ids = torch.tensor(trace.input_ids[trace.offsets[b]:trace.offsets[b + 1]])[None]
        with torch.no_grad():
            out = model(ids, output_hidden_states=True)
        np.testing.assert_allclose(trace.stages["logits"][b, 0], out.logits[0, -1, yes] - out.logits[0, -1, no],
                                   atol=1e-6, rtol=1e-6)
        np.testing.assert_allclose(trace.stages["last_token"][b], out.hidden_states[-1][0, -1], atol=1e-6, rtol=1e-6)


def test_sentence_transformers_trace_cuts_as_it_does(causal, tmp_path):
    """sentence-transformers' trace of a conversation over max_length (cut, the template's tail written back) and of
    left-padded pairs, written right-padded: minibert's ids and stages. transformers' own refuses the long pair."""
    from sentence_transformers import CrossEncoder as STCrossEncoder

    model_dir, model, tokenizer = causal
    pairs = PAIRS + [LONG]
    pairs_file = write_pairs(tmp_path / "pairs.jsonl", pairs)
    path = tmp_path / "st.safetensors"
    oracle.trace_from_sentence_transformers(STCrossEncoder(str(model_dir), device="cpu"), pairs, path)
    trace = oracle.read_trace(path)
    assert trace.layout == "padded" and int(np.diff(trace.offsets).max()) == 160
    assert_clean(model_dir, path, pairs_file, 1e-5)
    with pytest.raises(InputError, match="pair 5: its conversation is .* more than max_length 160"):
        oracle.trace_from_transformers(model, tokenizer, pairs, tmp_path / "t.safetensors", max_length=160)


def test_a_wrong_rope_theta_is_diagnosed(causal, tmp_path):
    """Planted in transformers: the rotary base 1e6 (Qwen3-Reranker's) where this model's config says 1e4. The
    embeddings agree, layer_0 diverges first, and the diagnosis names the base the backend used."""
    model_dir, model, tokenizer = causal
    rotary = model.get_decoder().rotary_emb
    kept = rotary.inv_freq.clone()
    half = torch.arange(0, len(kept) * 2, 2, dtype=torch.float32) / (len(kept) * 2)
    rotary.inv_freq.copy_(1.0 / (1_000_000.0 ** half))
    try:
        oracle.trace_from_transformers(model, tokenizer, PAIRS, tmp_path / "planted.safetensors")
    finally:
        rotary.inv_freq.copy_(kept)
    status, report = compare_json(model_dir, tmp_path / "planted.safetensors")
    div = report["first_divergence"]
    assert status == 1 and div["stage"] == "layer_0" and report["stages"][0]["ok"], report
    assert "rope_theta 1e+06: the backend's rotary base is not the model's (10000" in div["diagnosis"], div


def test_interleaved_rotary_is_diagnosed(causal, tmp_path):
    """A backend that rotates adjacent pairs of dimensions (GPT-J style) where Qwen3 rotates halves."""
    model_dir = causal[0]
    ce = CrossEncoder(model_dir)
    batch = Batch.pack(ce.tokenizer.encode_pairs(PAIRS))
    stages = oracle.reference_stages(ce.params, ce.config, batch, NUMPY.replace(apply_rotary=rotary_interleaved))
    write_trace(tmp_path / "interleaved.safetensors", stages, batch, token_types=False)
    status, report = compare_json(model_dir, tmp_path / "interleaved.safetensors")
    div = report["first_divergence"]
    assert status == 1 and div["stage"] == "layer_0", report
    assert "adjacent pairs of dimensions" in div["diagnosis"], div


def test_head_reading_the_wrong_row_is_diagnosed(causal, tmp_path):
    """A backend whose head reads each pair's first token (as an encoder's does): last_token diverges first (its
    layers are right) and the diagnosis names the row it read."""
    model_dir = causal[0]
    ce = CrossEncoder(model_dir)
    batch = Batch.pack(ce.tokenizer.encode_pairs(PAIRS))
    stages = oracle.reference_stages(ce.params, ce.config, batch)
    stages["last_token"] = stages["layer_1"][batch.offsets[:-1]]             # [B, H]: the first token's rows
    write_trace(tmp_path / "first-row.safetensors", stages, batch, token_types=False)
    status, report = compare_json(model_dir, tmp_path / "first-row.safetensors")
    div = report["first_divergence"]
    assert status == 1 and div["stage"] == "last_token", report
    assert "layer_1 at the pair's token 0 of" in div["diagnosis"] and "wrong row" in div["diagnosis"], div
