"""ModernBERT without torch: its config (both styles, and every option it does not implement named),
its checkpoint layout (a missing, unexpected or headless checkpoint named), and the rules a golden
could hide (the window, the stage list). The numbers themselves are in test_goldens.py and
parity/test_modernbert.py."""

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from minibert import ConfigError, CrossEncoder, ModelFormatError, SentenceEncoder
from minibert.models import config_from_dict, forward
from minibert.runtime.load import load_config

GOLDENS = Path(__file__).parent / "fixtures" / "goldens"
CLS, MEAN = GOLDENS / "modernbert-cls", GOLDENS / "modernbert-mean"


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


# ----------------------------------------------------------------------------------------------
# config.json


def test_the_legacy_config_reads_as_its_transformers_5_equivalent():
    legacy = raw_config(CLS)
    assert "layer_types" not in legacy and legacy["global_attn_every_n_layers"] == 2
    c = load_config(CLS)
    assert c.layer_types == ("full_attention", "sliding_attention", "full_attention")
    assert (c.rope_theta("full_attention"), c.rope_theta("sliding_attention")) == (1000.0, 50.0)
    modern = {k: v for k, v in legacy.items() if k not in ("global_attn_every_n_layers", "global_rope_theta",
                                                            "local_rope_theta")}
    modern["layer_types"] = list(c.layer_types)
    modern["rope_parameters"] = {"full_attention": {"rope_type": "default", "rope_theta": 1000.0},
                                 "sliding_attention": {"rope_type": "default", "rope_theta": 50.0}}
    assert dataclasses.replace(config_from_dict(modern, "m"), source=c.source) == c


def test_defaults_are_modernbert_configs():
    c = config_from_dict({"model_type": "modernbert"})
    assert (c.num_hidden_layers, c.hidden_size, c.intermediate_size, c.max_tokens, c.sliding_window) == (22, 768, 1152,
                                                                                                      8192, 64)
    assert c.layer_types[:4] == ("full_attention", "sliding_attention", "sliding_attention", "full_attention")
    assert (c.rope_theta("full_attention"), c.rope_theta("sliding_attention")) == (160000.0, 10000.0)
    assert not (c.norm_bias or c.attention_bias or c.mlp_bias or c.classifier_bias)
    assert c.type_vocab_size == 0 and c.classifier_pooling == "cls"


