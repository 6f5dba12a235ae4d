"""Qwen2 goldens: an mxbai-rerank-v2-style decoder reranker, as sentence-transformers 6 saves it.

- mxbai-reranker: a Qwen2ForCausalLM (4 query heads over 2 key/value heads of 6 values, q/k/v biases, the second
  layer a sliding-window layer of 40 tokens that the longer pairs pass), tied embeddings, the qwen3 golden's kind of
  byte-level BPE rebuilt by Qwen2Tokenizer (tokenizer_config.json names it), an mxbai-like ChatML template (the
  system message replaces the default instruction) and LogitScore(true "1", false "0"): score = logit("1") -
  logit("0") at the last position.
Made and checked as qwen3.py makes its golden (the reference is transformers' Qwen2ForCausalLM, eager, float32).
"""

from __future__ import annotations

import json
from pathlib import Path

import core
from qwen3 import DecoderFixture, Qwen3
from transformers import Qwen2Config, Qwen2ForCausalLM

SEED = 20261206
TEMPLATE = (
    "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\n"
    "{% set sys = messages | selectattr('role', 'eq', 'system') | map(attribute='content') | first %}"
    "query: {{ messages | selectattr('role', 'eq', 'query') | map(attribute='content') | first }}\n"
    "document: {{ messages | selectattr('role', 'eq', 'document') | map(attribute='content') | first }}\n"
    "{{ sys if sys else 'You are a search relevance expert. Judge whether the document is relevant to the query: "
    "answer 0 for not relevant, 1 for relevant.' }}\nRelevance:<|im_end|>\n<|im_start|>assistant\n")


class Qwen2(Qwen3):
    config_class, model_class = Qwen2Config, Qwen2ForCausalLM
    score_tokens = ("1", "0")
    template = TEMPLATE
    weight_scale = 0.2
    fixtures = (
        DecoderFixture(
            name="mxbai-reranker", seed=SEED, model_max_length=200,
            config=dict(hidden_size=24, intermediate_size=28, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-6,
                        tie_word_embeddings=True, use_sliding_window=True, sliding_window=40, max_window_layers=1,
                        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
            pairs=core.RANKING_PAIRS[:5] + core.RANKING_PAIRS[9:11] + [("", ""), ("1", "0")],
            rank_groups=core.RANK_GROUP, tokenizer_case_lengths=(None, 70),
        ),
    )

    def write_tokenizer(self, fx: DecoderFixture, out: Path) -> dict[str, int]:
        vocab = super().write_tokenizer(fx, out)
        path = out / "tokenizer_config.json"   # as Qwen's repositories name it: AutoTokenizer rebuilds the class
        path.write_text(json.dumps({**json.loads(path.read_text()), "tokenizer_class": "Qwen2Tokenizer"}, indent=2))
        return vocab


FAMILY = Qwen2()
