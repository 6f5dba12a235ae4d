"""Qwen3: Qwen2's decoder (qwen2.py over llama.py) with Qwen3's switches, as transformers' modular_qwen3.py
derives it from Qwen2.

How Qwen3 differs from Qwen2, and where it acts in llama.py:
- an RMSNorm of every query and key head over its HD values, before the rotation (`qk_norm`: the
  self_attn.q_norm and k_norm weights).
- head_dim is a field of its own (NH * HD need not be H), and attention_bias puts a bias on q, k, v and o alike.
The Qwen3-Reranker models are Qwen3ForCausalLM, scored from the logits of "yes" and "no" (LogitScore); their
seq-cls conversions are Qwen3ForSequenceClassification.
"""

from dataclasses import dataclass

from minibert.formats.config import check_choice
from minibert.models.llama import decoder_family
from minibert.models.qwen2 import Qwen2Config


@dataclass(frozen=True)
class Qwen3Config(Qwen2Config):
    """Qwen3Config's fields (transformers) over Qwen2's, with its defaults."""
    head_dim: int | None = 128
    attention_bias: bool = False
    model_type: str = "qwen3"

    qk_norm = True
    qkv_bias = property(lambda self: self.attention_bias)
    o_bias = property(lambda self: self.attention_bias)

    def check(self):
        super().check()
        check_choice(self, "attention_bias", (True, False))


FAMILY = decoder_family("Qwen3", "qwen3", Qwen3Config, "Qwen2TokenizerFast")
