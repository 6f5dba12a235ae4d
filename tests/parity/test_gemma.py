"""Gemma (bge-reranker-v2-gemma's backbone) read as a reranker, live, through the decoder battery: (1 + weight)
RMSNorm, sqrt(hidden) embedding scale, tanh-GELU gate, head_dim of its own, multi-query attention (one kv head),
tied embeddings, LogitScore("Yes") with no false token, the gemma-reranker golden's SentencePiece-style BPE (as
transformers 5's GemmaTokenizer rebuilds it) and template, and its text path (<bos> query <bos> passage)."""

import pytest

pytest.importorskip("transformers")

from parity.battery import DecoderBattery, DecoderSpec

SHAPE = dict(hidden_size=24, intermediate_size=36, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
             head_dim=10, max_position_embeddings=160, rms_norm_eps=1e-6,
             rope_parameters={"rope_type": "default", "rope_theta": 10000.0})


class TestGemma(DecoderBattery):
    spec = DecoderSpec(
        "gemma", name="Gemma", shape=SHAPE, golden="gemma-reranker", score_tokens=("Yes", None), norm_center=0.0,
        seq_cls=(("mqa", {}), ("gqa-bias", dict(num_key_value_heads=2, attention_bias=True))))
