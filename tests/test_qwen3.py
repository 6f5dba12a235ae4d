"""Qwen3 read as a reranker (minibert/models/qwen3.py) against transformers' own Qwen3ForSequenceClassification
and Qwen3ForCausalLM (eager attention, float32), on tiny random models with grouped-query attention, a head_dim
that is not hidden_size / heads, and sliding-window layers; pairs of token ids, packed."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from minibert.formats.checkpoint import read_checkpoint
from minibert.models import qwen3
from minibert.models.batch import Batch
from minibert.models.params import params_from_tensors
from minibert.ops import op_set
from tests.op_sets import OP_SETS

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
    logits, stages = qwen3.forward(params, cfg, batch, op_set(ops), return_stages=True)
    fast = qwen3.forward(params, cfg, batch, op_set(ops))   # the last layer at the last token only
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
    np.testing.assert_allclose(qwen3.forward(params, cfg, batch, op_set("numpy")), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_causal_lm_token_logits(tmp_path, tied):
    """Qwen3ForCausalLM's next-token logits after the last token, for two vocabulary rows (a reranker's yes / no)."""
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
    if not tied:
        params = qwen3.Qwen3Params(params.embed, params.layers, params.final_norm, None,
                                   tensors["lm_head.weight"].astype(np.float32))
    ids = pairs_of_ids(4)
    batch = Batch.pack([(i, np.zeros_like(i)) for i in ids])
    rows = [7, 123]
    got = qwen3.token_logits(params, cfg, batch, rows, op_set("numpy"))
    with torch.no_grad():
        expected = np.stack([model(torch.tensor(i)[None]).logits[0, -1, rows].numpy() for i in ids])
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)
