"""Llama goldens: a Llama decoder reranker as sentence-transformers 6 saves it.

- llama-reranker: a LlamaForCausalLM (4 query heads over 2 key/value heads, attention and MLP biases, untied
  lm_head) with the gemma golden's kind of SentencePiece-style BPE saved as a plain tokenizer.json (tokenizer_class
  TokenizersBackend: the file as it is; minibert does not rebuild LlamaTokenizer), the bge-gemma-like template and
  LogitScore("Yes", "No").
Made and checked as qwen3.py makes its golden (the reference is transformers' LlamaForCausalLM, eager, float32).
"""

from __future__ import annotations

import json
from pathlib import Path

import core
from gemma import Gemma
from qwen3 import DecoderFixture
from transformers import LlamaConfig, LlamaForCausalLM

SEED = 20261208


class Llama(Gemma):
    config_class, model_class = LlamaConfig, LlamaForCausalLM
    score_tokens = ("Yes", "No")
    norm_center = 1.0
    fixtures = (
        DecoderFixture(
            name="llama-reranker", seed=SEED, model_max_length=120,
            config=dict(hidden_size=24, intermediate_size=34, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, max_position_embeddings=160, rms_norm_eps=1e-5,
                        tie_word_embeddings=False, attention_bias=True, mlp_bias=True,
                        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
            pairs=core.RANKING_PAIRS[:5] + core.RANKING_PAIRS[9:11] + [("", ""), ("Yes", "No")],
            rank_groups=core.RANK_GROUP, tokenizer_case_lengths=(None, 60),
        ),
    )

    def write_tokenizer(self, fx: DecoderFixture, out: Path) -> dict[str, int]:
        vocab = super().write_tokenizer(fx, out)
        path = out / "tokenizer_config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "tokenizer_class": "TokenizersBackend"}, indent=2))
        return vocab


FAMILY = Llama()
