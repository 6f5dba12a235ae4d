"""sentence-transformers' pooling: the last hidden states of a packed batch -> one vector per text.

The same encoder that scores pairs embeds single texts; a sentence encoder replaces the head
(pooler, classifier) with a parameter-free pooling of the last hidden states, then optionally
normalizes (minibert/formats/sentence_transformers.py reads which):

    encoder            the last layer's hidden states   [N, H] (packed: text b owns rows offsets[b]:offsets[b+1])
    pooling            cls / max / mean / ...            [B, H] per mode, concatenated: [B, P * H]
    Normalize          x / max(||x||, 1e-12), if listed  [B, D]

Dimension letters as in minibert/models/bert.py, plus P pooling modes and D = P * H.
"""

import numpy as np

from minibert.models.batch import Batch

NORMALIZE_EPS = 1e-12  # torch.nn.functional.normalize's default eps
_COUNT_EPS = np.float32(1e-9)  # sentence-transformers clamps token counts (and weight sums) to this


# sentence-transformers pools a padded [B, T, H] batch through its attention mask; a packed batch
# holds only real tokens, so the mask is all ones and drops out of every formula below.


def cls_pooling(x, batch: Batch):
    # sentence-transformers takes the first unmasked token: with right padding, position 0 ([CLS]).
    return x[batch.offsets[:-1]]                                        # [N, H] -> [B, H]


def max_pooling(x, batch: Batch):
    # sentence-transformers sets padded positions to -inf before the max; there are none here.
    return np.maximum.reduceat(x, batch.offsets[:-1], axis=0)           # [N, H] -> [B, H]


def _token_sums(x, batch: Batch):
    return np.add.reduceat(x, batch.offsets[:-1], axis=0)               # [N, H] -> [B, H], float32


def _token_counts(batch: Batch):
    # A float32 count, clamped as sentence-transformers does: clamp(mask.sum(1), min=1e-9).
    return np.maximum(np.diff(batch.offsets).astype(np.float32), _COUNT_EPS)[:, None]   # [B, 1]


def mean_pooling(x, batch: Batch):
    return _token_sums(x, batch) / _token_counts(batch)                 # [B, H]


def mean_sqrt_len_pooling(x, batch: Batch):
    return _token_sums(x, batch) / np.sqrt(_token_counts(batch))        # [B, H]


def weighted_mean_pooling(x, batch: Batch):
    # Token t of a text weighs t + 1 (sentence-transformers counts from the first unmasked token).
    weights = (batch.positions + 1).astype(np.float32)[:, None]         # [N, 1]
    sums = np.add.reduceat(x * weights, batch.offsets[:-1], axis=0)     # [B, H]
    total = np.add.reduceat(weights, batch.offsets[:-1], axis=0)        # [B, 1]
    return sums / np.maximum(total, _COUNT_EPS)                         # [B, H]


def last_token_pooling(x, batch: Batch):
    return x[batch.offsets[1:] - 1]                                     # [N, H] -> [B, H]


# sentence-transformers' mode name -> its function (minibert/formats/sentence_transformers.py accepts these names).
POOLING = {
    "cls": cls_pooling,
    "max": max_pooling,
    "mean": mean_pooling,
    "mean_sqrt_len_tokens": mean_sqrt_len_pooling,
    "weightedmean": weighted_mean_pooling,
    "lasttoken": last_token_pooling,
}


def pool(x, batch: Batch, modes: tuple[str, ...]):
    """[N, H] hidden states -> [B, P * H] sentence embeddings, one block of H per mode, in order."""
    return np.concatenate([POOLING[mode](x, batch) for mode in modes], axis=1)


def l2_normalize(x):
    """torch.nn.functional.normalize(x, p=2, dim=-1): x / max(||x||_2, 1e-12), row by row."""
    norms = np.linalg.norm(x, axis=-1, keepdims=True)                   # [B, D] -> [B, 1]
    return x / np.maximum(norms, np.float32(NORMALIZE_EPS))             # [B, D]


def cos_sim(a, b):
    """Cosine similarity of every row of a [n, D] with every row of b [m, D]: [n, m] float32."""
    return l2_normalize(a) @ l2_normalize(b).T     # as sentence-transformers' util.cos_sim
