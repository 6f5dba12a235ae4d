"""GTE "new" (Alibaba-NLP/gte-multilingual-reranker-base's architecture) beyond what the shared harnesses check:
its config (NewConfig's defaults, every option minibert does not implement named with the file), the NTK-scaled
rotary frequencies against the reference's formula, a float16 checkpoint, a bare NewModel, the options that only
choose kernels, and that the goldens fail on the details particular to it. The numbers themselves are in
test_goldens.py (goldens made by the reference, new-impl's own code, in a scratch environment: tools/goldens/gte.py);
the attention explain shows is checked here against transformers 5's native GTE, as the oracle cannot load the
custom code."""

import dataclasses
import importlib.util
import itertools
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from minibert import (
    ConfigError,
    CrossEncoder,
    InputError,
    ModelFormatError,
    SentenceEncoder,
)
from minibert.formats.tensors import HalfTensor
from minibert.models import Batch, config_from_dict, encoder, forward
from minibert.models.params import leaves
from minibert.ops import NUMPY
from minibert.ops.reference import rotary_inv_freq
from minibert.runtime.load import load_config

GOLDENS = Path(__file__).parent / "fixtures" / "goldens"
ROPE, NTK = GOLDENS / "gte-rope", GOLDENS / "gte-ntk-long"
TOOLS = Path(__file__).parent.parent / "tools"
ATOL = RTOL = 1e-5
pytestmark = pytest.mark.filterwarnings("ignore::minibert.TruncationWarning")


def raw_config(directory: Path) -> dict:
    return json.loads((directory / "config.json").read_text(encoding="utf-8"))


def copy_model(source: Path, where: Path, config=None, tensors=None) -> Path:
    """A copy of a golden model directory, its config.json and tensors edited by the given functions."""
    shutil.copytree(source, where)
    if config is not None:
        (where / "config.json").write_text(json.dumps(config(raw_config(source))), encoding="utf-8")
    if tensors is not None:
        save_file(tensors(load_file(str(source / "model.safetensors"))), str(where / "model.safetensors"))
    return where


