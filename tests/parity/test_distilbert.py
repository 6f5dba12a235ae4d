"""DistilBERT's live parity: the battery (battery.py) on two tiny random DistilBertForSequenceClassification
models: a GELU feed-forward with DistilBertTokenizer (no token type ids), and a ReLU feed-forward with
sinusoidal_pos_embds and no tokenizer_class (AutoTokenizer's BertTokenizer, whose token type ids the
model never reads). Then DistilBERT's own: the stored sinusoidal table is the one used."""

import shutil

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from minibert import CrossEncoder
from parity.battery import ParityBattery
from parity.harness import (
    PAIRS,
    Refused,
    Spec,
    Variant,
    assert_close,
    load_classifier,
    run,
)

SIN_TABLE = "distilbert.embeddings.position_embeddings.weight"

SPEC = Spec(
    model_type="distilbert", model_class="DistilBertForSequenceClassification", base_class="DistilBertModel",
    variants=(
        Variant("gelu", seed=4001, tokenizer="distilbert-gelu", max_length=128, token_types=False,
                tokenizer_config={"model_max_length": 128},
                config={"dim": 40, "n_heads": 5, "hidden_dim": 61, "n_layers": 3, "max_position_embeddings": 128,
                        "activation": "gelu", "num_labels": 1}),
        # The sinusoidal table stays as transformers built it (deterministic already); all else is re-drawn.
        Variant("relu-sin", seed=4002, tokenizer="distilbert-relu-sin", max_length=128,
                config={"dim": 36, "n_heads": 4, "hidden_dim": 50, "n_layers": 2, "max_position_embeddings": 128,
                        "activation": "relu", "sinusoidal_pos_embds": True, "num_labels": 1},
                scales={SIN_TABLE: None}),
    ),
    refused=(
        Refused("activation", "gelu_new", "unsupported activation 'gelu_new'"),
        Refused("sinusoidal_pos_embds", "yes", "field 'sinusoidal_pos_embds' must be true or false"),
    ),
)


class TestDistilBert(ParityBattery):
    spec = SPEC


def test_stored_sinusoidal_table_is_used(live_models, tmp_path):
    """transformers 5 loads the checkpoint's position table even with sinusoidal_pos_embds: so does minibert."""
    live = live_models(SPEC, "relu-sin")
    changed = tmp_path / "changed"
    shutil.copytree(live.directory, changed)
    tensors = load_file(str(changed / "model.safetensors"))
    g = torch.Generator().manual_seed(5)
    tensors[SIN_TABLE] = tensors[SIN_TABLE] + 0.5 * torch.randn(tensors[SIN_TABLE].shape, generator=g)
    save_file(tensors, str(changed / "model.safetensors"), metadata={"format": "pt"})
    want, _ = run(SPEC, load_classifier(SPEC, changed), live.tokenizer, PAIRS, live.variant.max_length)
    assert np.abs(want - live.reference.logits).max() > 1e-2, "perturbing the stored table did not change the scores"
    got = CrossEncoder(changed).predict(PAIRS)
    assert_close(got, want[:, 0], "distilbert with a perturbed stored sinusoidal table")
