"""Llama read as a reranker, live, through the decoder battery: grouped kv heads, attention and MLP biases (the
seq-cls variants), LogitScore("Yes", "No") with the llama-reranker golden's tokenizer files and template, and its
text path without a template."""

import pytest

pytest.importorskip("transformers")

from parity.battery import DecoderBattery, DecoderSpec

SHAPE = dict(hidden_size=24, intermediate_size=30, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             max_position_embeddings=160, rms_norm_eps=1e-5, rope_parameters={"rope_type": "default", "rope_theta": 500.0})


class TestLlama(DecoderBattery):
    spec = DecoderSpec(
        "llama", name="Llama", shape=SHAPE, golden="llama-reranker", score_tokens=("Yes", "No"),
        seq_cls=(("biases-head-dim", dict(attention_bias=True, mlp_bias=True, head_dim=10)),))
