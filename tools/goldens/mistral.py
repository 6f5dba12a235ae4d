"""Mistral goldens: a Mistral decoder reranker as sentence-transformers 6 saves it.

- mistral-reranker: a MistralForCausalLM (4 query heads over 1 key/value head, a sliding window of 48 tokens in
  every layer, which the longer pairs pass), with llama.py's tokenizer files, template and LogitScore("Yes", "No").
Made and checked as qwen3.py makes its golden (the reference is transformers' MistralForCausalLM, eager, float32).
"""

from __future__ import annotations

import core
from llama import Llama
from qwen3 import DecoderFixture
from transformers import MistralConfig, MistralForCausalLM

SEED = 20261209


class Mistral(Llama):
    config_class, model_class = MistralConfig, MistralForCausalLM
    fixtures = (
        DecoderFixture(
            name="mistral-reranker", seed=SEED, model_max_length=120,
            config=dict(hidden_size=24, intermediate_size=34, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=1, max_position_embeddings=160, rms_norm_eps=1e-5, sliding_window=48,
                        tie_word_embeddings=False, rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
            pairs=core.RANKING_PAIRS[:5] + core.RANKING_PAIRS[9:11] + [("", ""), ("Yes", "No")],
            rank_groups=core.RANK_GROUP, tokenizer_case_lengths=(None, 60),
        ),
    )


FAMILY = Mistral()