def golden(directory: Path) -> tuple[dict, Batch]:
    """The golden's arrays and its own token ids as a packed batch."""
    with np.load(directory / "golden.npz", allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    o = np.concatenate([[0], np.cumsum(arrays["lengths"])])
    batch = Batch.pack([(arrays["input_ids"][a:b], arrays["token_type_ids"][a:b]) for a, b in itertools.pairwise(o)])
    return arrays, batch


def within_tolerance(got, want) -> bool:
    return bool(np.all(np.abs(got.astype(np.float64) - want) <= ATOL + RTOL * np.abs(want.astype(np.float64))))


# ----------------------------------------------------------------------------------------------
# config.json


def test_defaults_are_newconfigs():
    """NewConfig's own defaults (configuration.py), not gte-multilingual's values."""
    c = config_from_dict({"model_type": "new"})
    assert (c.vocab_size, c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size) == (
        30528, 768, 12, 12, 3072)
    assert (c.max_position_embeddings, c.max_tokens, c.type_vocab_size, c.layer_norm_eps) == (2048, 2048, 1, 1e-12)
    assert (c.position_embedding_type, c.rope_theta, c.rope_scaling, c.rope) == ("rope", 10000.0, None, (10000.0, 1.0))
    assert (c.hidden_act, c.layer_norm_type, c.pack_qkv, c.pad_token_id) == ("gelu", "layer_norm", True, None)
    assert not (c.unpad_inputs or c.use_memory_efficient_attention or c.logn_attention_scale or c.logn_attention_clip1)


def test_the_rerankers_config_reads():
    """gte-multilingual-reranker-base's values (research notes: vocab padded to 250048, theta 20000, NTK factor 8,
    8192 positions): NTK gives theta 160000 and a divisor of 8^(2/64)."""
    c = config_from_dict({"model_type": "new", "architectures": ["NewForSequenceClassification"],
                          "auto_map": {"AutoConfig": "Alibaba-NLP/new-impl--configuration.NewConfig"},
                          "vocab_size": 250048, "max_position_embeddings": 8192, "rope_theta": 20000,
                          "rope_scaling": {"type": "ntk", "factor": 8.0}, "pad_token_id": 1, "num_labels": 1,
                          "torch_dtype": "float16", "hidden_dropout_prob": 0.1, "classifier_dropout": 0.0})
    assert c.rope == (160000.0, 8.0 ** (2 / 64)) and c.max_tokens == 8192 and c.head_dim == 64


UNSUPPORTED = [
    ({"layer_norm_type": "rms_norm"}, "layer_norm_type 'rms_norm'"),
    ({"position_embedding_type": "absolute"}, "position_embedding_type 'absolute'"),
    ({"logn_attention_scale": True}, "logn_attention_scale True"),
    ({"hidden_act": "gelu_new"}, "hidden_act 'gelu_new'"),
    ({"rope_scaling": {"type": "ntk", "factor": 8.0, "mixed_b": 0.5}}, "mixed_b 0.5"),
    ({"rope_scaling": {"type": "linear", "factor": 2.0}}, "rope_scaling'?: unsupported type 'linear'"),
    ({"rope_scaling": {"rope_type": "ntk", "factor": 2.0}}, "field 'rope_scaling' must be null or an object with keys"),
    ({"rope_scaling": {"type": "ntk", "factor": 0.5}}, "factor must be a finite number >= 1"),
    ({"rope_scaling": {"type": "ntk"}}, "factor must be a finite number >= 1, found None"),
    ({"rope_scaling": "ntk"}, "field 'rope_scaling' must be null or an object"),
    ({"rope_theta": 0}, "field 'rope_theta' must be a positive"),
    ({"num_attention_heads": 32}, "even head size"),                       # 32 / 32 = 1
    ({"type_vocab_size": -1}, "field 'type_vocab_size' must be an integer >= 0"),
    ({"pack_qkv": "yes"}, "pack_qkv 'yes'"),
    ({"layer_norm_eps": 0}, "layer_norm_eps"),
    ({"pad_token_id": 5000}, "pad_token_id"),
]


@pytest.mark.parametrize("change, message", UNSUPPORTED, ids=[m for _, m in UNSUPPORTED])
def test_an_option_minibert_does_not_implement_is_named_with_the_file(tmp_path, change, message):
    bad = copy_model(ROPE, tmp_path / "bad", config=lambda raw: {**raw, **change})
    with pytest.raises(ConfigError, match=message) as info:
        load_config(bad)
    assert str(bad / "config.json") in str(info.value)
    with pytest.raises(ConfigError, match=message):
        CrossEncoder(bad)


def test_options_that_only_choose_the_references_kernels_change_nothing(tmp_path):
    """unpad_inputs / use_memory_efficient_attention pick xformers kernels in the reference (same math);
    logn_attention_clip1 is read only by logn_attention_scale."""
    want = CrossEncoder(ROPE, ops="numpy").predict([("a query", "a passage"), ("q", "")])
    kernels = copy_model(ROPE, tmp_path / "kernels", config=lambda raw: {
        **raw, "unpad_inputs": True, "use_memory_efficient_attention": True, "logn_attention_clip1": True})
    assert np.array_equal(CrossEncoder(kernels, ops="numpy").predict([("a query", "a passage"), ("q", "")]), want)


# ----------------------------------------------------------------------------------------------
# the rotary inverse frequencies


# (head_dim, rope_theta, NTK factor, ulps): torch's float32 pow (SLEEF) is within an ulp of the nearest float32,
# which rotary_inv_freq takes (the power in float64, rounded): the two agree on these configs but the last, whose
# divisor is still applied exactly as the reference's.
ROPES = [
    (64, 20000.0, 8.0, 0),     # gte-multilingual-reranker-base / -base
    (64, 160000.0, None, 0),   # gte-multilingual-mlm-base (no scaling)
    (16, 20000.0, 8.0, 0),     # gte-ntk-long
    (16, 160000.0, None, 0),   # gte-rope
    (64, 10000.0, 2.0, 0),
    (128, 500000.0, 4.0, 2),   # base 2e6: a pow two ulps apart
]


@pytest.mark.parametrize("head_dim, theta, factor, ulps", ROPES)
def test_ntk_inv_freq_is_the_references(head_dim, theta, factor, ulps):
    """The reference's RotaryEmbedding / NTKScalingRotaryEmbedding expressions, verbatim in torch, against
    ops.rotary_inv_freq with GteConfig.rope's (theta, divisor): bit for bit on the released configs; and the
    cos / sin tables within an ulp of its cos_cached / sin_cached at every position the reranker takes."""
    torch = pytest.importorskip("torch")
    scaling = None if factor is None else {"type": "ntk", "factor": factor}
    c = config_from_dict({"model_type": "new", "hidden_size": head_dim * 2, "num_attention_heads": 2,
                          "rope_theta": theta, "rope_scaling": scaling})
    dim = head_dim
    if factor is None:
        inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2).float() / dim))
    else:
        base = theta * factor
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))
        inv_freq = inv_freq / factor ** (2 / dim)
    ours = rotary_inv_freq(head_dim, *c.rope)
    assert ours.dtype == np.float32
    assert np.max(np.abs(ours.view(np.int32) - inv_freq.numpy().view(np.int32))) == ulps
    if factor is not None:   # the divisor is what makes it NTK: without it, every frequency but the first is off
        plain = rotary_inv_freq(head_dim, theta * factor)
        assert (plain[1:] != ours[1:]).all()

    t = torch.arange(8192, dtype=torch.float32)
    freqs = torch.einsum("i,j->ij", t, inv_freq)
    cos, sin = NUMPY.rotary_tables(np.arange(8192), head_dim, *c.rope)
    if not ulps:
        for got, want in ((cos, freqs.cos().numpy()), (sin, freqs.sin().numpy())):
            assert np.max(np.abs(got.view(np.int32).astype(np.int64) - want.view(np.int32))) <= 1


