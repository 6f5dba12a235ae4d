"""Mistral: Llama's decoder (llama.py) with Mistral's switch, as transformers' modeling_mistral.py sets it.

How Mistral differs from Llama, and where it acts in llama.py:
- no bias anywhere (no attention_bias, no mlp_bias field).
- sliding_window (4,096 by default; null turns it off) applies to every layer: each token sees the last
  `sliding_window` tokens of its pair, itself included (`attention_windows`).
"""

from dataclasses import dataclass

from minibert.models.llama import DecoderConfig, check_window, decoder_family


@dataclass(frozen=True)
class MistralConfig(DecoderConfig):
    """MistralConfig's fields (transformers) over the decoder's, with its defaults."""
    intermediate_size: int = 14336
    num_key_value_heads: int | None = 8
    max_position_embeddings: int = 4096 * 32
    sliding_window: int | None = 4096
    model_type: str = "mistral"

    def check(self):
        super().check()
        if self.sliding_window is not None:
            check_window(self, self.sliding_window)

    def attention_windows(self) -> tuple:
        return (self.sliding_window,) * self.num_hidden_layers


FAMILY = decoder_family("Mistral", "mistral", MistralConfig, "LlamaTokenizerFast")
