"""BertForSequenceClassification's forward pass (transformers, eval mode), top to bottom.

Dimension letters, used in the shape comments:
    B   pairs in the batch             N   tokens of all pairs together (no padding)
    T   tokens of one pair             H   hidden_size
    NH  num_attention_heads            HD  head size, H // NH
    I   intermediate_size              L   num_labels

A batch is packed: the tokens of its pairs stand back to back in one [N] array, and pair b owns
rows offsets[b]:offsets[b + 1]. Every dense layer (the projections, the feed-forward network)
runs on [N, H] at once, with no padding tokens; only attention looks at one pair at a time.
This is the same math as transformers' padded batch, where a padded key gets an attention weight
of exactly zero, with none of the work on padding.

Every function is pure: (parameters, config, arrays, op set) -> arrays. The op set is
`minibert.ops` (NumPy reference) or `minibert.kernels` (Numba), with the same names; matrix
products are NumPy's. Inference only, so there is no dropout (in eval mode it is the identity).
Every stage stays float32.
"""

import os
from dataclasses import dataclass

import numpy as np

from minibert import ops as reference_ops
from minibert.config import BertConfig
from minibert.errors import InputError
from minibert.weights import BertParams, Embeddings, EncoderLayer, Linear


@dataclass(frozen=True)
class Batch:
    """Token ids of B pairs, packed back to back."""
    input_ids: np.ndarray       # [N] int64
    token_type_ids: np.ndarray  # [N] int64, 0 = query side, 1 = passage side
    positions: np.ndarray       # [N] int64, each token's position within its own pair
    offsets: np.ndarray         # [B + 1] int64, pair b is rows offsets[b]:offsets[b + 1]

    @classmethod
    def pack(cls, encoded):
        """[(ids [T_b], type_ids [T_b]), ...] -> Batch."""
        lengths = np.array([len(ids) for ids, _ in encoded], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        if not len(encoded):
            empty = np.zeros(0, np.int64)
            return cls(empty, empty, empty, offsets)
        positions = np.arange(offsets[-1], dtype=np.int64) - np.repeat(offsets[:-1], lengths)
        return cls(np.concatenate([ids for ids, _ in encoded]).astype(np.int64),
                   np.concatenate([types for _, types in encoded]).astype(np.int64),
                   positions, offsets)

    @property
    def first_tokens(self):
        return self.offsets[:-1]  # the row of each pair's [CLS] token


def embeddings(p: Embeddings, c: BertConfig, batch: Batch, ops):
    x = p.word[batch.input_ids]                  # [N] -> [N, H]
    x = x + p.token_type[batch.token_type_ids]   # [N, H]
    x = x + p.position[batch.positions]          # [N, H]
    return ops.layer_norm(x, p.norm.weight, p.norm.bias, c.layer_norm_eps)


def self_attention(p: EncoderLayer, c: BertConfig, x, offsets, ops):
    qkv = ops.linear(x, p.qkv.weight, p.qkv.bias)     # [N, H] -> [N, 3H]: query | key | value
    q, k, v = np.split(qkv, 3, axis=1)                # 3 x [N, H]
    # For each pair and head: softmax(q k^T / sqrt(HD)) v, over that pair's tokens only.
    context = ops.attention(q, k, v, offsets, c.num_attention_heads)  # [N, H]
    return ops.linear(context, p.attn_out.weight, p.attn_out.bias)     # [N, H]


def encoder_layer(p: EncoderLayer, c: BertConfig, x, offsets, ops):
    # Post-LN: each sublayer's output is added to its input, then normalized.
    attended = self_attention(p, c, x, offsets, ops)                        # [N, H]
    x = ops.add_layer_norm(attended, x, p.attn_norm.weight, p.attn_norm.bias, c.layer_norm_eps)
    h = ops.linear_gelu(x, p.ffn_in.weight, p.ffn_in.bias)                  # [N, H] -> [N, I]
    h = ops.linear(h, p.ffn_out.weight, p.ffn_out.bias)                     # [N, I] -> [N, H]
    return ops.add_layer_norm(h, x, p.ffn_norm.weight, p.ffn_norm.bias, c.layer_norm_eps)


def encoder(params: BertParams, c: BertConfig, batch: Batch, ops=reference_ops, stages=None):
    """Token ids -> the last layer's hidden states, [N, H]. Fills `stages` if given."""
    check_inputs(c, batch)
    x = embeddings(params.embeddings, c, batch, ops)          # [N, H]
    if stages is not None:
        stages["embeddings"] = x
    for i, layer in enumerate(params.layers):
        x = encoder_layer(layer, c, x, batch.offsets, ops)    # [N, H]
        if stages is not None:
            stages[f"layer_{i}"] = x
    return x


def pooler(p: Linear, first, ops):
    return np.tanh(ops.linear(first, p.weight, p.bias))  # dense + tanh on [CLS]: [B, H]


def classifier(p: Linear, pooled, ops):
    return ops.linear(pooled, p.weight, p.bias)          # [B, H] -> [B, L], raw logits


def forward(params: BertParams, c: BertConfig, batch: Batch, ops=reference_ops, return_stages=False):
    """Logits [B, L] for a packed batch; with return_stages, also every intermediate stage."""
    stages = {} if return_stages else None
    x = encoder(params, c, batch, ops, stages)                        # [N, H]
    pooled = pooler(params.pooler, x[batch.first_tokens], ops)        # [N, H] -> [B, H]
    logits = classifier(params.classifier, pooled, ops)               # [B, L]
    if stages is not None:
        stages["pooled"], stages["logits"] = pooled, logits
        return logits, stages
    return logits


def check_inputs(c: BertConfig, batch: Batch):
    """Lengths and id ranges; NumPy would wrap a negative index silently."""
    lengths = np.diff(batch.offsets)
    if len(lengths) and lengths.max() > c.max_position_embeddings:
        raise InputError(
            f"a pair of {lengths.max()} tokens is longer than max_position_embeddings ({c.max_position_embeddings})")
    if len(lengths) and lengths.min() < 1:
        raise InputError("a pair with no tokens: every pair needs at least its [CLS] token")
    for name, ids, size in (("token id", batch.input_ids, c.vocab_size),
                            ("token type id", batch.token_type_ids, c.type_vocab_size)):
        if ids.size and (ids.min() < 0 or ids.max() >= size):
            bad = ids.min() if ids.min() < 0 else ids.max()
            raise InputError(f"{name} {bad} is outside the model's range [0, {size})")


def default_ops():
    """The Numba kernels when numba is installed and MINIBERT_NO_NUMBA is not set, else NumPy."""
    if os.environ.get("MINIBERT_NO_NUMBA", "") not in ("", "0"):
        return reference_ops
    try:
        from minibert import kernels
    except ImportError:
        return reference_ops
    return kernels
