"""Qwen2 (mxbai-rerank-v2's backbone) read as a reranker, live, through the decoder battery: q/k/v biases, grouped
kv heads, sliding-window layers that the longer pairs pass, LogitScore("1", "0") with the mxbai-reranker golden's
tokenizer (byte-level BPE rebuilt by Qwen2Tokenizer) and template, and its text path without a template."""

import pytest

pytest.importorskip("transformers")

from parity.battery import DecoderBattery, DecoderSpec

SHAPE = dict(hidden_size=24, intermediate_size=30, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
             max_position_embeddings=160, rms_norm_eps=1e-6, tie_word_embeddings=False,
             rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})


class TestQwen2(DecoderBattery):
    spec = DecoderSpec(
        "qwen2", name="Qwen2", shape=SHAPE, golden="mxbai-reranker", score_tokens=("1", "0"),
        seq_cls=(("sliding", dict(use_sliding_window=True, sliding_window=7, max_window_layers=1)),
                  ("mha-tied", dict(num_key_value_heads=4, tie_word_embeddings=True))))
