"""Long passages scored whole: a passage cut into overlapping windows, each scored with the query.

A cross-encoder sees at most max_length tokens of a pair, so by default ("truncate") the end of a long
passage is never read. With a window policy the passage's tokens are cut into windows that each fill
what the query and the special tokens leave of max_length, consecutive windows sharing `stride` tokens:

    [CLS] query [SEP] passage[0 : R] [SEP]            window 0: exactly the pair truncation makes
    [CLS] query [SEP] passage[R - s : 2R - s] [SEP]   window 1, and so on until one reaches the end

(R: the room beside the query, s: the stride). The query is the one truncation keeps of the whole
pair: all of it, unless query and passage are both long (longest_first then gives each about half).
Each window pair is scored by the model like any pair, and the passage's score is aggregated from its
windows' logits: "max" (MaxP), "first" (window 0 alone: the truncate score) or "mean". A window is a
run of token ids, so the windows of a passage are the same whatever else is scored with it.

Layers: the tokenizer takes a pair apart and puts windows back into its template
(minibert/formats/tokenizer.py: split_pair, join_pair); this module decides where windows start and
how their scores combine; CrossEncoder (cross_encoder.py) runs them through its Runner.
"""

from dataclasses import dataclass

import numpy as np

from minibert.errors import ConfigError

POLICIES = ("truncate", "max", "first", "mean")
DEFAULT_STRIDE = 128   # tokens shared by consecutive windows (at most half a window: see bounds)


@dataclass(frozen=True)
class Windows:
    """One pair's passage cut into windows."""
    query_ids: np.ndarray     # [Q] int64: the query's tokens, as the pair's truncation keeps them
    passage_ids: np.ndarray   # [N] int32: every token of the passage
    bounds: np.ndarray        # [W, 2] int64: each window's tokens, passage_ids[start:end]
    spans: np.ndarray         # [W, 2] int64: each window's characters, passage[start:end]

    def __len__(self) -> int:
        return len(self.bounds)

    def tokens(self, tokenizer, window: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids [T], type_ids [T]) of window pair `window`, special tokens included."""
        start, end = self.bounds[window]
        return tokenizer.join_pair(self.query_ids, self.passage_ids[start:end])

    def lengths(self, specials: int) -> np.ndarray:
        """[W] tokens of each window pair, given the template's number of special tokens."""
        return specials + len(self.query_ids) + self.bounds[:, 1] - self.bounds[:, 0]


def check_policy(long_passages, stride) -> None:
    if long_passages not in POLICIES:
        raise ConfigError(f"long_passages must be one of {POLICIES}, found {long_passages!r}")
    if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or stride < 0:
        raise ConfigError(f"stride must be an integer >= 0 (tokens shared by consecutive windows), found {stride!r}")


def cut_windows(tokenizer, query: str, passage: str, stride: int) -> Windows:
    """The windows of one pair (tokenizer: a PairTokenizer), consecutive ones sharing `stride` tokens."""
    split = tokenizer.split_pair(query, passage)
    found = bounds(len(split.passage_ids), split.room, stride)                 # [W, 2]
    return Windows(split.query_ids, split.passage_ids, found, spans(split.offsets, found))


def bounds(n: int, room: int, stride: int) -> np.ndarray:
    """[W, 2] (start, end) token ranges of windows of `room` tokens over n tokens: the first starts at 0,
    each next one `room - overlap` tokens further (overlap: stride, at most room // 2, so a passage of n
    tokens makes at most about 2n / room windows), the last is the first to reach n (it may be shorter).
    A passage that fits, or a room of 0 tokens (a query that takes all of max_length), is one window."""
    if n <= room or room < 1:
        return np.array([[0, min(n, room)]], dtype=np.int64)
    step = room - min(stride, room // 2)
    starts = np.arange(0, n - room + step, step, dtype=np.int64)               # the last one reaches n
    return np.stack([starts, np.minimum(starts + room, n)], axis=1)


def spans(offsets: np.ndarray, token_bounds: np.ndarray) -> np.ndarray:
    """[W, 2] characters of each window: from its first token's start to its last token's end ((0, 0) for an
    empty window). offsets: [N, 2] each token's characters."""
    out = np.zeros(token_bounds.shape, dtype=np.int64)
    full = token_bounds[:, 1] > token_bounds[:, 0]
    out[full, 0] = offsets[token_bounds[full, 0], 0]
    out[full, 1] = offsets[token_bounds[full, 1] - 1, 1]
    return out


def aggregate(logits: np.ndarray, counts: np.ndarray, policy: str) -> tuple[np.ndarray, np.ndarray]:
    """(scores [n] float32, best [n]) of n passages from their windows' logits [sum(counts)] float32, each
    passage's windows consecutive and in order (counts [n] >= 1).

    max: the best window's logit; first: window 0's; mean: the mean of the logits (in float64, then
    float32). best: the index, within its passage, of the window the score comes from: the best one for
    max and mean (the first of equals), 0 for first.
    """
    if len(counts) == 0:
        return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
    starts = np.cumsum(counts) - counts                                        # [n] each passage's window 0
    owner = np.repeat(np.arange(len(counts)), counts)                          # [sum(counts)] its passage
    top = np.maximum.reduceat(logits, starts)                                  # [n]
    at_top = np.flatnonzero(logits == top[owner])                              # ascending, so per passage...
    firsts = at_top[np.r_[True, owner[at_top][1:] != owner[at_top][:-1]]]      # ...the first of equals
    best = np.zeros(len(counts), dtype=np.int64)
    best[owner[firsts]] = firsts - starts[owner[firsts]]
    if policy == "max":
        return top.astype(np.float32), best
    if policy == "first":
        return logits[starts].astype(np.float32), np.zeros(len(counts), dtype=np.int64)
    means = np.add.reduceat(logits.astype(np.float64), starts) / counts       # [n]
    return means.astype(np.float32), best
