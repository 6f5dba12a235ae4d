"""Gemma (Gemma 1): Llama's decoder (llama.py) with Gemma's switches, as transformers' modeling_gemma.py sets them.

How Gemma differs from Llama, and where it acts in llama.py:
- RMSNorm scales by (1 + weight), in float32 (`norm_offset`): a zero weight is the identity.
- the embeddings are multiplied by sqrt(hidden_size), the factor rounded to the hidden states' float32
  (`embed_scale`); the tied language-model head reads the embedding unscaled.
- the feed-forward's gate is tanh-GELU (hidden_act "gelu_pytorch_tanh"; the legacy "gelu" means it too):
  down(gelu_tanh(gate(x)) * up(x)).
- head_dim is a field of its own (256 by default); attention_bias puts a bias on q, k, v and o alike.
bge-reranker-v2-gemma is a GemmaForCausalLM scored from the logit of "Yes" alone (LogitScore, no false token).
Gemma 2 and 3 (logit softcapping, alternating sliding windows, other norms) have other model_types and are not
read here.
"""

from dataclasses import dataclass

import numpy as np

from minibert.errors import ConfigError
from minibert.formats.config import check_choice
from minibert.models.llama import DecoderConfig, decoder_family


@dataclass(frozen=True)
class GemmaConfig(DecoderConfig):
    """GemmaConfig's fields (transformers) over the decoder's, with its defaults."""
    vocab_size: int = 256000
    hidden_size: int = 3072
    intermediate_size: int = 24576
    num_hidden_layers: int = 28
    num_attention_heads: int = 16
    num_key_value_heads: int | None = 16
    head_dim: int | None = 256
    hidden_act: str = "gelu_pytorch_tanh"
    max_position_embeddings: int = 8192
    tie_word_embeddings: bool = True
    pad_token_id: int | None = 0
    attention_bias: bool = False
    use_bidirectional_attention: bool | None = None
    model_type: str = "gemma"

    norm_offset = 1.0
    qkv_bias = property(lambda self: self.attention_bias)
    o_bias = property(lambda self: self.attention_bias)

    @property
    def embed_scale(self):
        return np.float32(self.hidden_size ** 0.5)

    @classmethod
    def read_fields(cls, raw: dict, source: str) -> dict:
        values = super().read_fields(raw, source)
        if cls.value(raw, "hidden_act") == "gelu":   # transformers reads Gemma's legacy "gelu" as the tanh GELU
            values["hidden_act"] = "gelu_pytorch_tanh"
        return values

    def check(self):
        super().check()
        check_choice(self, "attention_bias", (True, False))
        if self.use_bidirectional_attention:
            raise ConfigError(f"{self.source}: use_bidirectional_attention is true; minibert implements Gemma's "
                              "causal attention only")


FAMILY = decoder_family("Gemma", "gemma", GemmaConfig, "GemmaTokenizerFast")
