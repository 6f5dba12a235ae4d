"""Qwen2: Llama's decoder (llama.py) with Qwen2's switches, as transformers' modeling_qwen2.py sets them.

How Qwen2 differs from Llama, and where it acts in llama.py:
- q_proj, k_proj and v_proj have a bias, o_proj and the MLP none (`qkv_bias`, `o_bias`), whatever the file says.
- sliding-window attention when use_sliding_window is set: the layers from max_window_layers on (or as
  layer_types lists them) see the last `sliding_window` tokens only (`attention_windows`).
The mxbai-rerank-v2 rerankers are Qwen2ForCausalLM, scored from the logits of "1" and "0" (LogitScore).
"""

from dataclasses import dataclass

from minibert.errors import ConfigError, show
from minibert.formats.config import check_choice, check_layer_types
from minibert.models.llama import DecoderConfig, check_window, decoder_family

LAYER_TYPES = ("full_attention", "sliding_attention")


@dataclass(frozen=True)
class Qwen2Config(DecoderConfig):
    """Qwen2Config's fields (transformers) over the decoder's, with its defaults; sliding_window and layer_types
    as its __post_init__ derives them (read_fields)."""
    vocab_size: int = 151936
    hidden_size: int = 4096
    intermediate_size: int = 22016
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = 32
    max_position_embeddings: int = 32768
    use_sliding_window: bool = False
    sliding_window: int | None = 4096      # None once read unless use_sliding_window
    max_window_layers: int = 28
    layer_types: tuple[str, ...] = ()
    model_type: str = "qwen2"

    qkv_bias = property(lambda self: True)

    @classmethod
    def read_fields(cls, raw: dict, source: str) -> dict:
        values = super().read_fields(raw, source)
        window = cls.value(raw, "sliding_window") if cls.value(raw, "use_sliding_window") else None
        values["sliding_window"] = window
        listed = raw.get("layer_types")
        if listed is not None and not isinstance(listed, list):
            raise ConfigError(f"{source}: field 'layer_types' must be a list, found {show(listed)}")
        layers, first_window = cls.value(raw, "num_hidden_layers"), cls.value(raw, "max_window_layers")
        if listed is None and isinstance(layers, int) and isinstance(first_window, int):
            listed = ["sliding_attention" if window is not None and i >= first_window else "full_attention"
                      for i in range(layers)]
        values["layer_types"] = tuple(listed or ())
        return values

    def check(self):
        super().check()
        check_choice(self, "use_sliding_window", (True, False))
        check_layer_types(self, LAYER_TYPES)
        if "sliding_attention" in self.layer_types:
            check_window(self, self.sliding_window)

    def attention_windows(self) -> tuple:
        return tuple(self.sliding_window if t == "sliding_attention" else None for t in self.layer_types)


FAMILY = decoder_family("Qwen2", "qwen2", Qwen2Config, "Qwen2TokenizerFast")
