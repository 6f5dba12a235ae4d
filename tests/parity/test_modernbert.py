"""ModernBERT's live parity: the battery (battery.py) on two tiny random ModernBertForSequenceClassification
models, on pairs of up to 1,300 tokens (far beyond the sliding window and 512): config.json with the Hub's
legacy keys and cls pooling, every bias on; and transformers 5's layer_types and rope_parameters, mean
pooling, no biases but the classifier's, two labels. Then ModernBERT's own: config.json read as
transformers reads it, SentenceEncoder on a classification checkpoint (its head skipped), and on a bare
encoder laid out as sentence-transformers saves it."""

import json
import shutil

import numpy as np
import pytest
import torch
import transformers
from op_sets import OP_SETS

from minibert import SentenceEncoder
from minibert.models import config_from_dict
from parity.battery import ParityBattery
from parity.harness import (
    QUERIES,
    SENTENCES,
    Refused,
    Scale,
    Spec,
    Variant,
    assert_close,
    torch_threads,
    write_sentence_transformers_layout,
)

# hidden 32: at 48 the pre-norm residual stream reaches |x| 19, and float32 rounding alone takes some of
# transformers' hidden states (not minibert's) further than the tolerance from float64.
COMMON = {"hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 40, "num_hidden_layers": 4,
          "max_position_embeddings": 2048, "hidden_activation": "gelu", "classifier_activation": "gelu"}
LEGACY_KEYS = ("global_attn_every_n_layers", "global_rope_theta", "local_rope_theta")
# Word embeddings without randomize_'s per-row offsets, which make the embedding norm ill-conditioned on
# purpose (the goldens expose a one-pass variance with them): torch's float32 error there (~4e-6) is carried
# by the pre-norm residual stream through every layer, and transformers' layers then differ from
# minibert's, which stay closer to float64, by up to 3e-5.
WORD_EMBEDDINGS = {"model.embeddings.tok_embeddings.weight": Scale(0.02)}


def write_legacy_config(variant, directory):
    """config.json as the Hub's checkpoints have it: the legacy keys instead of layer_types / rope_parameters."""
    if any(key in variant.config for key in LEGACY_KEYS):
        path = directory / "config.json"
        raw = json.loads(path.read_text(encoding="utf-8"))
        raw.pop("layer_types"), raw.pop("rope_parameters")
        raw.update({key: variant.config[key] for key in LEGACY_KEYS})
        path.write_text(json.dumps(raw, indent=2), encoding="utf-8")


def long_pairs(live):
    """Pairs of 1,000+ tokens, many past 512."""
    lengths = [len(ids) for ids in live.reference.ids]
    assert max(lengths) > 1000 and sum(n > 512 for n in lengths) >= 2 * len(QUERIES), lengths


def legacy_keys_read(live):
    """transformers derived the layer types and thetas from the legacy keys."""
    long_pairs(live)
    config = live.model.config
    assert config.layer_types == ["full_attention", "sliding_attention", "sliding_attention", "full_attention"]
    assert config.rope_parameters["sliding_attention"]["rope_theta"] == 10000.0


SPEC = Spec(
    model_type="modernbert", model_class="ModernBertForSequenceClassification", base_class="ModernBertModel",
    token_ids={"pad_token_id": "pad_token_id", "bos_token_id": "cls_token_id", "eos_token_id": "sep_token_id",
               "cls_token_id": "cls_token_id", "sep_token_id": "sep_token_id"},
    after_save=write_legacy_config,
    variants=(
        # as config.json of gte-reranker-modernbert-base; tokenizer.json with padding and truncation baked in
        Variant("legacy-cls", seed=11, tokenizer="modernbert-cls", max_length=2048, truncates=False, token_types=False,
                scales=WORD_EMBEDDINGS, probe_queries=1,
                config=dict(COMMON, global_attn_every_n_layers=3, global_rope_theta=160000.0, local_rope_theta=10000.0,
                            local_attention=64, classifier_pooling="cls", num_labels=1, norm_bias=True,
                            attention_bias=True, mlp_bias=True, classifier_bias=True),
                expect=legacy_keys_read),
        Variant("v5-mean", seed=12, tokenizer="modernbert-mean", max_length=2048, truncates=False, token_types=False,
                scales=WORD_EMBEDDINGS, probe_queries=1,
                config=dict(COMMON, layer_types=["sliding_attention", "full_attention", "sliding_attention",
                                                 "full_attention"],
                            rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 80000.0},
                                             "sliding_attention": {"rope_type": "default", "rope_theta": 500.0}},
                            local_attention=33, classifier_pooling="mean", num_labels=2, norm_bias=False,
                            attention_bias=False, mlp_bias=False, classifier_bias=False),
                expect=long_pairs),
    ),
    refused=(
        Refused("classifier_pooling", "max", "unsupported classifier_pooling 'max'"),
        Refused("hidden_activation", "gelu_new", "unsupported hidden_activation 'gelu_new'"),
    ),
)


class TestModernBert(ParityBattery):
    spec = SPEC


# ----------------------------------------------------------------------------------------------
# sentence embeddings


@pytest.mark.parametrize("op_set", OP_SETS)
def test_sentence_encoder_on_a_sentence_transformers_layout(live_models, tmp_path, op_set):
    """A bare ModernBertModel with modules.json, mean Pooling and max_seq_length 1024, in batches of 2."""
    st = pytest.importorskip("sentence_transformers")
    where = tmp_path / "st"
    shutil.copytree(live_models(SPEC, "v5-mean").bare_directory, where)
    write_sentence_transformers_layout(where, COMMON["hidden_size"], max_seq_length=1024)
    reference = st.SentenceTransformer(str(where), device="cpu")
    with torch_threads(reference):
        want = reference.encode(SENTENCES, convert_to_numpy=True, batch_size=2)
    encoder = SentenceEncoder(where, ops=op_set)
    assert encoder.max_seq_length == 1024
    got = encoder.encode(SENTENCES, batch_size=2)
    assert_close(got, want, f"SentenceEncoder, sentence-transformers layout [{op_set}]")


def test_sentence_encoder_skips_the_classification_head(live_models):
    """A ModernBertForSequenceClassification directory (no modules.json): its encoder, final norm included,
    mean-pooled; head.* and classifier.* are not read."""
    live = live_models(SPEC, "legacy-cls")
    model = transformers.AutoModel.from_pretrained(live.directory, attn_implementation="eager",
                                                   dtype=torch.float32).eval()
    with torch.no_grad(), torch_threads(model):
        want = np.stack([model(**live.tokenizer([text], truncation=True, max_length=live.variant.max_length,
                                                return_tensors="pt")).last_hidden_state[0].mean(0).numpy()
                         for text in SENTENCES])
    got = SentenceEncoder(live.directory).encode(SENTENCES)
    assert_close(got, want, "SentenceEncoder on a classification checkpoint")


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
    hf = transformers.ModernBertConfig.from_dict(dict(raw))
    ours = config_from_dict({"model_type": "modernbert", **raw})
    assert list(ours.layer_types) == hf.layer_types
    for layer_type in set(hf.layer_types):
        assert ours.rope_theta(layer_type) == hf.rope_parameters[layer_type]["rope_theta"]
        assert ours.rope_parameters[layer_type]["rope_type"] == hf.rope_parameters[layer_type]["rope_type"]
    assert ours.sliding_window == hf.sliding_window
    assert ours.local_attention == hf.local_attention