# ----------------------------------------------------------------------------------------------
# the checkpoint


def test_a_float16_checkpoint_gives_the_numbers_of_its_float32_widening(tmp_path):
    """gte-rope is stored in float16, as the reranker is: the same checkpoint widened to float32 loads to the
    same parameters and scores, bit for bit."""
    stored = load_file(str(ROPE / "model.safetensors"))
    assert {a.dtype for a in stored.values()} == {np.dtype(np.float16)}
    wide = copy_model(ROPE, tmp_path / "wide", tensors=lambda t: {k: v.astype(np.float32) for k, v in t.items()})
    pairs = [("how do I define a function?", "Functions are defined with the def keyword."), ("q", "")]
    half, full = CrossEncoder(ROPE, ops="numpy"), CrossEncoder(wide, ops="numpy")
    half_leaves, full_leaves = list(leaves(half.params)), list(leaves(full.params))
    assert len(half_leaves) == len(full_leaves) == 4 + 11 * 2 + 4   # embeddings, 2 layers, pooler, classifier
    # the matrices kept as stored (float16), everything else float32; widened, the same values
    assert all(isinstance(a, HalfTensor) == (b.ndim == 2) for a, b in zip(half_leaves, full_leaves))
    assert all(np.array_equal(np.asarray(a), b) for a, b in zip(half_leaves, full_leaves))
    assert np.array_equal(half.predict(pairs), full.predict(pairs))


def bare_new_model(tensors: dict, pooler: bool) -> dict:
    """A NewModel's checkpoint (AutoModel): the encoder without the "new." prefix, no classifier; a pooler only
    with add_pooling_layer=True."""
    return {k[len("new."):]: v for k, v in tensors.items()
            if k.startswith("new.") and (pooler or not k.startswith("new.pooler."))}


@pytest.mark.parametrize("pooler", [False, True])
def test_a_bare_new_model_is_refused_as_a_cross_encoder_and_embeds_with_mean_pooling(tmp_path, pooler):
    bare = copy_model(NTK, tmp_path / "bare", tensors=lambda t: bare_new_model(t, pooler))
    with pytest.raises(ModelFormatError, match=r"no 'classifier' tensors: this is a bare GTE \(new\) encoder"):
        CrossEncoder(bare)
    texts = ["a text", "another, longer text about the import system"]
    got = SentenceEncoder(bare, ops="numpy").encode(texts)
    ce = CrossEncoder(NTK, ops="numpy")   # the same encoder, from the full checkpoint with its "new." prefix
    for text, row in zip(texts, got):
        ids = ce.tokenizer.tokenizer.encode(text).ids
        batch = Batch.pack([(np.array(ids), np.zeros(len(ids), np.int64))])
        hidden = encoder(ce.params, ce.config, batch, NUMPY)                      # [T, H]
        np.testing.assert_allclose(row, hidden.mean(axis=0), rtol=1e-6, atol=1e-6)  # no modules.json: mean pooling


def test_pack_qkv_decides_the_tensor_names(tmp_path):
    """gte-ntk-long has q_proj / k_proj / v_proj (pack_qkv false); read as packed, qkv_proj is missing."""
    wrong = copy_model(NTK, tmp_path / "wrong", config=lambda raw: {**raw, "pack_qkv": True})
    with pytest.raises(ModelFormatError) as info:
        CrossEncoder(wrong)
    assert "missing tensor new.encoder.layer.0.attention.qkv_proj.weight, expected shape [48, 16]" in str(info.value)
    assert "unexpected tensor new.encoder.layer.0.attention.q_proj.weight" in str(info.value)


def test_no_token_type_table_with_type_vocab_size_0_and_row_0_everywhere_with_1():
    assert CrossEncoder(NTK).params.embeddings.token_type is None
    assert CrossEncoder(ROPE).params.embeddings.token_type.shape == (1, 32)


def test_a_pair_longer_than_max_position_embeddings_is_refused():
    ce = CrossEncoder(ROPE, ops="numpy")
    ids = np.zeros(65, np.int64)
    with pytest.raises(InputError, match="longer than the model's 64 positions"):
        forward(ce.params, ce.config, Batch.pack([(ids, ids)]), NUMPY)


# ----------------------------------------------------------------------------------------------
# the goldens fail where gte differs from its neighbours


