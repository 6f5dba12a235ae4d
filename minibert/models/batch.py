"""The packed batch every family's forward pass takes, and the checks of its token ids.

A batch is packed: the tokens of its pairs stand back to back in one [N] array, and pair b owns
rows offsets[b]:offsets[b + 1]. Every dense layer runs on [N, H] at once, with no padding
tokens; only attention looks at one pair at a time. This is the same math as transformers'
padded batch, where a padded key gets an attention weight of exactly zero.
"""

from dataclasses import dataclass

import numpy as np

from minibert.errors import InputError


@dataclass(frozen=True)
class Batch:
    """Token ids of B pairs, packed back to back."""
    input_ids: np.ndarray       # [N] int64
    token_type_ids: np.ndarray  # [N] int64, 0 = query side, 1 = passage side (all 0 where the family has none)
    positions: np.ndarray       # [N] int64, each token's position within its own pair, from 0
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
    def lengths(self):
        return np.diff(self.offsets)  # [B] tokens of each pair

    @property
    def first_tokens(self):
        return self.offsets[:-1]  # the row of each pair's first token ([CLS], <s>)


def check_inputs(c, batch: Batch):
    """Lengths and id ranges; NumPy would wrap a negative index silently."""
    lengths = batch.lengths
    if len(lengths) and lengths.max() > c.max_tokens:
        raise InputError(f"a pair of {lengths.max()} tokens is longer than the model's {c.max_tokens} positions")
    if len(lengths) and lengths.min() < 1:
        raise InputError("a pair with no tokens: every pair needs at least its first special token")
    checks = [("token id", batch.input_ids, c.vocab_size)]
    if c.type_vocab_size:  # a family with no token type embeddings does not read them
        checks.append(("token type id", batch.token_type_ids, c.type_vocab_size))
    for name, ids, size in checks:
        if ids.size and (ids.min() < 0 or ids.max() >= size):
            bad = ids.min() if ids.min() < 0 else ids.max()
            raise InputError(f"{name} {bad} is outside the model's range [0, {size})")


def padding_idx_positions(input_ids, offsets, pad_token_id: int):
    """The position ids of the RoBERTa family (transformers' create_position_ids_from_input_ids), pair
    by pair on the packed batch: cumsum(ids != pad) * (ids != pad) + pad. Real tokens count from
    pad + 1; a pad token inside a pair gets position pad and does not advance the count. Every other
    family numbers 0, 1, 2, ... (Batch.positions). [N] -> [N] int64."""
    real = (input_ids != pad_token_id).astype(np.int64)              # [N] 1 = counted
    counted = np.cumsum(real)                                         # [N] over the whole batch
    before = np.concatenate([[0], counted])[offsets[:-1]]             # [B] counted before each pair
    within = counted - np.repeat(before, np.diff(offsets))            # [N] the count within its pair
    return within * real + pad_token_id                               # [N]