UNSUPPORTED = [
    ({"hidden_activation": "gelu_pytorch_tanh"}, "hidden_activation 'gelu_pytorch_tanh'"),
    ({"classifier_activation": "silu"}, "classifier_activation 'silu'"),
    ({"classifier_pooling": "max"}, "classifier_pooling 'max'"),
    ({"rope_parameters": {"full_attention": {"rope_type": "linear", "factor": 2.0}}}, "rope_type 'linear'"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope_type 'yarn'"),
    ({"rope_parameters": {"rope_type": "default", "rope_theta": 5.0}}, "field 'rope_parameters'"),
    ({"rope_parameters": {"sliding_attention": None}}, r"rope_parameters\['sliding_attention'\] must be an object"),
    ({"global_rope_theta": -1.0}, "rope_theta must be a positive"),
    ({"layer_types": ["full_attention"]}, "layer_types must list 3 layers"),
    ({"layer_types": ["full_attention", "chunked_attention", "full_attention"]}, "chunked_attention"),
    ({"global_attn_every_n_layers": 0}, "global_attn_every_n_layers"),
    ({"num_attention_heads": 4}, "even head size"),                        # 20 / 4 = 5
    ({"head_dim": 4}, "head_dim 4"),
    ({"norm_bias": "yes"}, "norm_bias 'yes'"),
    ({"norm_eps": 0}, "norm_eps"),
    ({"local_attention": 0}, "local_attention"),
]


@pytest.mark.parametrize("change, message", UNSUPPORTED, ids=[m for _, m in UNSUPPORTED])
def test_an_option_minibert_does_not_implement_is_named(change, message):
    raw = {**raw_config(CLS), **change}
    with pytest.raises(ConfigError, match=message) as info:
        config_from_dict(raw, "some/config.json")
    assert "some/config.json" in str(info.value)


def test_sliding_window_sets_local_attention_as_transformers_setter_does():
    c = config_from_dict({**raw_config(CLS), "sliding_window": 3})
    assert (c.local_attention, c.sliding_window) == (6, 3)


# ----------------------------------------------------------------------------------------------
# the checkpoint


def without(*prefixes):
    return lambda tensors: {k: v for k, v in tensors.items() if not k.startswith(prefixes)}


def test_a_checkpoint_without_its_head_is_not_a_cross_encoder_but_an_encoder(tmp_path):
    headless = copy_model(MEAN, tmp_path / "headless", tensors=without("head.", "classifier."))
    with pytest.raises(ModelFormatError, match="bare ModernBERT encoder .* not a cross-encoder"):
        CrossEncoder(headless)
    assert SentenceEncoder(headless).encode("a text").shape == (16,)


def test_missing_and_unexpected_tensors_are_named(tmp_path):
    def edit(tensors):
        del tensors["model.layers.1.attn_norm.weight"]
        tensors["model.layers.0.attn_norm.weight"] = np.ones(20, np.float32)  # layer 0 has none (nn.Identity)
        return tensors
    broken = copy_model(CLS, tmp_path / "broken", tensors=edit)
    with pytest.raises(ModelFormatError) as info:
        CrossEncoder(broken)
    message = str(info.value)
    assert "missing tensor model.layers.1.attn_norm.weight, expected shape [20]" in message
    assert "unexpected tensor model.layers.0.attn_norm.weight" in message


def test_biases_follow_the_config(tmp_path):
    """modernbert-mean has no attention biases: a config that says it has them finds them missing."""
    wrong = copy_model(MEAN, tmp_path / "wrong", config=lambda raw: {**raw, "attention_bias": True})
    with pytest.raises(ModelFormatError, match=r"missing tensor model.layers.0.attn.Wqkv.bias, expected shape \[48\]"):
        CrossEncoder(wrong)


def test_a_bare_modernbert_model_and_a_masked_lm_checkpoint_load_as_encoders(tmp_path):
    """A bare ModernBertModel saves the encoder without "model."; ModernBertForMaskedLM adds head.* and decoder.*."""
    want = SentenceEncoder(MEAN).encode(["a text", "another one"])
    bare = copy_model(MEAN, tmp_path / "bare", tensors=lambda t: {
        k[len("model."):]: v for k, v in t.items() if k.startswith("model.")})
    masked_lm = copy_model(MEAN, tmp_path / "mlm", tensors=lambda t: {
        **without("classifier.")(t), "decoder.weight": t["model.embeddings.tok_embeddings.weight"],
        "decoder.bias": np.zeros(t["model.embeddings.tok_embeddings.weight"].shape[0], np.float32)})
    for directory in (bare, masked_lm):
        assert np.array_equal(SentenceEncoder(directory).encode(["a text", "another one"]), want), directory.name


# ----------------------------------------------------------------------------------------------
# rules a golden depends on


def test_the_window_is_half_of_local_attention():
    """modernbert-mean has local_attention 13: a window of 6 tokens each side. A window of 7 (local_attention
    14) changes the first (sliding) layer's output on the long pairs; 12 (the same // 2) changes nothing."""
    ce = CrossEncoder(MEAN)
    batch = ce.tokenizer.encode_pairs([("how does the import system find a module?", "x " * 300)])
    from minibert.models import Batch
    batch = Batch.pack(batch)
    _, base = forward(ce.params, ce.config, batch, ce.ops, return_stages=True)
    for local_attention, same in ((12, True), (14, False), (11, False)):
        config = dataclasses.replace(ce.config, local_attention=local_attention)
        _, stages = forward(ce.params, config, batch, ce.ops, return_stages=True)
        assert np.array_equal(stages["layer_0"], base["layer_0"]) == same, local_attention
    assert np.array_equal(stages["embeddings"], base["embeddings"])


def test_stages_are_transformers_hidden_states_then_the_head():
    ce = CrossEncoder(CLS)
    from minibert.models import Batch
    batch = Batch.pack(ce.tokenizer.encode_pairs([("a query", "a passage"), ("q", "")]))
    logits, stages = forward(ce.params, ce.config, batch, ce.ops, return_stages=True)
    assert list(stages) == ["embeddings", "layer_0", "layer_1", "layer_2", "pooled", "logits"]
    assert stages["pooled"].shape == (2, 20) and logits.shape == (2, 1)