def test_the_goldens_catch_a_missing_ntk_divisor_swapped_up_gate_halves_and_a_missing_token_type_row():
    ntk = CrossEncoder(NTK, ops="numpy")
    arrays, batch = golden(NTK)
    _, stages = forward(ntk.params, ntk.config, batch, NUMPY, return_stages=True)
    assert all(within_tolerance(stages[s], arrays[s]) for s in ("embeddings", "layer_0", "layer_1", "logits"))
    plain = dataclasses.replace(ntk.config, rope_scaling=None, rope_theta=ntk.config.rope[0])  # theta * f, no divisor
    _, stages = forward(ntk.params, plain, batch, NUMPY, return_stages=True)
    assert within_tolerance(stages["embeddings"], arrays["embeddings"])
    assert not within_tolerance(stages["layer_0"], arrays["layer_0"])

    I = ntk.config.intermediate_size
    layers = tuple(dataclasses.replace(p, mlp_in=dataclasses.replace(
        p.mlp_in, weight=np.concatenate([p.mlp_in.weight[I:], p.mlp_in.weight[:I]]))) for p in ntk.params.layers)
    _, stages = forward(dataclasses.replace(ntk.params, layers=layers), ntk.config, batch, NUMPY, return_stages=True)
    assert not within_tolerance(stages["layer_0"], arrays["layer_0"])   # GELU on up, not on gate

    rope = CrossEncoder(ROPE, ops="numpy")
    arrays, batch = golden(ROPE)
    emb = dataclasses.replace(rope.params.embeddings, token_type=None)
    _, stages = forward(dataclasses.replace(rope.params, embeddings=emb), rope.config, batch, NUMPY, return_stages=True)
    assert not within_tolerance(stages["embeddings"], arrays["embeddings"])


def test_positions_count_from_0_even_past_a_pad_token_inside_a_pair():
    """Unlike RoBERTa's, gte's position ids are 0, 1, 2, ...: a <pad> inside a pair (gte-rope's pair 8) is an
    ordinary position."""
    arrays, batch = golden(ROPE)
    meta = json.loads((ROPE / "golden.json").read_text(encoding="utf-8"))
    assert "<pad>" in meta["tokens"][8] and (batch.input_ids[batch.offsets[8]:batch.offsets[9]] == 1).any()
    rope = CrossEncoder(ROPE, ops="numpy")
    _, stages = forward(rope.params, rope.config, batch, NUMPY, return_stages=True)
    assert within_tolerance(stages["layer_0"], arrays["layer_0"])


# ----------------------------------------------------------------------------------------------
# transformers 5's native GTE: explain's attention, and the golden's numbers


def golden_spec():
    """tools/goldens/gte.py, for its conversion of a "new" checkpoint to transformers' native GTE."""
    sys.path.insert(0, str(TOOLS / "goldens"))
    try:
        spec = importlib.util.spec_from_file_location("goldens_gte_spec", TOOLS / "goldens" / "gte.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module   # its dataclasses look their module up
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(TOOLS / "goldens"))
    return module


@pytest.mark.parametrize("directory", [ROPE, NTK], ids=lambda d: d.name)
def test_explain_attention_and_the_goldens_are_transformers_native_gte(directory):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from minibert.oracle.explain import explain

    spec = golden_spec()
    c = raw_config(directory)
    config = transformers.GteConfig(
        vocab_size=c["vocab_size"], hidden_size=c["hidden_size"], num_hidden_layers=c["num_hidden_layers"],
        num_attention_heads=c["num_attention_heads"], intermediate_size=c["intermediate_size"],
        max_position_embeddings=c["max_position_embeddings"], type_vocab_size=c["type_vocab_size"],
        layer_norm_eps=c["layer_norm_eps"], pad_token_id=c["pad_token_id"], num_labels=len(c["id2label"]),
        rope_parameters=spec.native_rope_parameters(c), attn_implementation="eager")
    from safetensors.torch import load_file as load_torch
    model = transformers.GteForSequenceClassification(config).eval()
    model.load_state_dict(spec.native_state_dict(load_torch(directory / "model.safetensors"), c), strict=True)

    ce = CrossEncoder(directory)
    e = explain(ce, "how do I define a function?", "A function definition defines a user-defined function object.")
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(e.input_ids[None]), output_attentions=True)
    want = np.stack([a[0, :, 0, :].numpy() for a in out.attentions])    # [layers, NH, T]: the first query's row
    np.testing.assert_allclose(e.attention, want, atol=1e-5, rtol=0)
    np.testing.assert_allclose(e.logits, out.logits[0].numpy(), atol=1e-5, rtol=1e-5)

    recorded = json.loads((directory / "golden.json").read_text(encoding="utf-8"))["checks"]["native_transformers"]
    assert max(recorded["max_abs_diff"].values()) <= ATOL and recorded["rope_parameters"] == spec.native_rope_parameters(c)
