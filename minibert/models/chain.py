"""sentence-transformers' module chains: an encoder of any family, then the modules that turn its last
hidden states into an embedding or a score (minibert/formats/sentence_transformers.py reads them).

    Transformer       the family's encoder, no head            last hidden states   [N, H]
    Pooling           cls / mean / max / ... (pooling.py)      sentence_embedding   [B, P * H]
    Dense             act(x W^T (+ b))                         [B, D_in] -> [B, D_out]
    LayerNorm         nn.LayerNorm(D): eps 1e-5, weight, bias  [B, D]
    Normalize         x / max(||x||, 1e-12)                    [B, D]
    Dropout           the identity at inference

A CrossEncoder's last module is a Dense that writes the scores ([B, L]: its logits); a Ettin reranker
is ModernBERT -> Pooling(cls) -> Dense(H -> H, no bias, GELU) -> LayerNorm -> Dense(H -> 1). Stages:
the encoder's (embeddings, layer_i), then each module's output named by its folder ("1_Pooling",
"2_Dense", ...), the scores last, as `logits`. Dimension letters as in bert.py; D a module's width.
"""

from dataclasses import dataclass

import numpy as np

from minibert.errors import ConfigError, ModelFormatError
from minibert.formats import sentence_transformers as st
from minibert.models.family import Family
from minibert.models.params import LayerNorm, Linear, linear, linear_spec, norm_spec
from minibert.models.pooling import l2_normalize, pool

LAYER_NORM_EPS = 1e-5   # sentence-transformers' LayerNorm module: nn.LayerNorm(dimension), never configured


@dataclass(frozen=True)
class Chain:
    """A cross-encoder's or a sentence encoder's model: the family's encoder and the modules after it."""
    encoder: object          # the family's parameter tree, no head
    modules: tuple           # (module config from formats.sentence_transformers, its parameters or None), in order


def skeleton(module, width: int):
    """The tensor-name table of one module whose input is `width` wide (None: a module without weights)."""
    if isinstance(module, st.Dense):
        if module.in_features != width:
            raise ModelFormatError(f"{module.source}: in_features is {module.in_features}, but the module before it "
                                   f"gives {width}")
        return linear_spec("linear", module.out_features, module.in_features, module.bias)
    if isinstance(module, st.LayerNorm):
        if module.dimension != width:
            raise ModelFormatError(f"{module.source}: dimension is {module.dimension}, but the module before it "
                                   f"gives {width}")
        return norm_spec("norm", module.dimension)
    if isinstance(module, st.Pooling) and module.dimension not in (None, width):
        raise ConfigError(f"{module.source}: field 'word_embedding_dimension' (embedding_dimension) is "
                               f"{module.dimension}, but the encoder has hidden_size {width}")
    return None


def output_width(module, width: int) -> int:
    """The width of a module's output, given its input's."""
    if isinstance(module, st.LogitScore):
        return 1
    if isinstance(module, st.Pooling):
        return len(module.modes) * width
    return module.out_features if isinstance(module, st.Dense) else width


def reads_first_token_only(chain: Chain) -> bool:
    """cls pooling alone: the last layer is needed at each pair's first token only."""
    first = chain.modules[0][0] if chain.modules else None
    return isinstance(first, st.Pooling) and first.modes == ("cls",)


def stage_name(module) -> str:
    """A module's output is a stage named by its folder ("2_Dense"); the scores are the `logits`."""
    writes_scores = isinstance(module, st.LogitScore) or isinstance(module, st.Dense) and module.output == st.SCORES
    return "logits" if writes_scores else module.name


# ---------------------------------------------------------------------------------------------
# The forward pass


def activation(name: str, x, ops):
    """A torch.nn activation as sentence-transformers instantiates it (no arguments: GELU is exact)."""
    if name == "Identity":
        return x
    if name == "GELU":
        return ops.gelu(x)
    if name == "Tanh":
        return np.tanh(x)
    if name == "ReLU":
        return ops.relu(x)
    e = np.exp(-np.abs(x))                                    # Sigmoid, without overflow
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(np.float32)


def dense(module: st.Dense, p: Linear, x, ops):
    return activation(module.activation, linear(p, x, ops), ops)   # [B, D_in] -> [B, D_out]


def layer_norm(p: LayerNorm, x, ops):
    return ops.layer_norm(x, p.weight, p.bias, LAYER_NORM_EPS)   # [B, D]


def run_module(module, p, x, batch, ops, first_tokens=False):
    """One module: its input (token embeddings [N, H] for Pooling, or [B, H] when the encoder computed the
    first tokens only; else [B, D]) -> its output."""
    if isinstance(module, st.Pooling):
        return x if first_tokens else pool(x, batch, module.modes)  # [N, H] -> [B, P * H]
    if isinstance(module, st.Dense):
        return dense(module, p, x, ops)
    if isinstance(module, st.LayerNorm):
        return layer_norm(p, x, ops)
    if isinstance(module, st.Normalize):
        return l2_normalize(x)
    return x                                                        # Dropout: the identity at inference


def logit_score(module: st.LogitScore, rows, last):
    """sentence-transformers' LogitScore: [B, H] hidden states at each pair's last token -> [B, 1] scores,
    logit(true) - logit(false) (the log-odds), or logit(true) alone. rows: the language-model head's rows of
    those tokens, [K, H]: the other rows of the vocabulary are never computed."""
    logits = last @ rows.T                                              # [B, K]
    return logits[:, :1] - logits[:, 1:] if module.false_token_id is not None else logits   # [B, 1]


def forward(family: Family, params: Chain, config, batch, ops, return_stages=False):
    """The encoder, then every module: the last module's output [B, D] (a cross-encoder's: its logits [B, L]);
    with return_stages, also every stage. With cls pooling the encoder's last layer computes each pair's first
    token alone (as the families' own heads do)."""
    stages = {} if return_stages else None
    first = params.modules[0] if params.modules else (None, None)
    if isinstance(first[0], st.LogitScore):   # a decoder reranker: the last token, then a few logits
        last = family.encoder(params.encoder, config, batch, ops, stages, last_only=True)   # [B, H]
        scores = logit_score(*first, last)                                              # [B, 1]
        if stages is not None:
            stages["last_token"], stages["logits"] = last, scores
        return scores if stages is None else (scores, stages)
    first_only = reads_first_token_only(params)
    x = family.encoder(params.encoder, config, batch, ops, stages, first_only=first_only)   # [N, H]; cls: [B, H]
    for module, p in params.modules:
        x = run_module(module, p, x, batch, ops, first_tokens=first_only)                   # [B, D]
        if stages is not None:
            stages[stage_name(module)] = x
    return x if stages is None else (x, stages)
