"""BertForSequenceClassification's forward pass (transformers, eval mode), top to bottom.

Dimension letters, used in the shape comments:
    B   pairs in the batch             T   tokens per pair (padded length)
    H   hidden_size                    NH  num_attention_heads
    HD  head size, H // NH             I   intermediate_size
    L   num_labels                     V   vocab_size

Every function is pure: (parameters, config, arrays, op set) -> arrays. The op set is
`minibert.ops` (NumPy reference) or `minibert.kernels` (Numba), with the same names; matrix
products are NumPy's. Inference only, so there is no dropout (in eval mode it is the
identity). Every stage stays float32.
"""

import os

import numpy as np

from minibert import ops as reference_ops
from minibert.config import BertConfig
from minibert.errors import InputError
from minibert.weights import BertParams, Embeddings, EncoderLayer, Linear


def embeddings(p: Embeddings, c: BertConfig, input_ids, token_type_ids, ops):
    T = input_ids.shape[1]
    x = p.word[input_ids]                   # [B, T] -> [B, T, H]
    x = x + p.token_type[token_type_ids]    # [B, T, H]
    x = x + p.position[:T]                  # positions 0..T-1: [T, H], broadcast over B
    return ops.layer_norm(x, p.norm.weight, p.norm.bias, c.layer_norm_eps)


def additive_mask(attention_mask):
    """1 = attend, 0 = padding -> 0 or the most negative float32, added to the scores."""
    blocked = (attention_mask == 0)[:, None, None, :]               # [B, T] -> [B, 1, 1, T]
    return np.where(blocked, np.finfo(np.float32).min, np.float32(0.0)).astype(np.float32)


def self_attention(p: EncoderLayer, c: BertConfig, x, mask, ops):
    B, T, H = x.shape
    NH, HD = c.num_attention_heads, c.head_dim

    def heads(t):
        return t.reshape(B, T, NH, HD).transpose(0, 2, 1, 3)        # [B, T, H] -> [B, NH, T, HD]

    q = heads(ops.linear(x, p.query.weight, p.query.bias))          # [B, NH, T, HD]
    k = heads(ops.linear(x, p.key.weight, p.key.bias))              # [B, NH, T, HD]
    v = heads(ops.linear(x, p.value.weight, p.value.bias))          # [B, NH, T, HD]
    scores = (q @ k.transpose(0, 1, 3, 2)) * np.float32(HD ** -0.5)  # [B, NH, T, T]
    probs = ops.softmax(scores + mask)                              # [B, NH, T, T], rows sum to 1
    context = probs @ v                                             # [B, NH, T, HD]
    context = context.transpose(0, 2, 1, 3).reshape(B, T, H)        # [B, NH, T, HD] -> [B, T, H]
    return ops.linear(context, p.attn_out.weight, p.attn_out.bias)  # [B, T, H]


def encoder_layer(p: EncoderLayer, c: BertConfig, x, mask, ops):
    # Post-LN: each sublayer's output is added to its input, then normalized.
    attended = self_attention(p, c, x, mask, ops)                           # [B, T, H]
    x = ops.add_layer_norm(attended, x, p.attn_norm.weight, p.attn_norm.bias, c.layer_norm_eps)
    h = ops.gelu(ops.linear(x, p.ffn_in.weight, p.ffn_in.bias))             # [B, T, H] -> [B, T, I]
    h = ops.linear(h, p.ffn_out.weight, p.ffn_out.bias)                     # [B, T, I] -> [B, T, H]
    return ops.add_layer_norm(h, x, p.ffn_norm.weight, p.ffn_norm.bias, c.layer_norm_eps)


def pooler(p: Linear, x, ops):
    first = x[:, 0]                                    # the [CLS] token: [B, T, H] -> [B, H]
    return np.tanh(ops.linear(first, p.weight, p.bias))  # [B, H]


def classifier(p: Linear, pooled, ops):
    return ops.linear(pooled, p.weight, p.bias)        # [B, H] -> [B, L], raw logits


def forward(params: BertParams, c: BertConfig, input_ids, token_type_ids, attention_mask,
            ops=reference_ops, return_stages=False):
    """Logits [B, L] for a padded batch; with return_stages, also every intermediate stage."""
    check_inputs(c, input_ids, token_type_ids, attention_mask)
    stages = {}
    x = embeddings(params.embeddings, c, input_ids, token_type_ids, ops)   # [B, T, H]
    stages["embeddings"] = x
    mask = additive_mask(attention_mask)                                    # [B, 1, 1, T]
    for i, layer in enumerate(params.layers):
        x = encoder_layer(layer, c, x, mask, ops)                           # [B, T, H]
        stages[f"layer_{i}"] = x
    pooled = pooler(params.pooler, x, ops)                                  # [B, H]
    logits = classifier(params.classifier, pooled, ops)                     # [B, L]
    stages["pooled"], stages["logits"] = pooled, logits
    return (logits, stages) if return_stages else logits


def check_inputs(c: BertConfig, input_ids, token_type_ids, attention_mask):
    """Shapes and id ranges; NumPy would wrap a negative index silently."""
    if input_ids.ndim != 2 or input_ids.shape != token_type_ids.shape or input_ids.shape != attention_mask.shape:
        raise InputError(
            f"input_ids, token_type_ids and attention_mask must share one [B, T] shape; found "
            f"{input_ids.shape}, {token_type_ids.shape}, {attention_mask.shape}")
    T = input_ids.shape[1]
    if T > c.max_position_embeddings:
        raise InputError(f"{T} tokens per pair, more than max_position_embeddings ({c.max_position_embeddings})")
    if input_ids.size == 0:
        return
    for name, ids, size in (("token id", input_ids, c.vocab_size), ("token type id", token_type_ids, c.type_vocab_size)):
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= size:
            bad = low if low < 0 else high
            raise InputError(f"{name} {bad} is outside the model's range [0, {size})")


def pad_batch(encoded, pad_id=0):
    """[(ids, type_ids), ...] -> input_ids, token_type_ids, attention_mask, each [B, T] int64."""
    T = max((len(ids) for ids, _ in encoded), default=0)
    input_ids = np.full((len(encoded), T), pad_id, dtype=np.int64)
    token_type_ids = np.zeros((len(encoded), T), dtype=np.int64)
    attention_mask = np.zeros((len(encoded), T), dtype=np.int64)
    for row, (ids, type_ids) in enumerate(encoded):
        input_ids[row, :len(ids)] = ids
        token_type_ids[row, :len(ids)] = type_ids
        attention_mask[row, :len(ids)] = 1
    return input_ids, token_type_ids, attention_mask


def default_ops():
    """The Numba kernels when numba is installed and MINIBERT_NO_NUMBA is not set, else NumPy."""
    if os.environ.get("MINIBERT_NO_NUMBA", "") not in ("", "0"):
        return reference_ops
    try:
        from minibert import kernels
    except ImportError:
        return reference_ops
    return kernels
