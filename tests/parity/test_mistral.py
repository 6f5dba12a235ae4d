"""Mistral read as a reranker, live, through the decoder battery: a sliding window in every layer that the pairs
pass, one kv head, LogitScore("Yes", "No") with the llama-reranker golden's tokenizer files and template, and its
text path without a template."""

import pytest

pytest.importorskip("transformers")

from parity.battery import DecoderBattery, DecoderSpec

SHAPE = dict(hidden_size=24, intermediate_size=30, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
             max_position_embeddings=160, rms_norm_eps=1e-5, sliding_window=9,
             rope_parameters={"rope_type": "default", "rope_theta": 10000.0})


class TestMistral(DecoderBattery):
    spec = DecoderSpec("mistral", name="Mistral", shape=SHAPE, golden="llama-reranker", score_tokens=("Yes", "No"),
                       seq_cls=(("window-9", {}),))
