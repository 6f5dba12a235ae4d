"""How forward passes run: the op set, the cores, and the batch budget, for every caller.

A `Runner` is what CrossEncoder and SentenceEncoder (and through them the server and the batch
scorers) hand their inputs to. Texts are tokenized a chunk at a time, and each chunk is cut into
batches of at most `batch_size` sequences and `max_batch_tokens` tokens: with packed
(padding-free) batches, the token budget bounds the memory of a forward pass whatever the number
of inputs. The passes run in streams, one per core (`threads`), each with BLAS at one thread.

The streaming methods (predict_iter, encode_iter) read their input a window at a time and score
each window as predict / encode would score it alone. Windows are cut by content only (a count
and a character budget), never by timing, so the same input always gives the same numbers.
"""

import contextlib
import functools
import math
import sys
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from itertools import islice

import numpy as np
from threadpoolctl import ThreadpoolController

from minibert.errors import ConfigError, InputError
from minibert.models.batch import Batch
from minibert.ops import OpSet, op_set
from minibert.ops.shared import shared

DEFAULT_MAX_BATCH_TOKENS = 16384  # tokens per forward pass: about 100 MB of activations for MiniLM
TOKENIZE_CHUNK = 1024             # sequences tokenized at a time, so memory stays bounded on long inputs
WINDOW_ITEMS = TOKENIZE_CHUNK     # inputs a streaming method reads ahead: a window of <= this many...
WINDOW_CHARS = 1 << 24            # ...holding <= 16M characters (or a single longer input)
# A single pass (one input) of fewer tokens runs with BLAS's own threads, not shared between the cores by
# minibert (ops/shared.py): on a 2-core VM, one pair of 39-209 tokens scored 1.1-1.7x sooner with BLAS at 2
# threads (MiniLM), of 256 1.2x (XLM-R large and ModernBERT base shapes); from about 512 the shared pass was
# as fast or faster (1.07-1.1x at 512, XLM-R large).
SHARED_MIN_TOKENS = 512


def windows(items, size, max_items=None, max_chars=None):
    """Consecutive lists of the iterable `items`: at most max_items (default WINDOW_ITEMS) each, and a
    window ends as soon as the sizes (size(item), in characters) of its items reach max_chars (default
    WINDOW_CHARS). Reads no further ahead."""
    max_items = WINDOW_ITEMS if max_items is None else max_items
    max_chars = WINDOW_CHARS if max_chars is None else max_chars
    items = iter(items)
    while True:
        window, chars = [], 0
        for item in islice(items, max_items):
            window.append(item)
            chars += size(item)
            if chars >= max_chars:
                break
        if not window:
            return
        yield window


def batches(lengths, max_sequences, max_tokens):
    """Consecutive (start, end) ranges of at most max_sequences sequences and max_tokens tokens."""
    start, tokens = 0, 0
    for i, n in enumerate(lengths):
        if i > start and (i - start == max_sequences or tokens + n > max_tokens):
            yield start, i
            start, tokens = i, 0
        tokens += n
    if start < len(lengths):
        yield start, len(lengths)


def stream(items, size, score, what: str, progress: "Progress | None" = None):
    """score(window, index of its first item, progress) for each window of the iterable `items`,
    flattened: a generator. `items` must be an iterable other than a str (checked now, not at the
    first next()). `progress` (closed at the end) counts every item, over all windows."""
    if isinstance(items, (str, bytes)) or not hasattr(items, "__iter__"):
        raise InputError(f"expected an iterable of {what}, found {type(items).__name__}")

    def scored():
        first = 0
        try:
            for window in windows(items, size):
                yield from score(window, first, progress)
                first += len(window)
        finally:
            if progress is not None:
                progress.close()
    return scored()


def distinct(items: list) -> tuple[list, np.ndarray]:
    """(the distinct items in order of first appearance, where [n]: items[i] == distinct[where[i]]).

    Scoring each distinct input once makes duplicates score exactly alike."""
    first: dict = {}
    where = np.array([first.setdefault(item, len(first)) for item in items], dtype=np.int64)
    return list(first), where


def length_or_none(items) -> int | None:
    """len(items) for a sized iterable (a list, a range), None for a generator or a file."""
    try:
        return len(items)
    except TypeError:
        return None


class Progress:
    """A tqdm progress bar on stderr: inputs done (as the caller counts them), inputs per second,
    time left when the total is known. `show` False makes every call a no-op."""

    def __init__(self, show: bool, desc: str, unit: str, total: int | None = None):
        self.bar = None
        if show:
            from tqdm.auto import tqdm  # imported only when a bar is shown

            self.bar = tqdm(total=total, desc=desc, unit=f" {unit}", file=sys.stderr, dynamic_ncols=True,
                            smoothing=0.1)

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def forward_batches(items: list, encode, batch_size: int, max_tokens: int, streams: int = 1):
    """(start, end, Batch) for each forward pass over items[start:end], in order.

    encode(items, first_index) tokenizes TOKENIZE_CHUNK items at a time. With streams > 1, the
    streams share the budget: each pass gets batch_size / streams sequences and max_tokens / streams
    tokens (a longer single sequence still gets a pass of its own), so that the passes held at once
    take no more memory than one pass of the whole budget.
    """
    per_batch = math.ceil(batch_size / streams)
    per_tokens = max(1, max_tokens // streams)
    for chunk_start in range(0, len(items), TOKENIZE_CHUNK):
        chunk = encode(items[chunk_start:chunk_start + TOKENIZE_CHUNK], chunk_start)
        for start, end in batches([len(ids) for ids, _ in chunk], per_batch, per_tokens):
            start, end = chunk_start + start, chunk_start + end
            yield start, end, Batch.pack(chunk[start - chunk_start:end - chunk_start])


class Runner:
    """Runs forward passes over a list of inputs: with this op set, on this many cores, within this budget.

    threads: the cores to score on. The passes run in that many streams at once, each whole forward
    passes with BLAS at one thread: that keeps both cores busier than one pass whose every small matrix
    product is split across them (and no stream waits on another's elementwise work). A single input
    is one pass on every core: from SHARED_MIN_TOKENS tokens BLAS still at one thread, its products' rows
    and attention's heads split between `threads` threads (minibert/ops/shared.py); a shorter one with
    BLAS at `threads`. None: as many as BLAS's own setting.
    max_batch_tokens: at most this many tokens in one forward pass; the streams share it and the batch
    size (forward_batches), so the passes held at once are bounded as one pass would be.
    """

    def __init__(self, ops=None, threads=None, max_batch_tokens=DEFAULT_MAX_BATCH_TOKENS, max_length: int = 1):
        check_max_batch_tokens(max_batch_tokens, max_length)
        check_threads(threads)
        self.ops: OpSet = op_set(ops)
        self.threads, self.max_batch_tokens = threads, max_batch_tokens

    def run(self, items: list, encode, work, batch_size: int, progress: "Progress | None" = None,
            where: np.ndarray | None = None):
        """(start, end, work(batch, ops)) for each forward pass over items[start:end], in order.

        encode(items, first_index) tokenizes. After each pass, `progress` advances by the caller's inputs
        that pass stands for: with `where` (items are the distinct inputs, where[i] the item of the
        caller's input i, as distinct gives it), a repeated input counts as often as the caller gave it.
        """
        counts = np.bincount(where, minlength=len(items)) if where is not None else None   # [len(items)]
        streams = stream_count(self.threads, len(items))
        passes = forward_batches(items, encode, batch_size, self.max_batch_tokens, streams)
        for start, end, result in self._run_passes(passes, work, streams):
            yield start, end, result
            if progress is not None:
                progress.update(int(counts[start:end].sum()) if counts is not None else end - start)

    def _run_passes(self, passes, work, streams: int):
        """(start, end, work(batch, ops)) for each pass. Streams share one setting of BLAS's threads (it is the
        process's), made once; one stream sets it for each pass, which may be short or long."""
        if streams > 1:
            ops, blas = self.pass_ops(streams)
            with limit_threads(blas):
                for (start, end, _), result in run_streams(passes, lambda job: work(job[2], ops), streams):
                    yield start, end, result
            return
        for start, end, batch in passes:
            ops, blas = self.pass_ops(1, len(batch.input_ids))
            with limit_threads(blas):
                result = work(batch, ops)
            yield start, end, result

    def pass_ops(self, streams: int, tokens: int | None = None) -> tuple[OpSet, int | None]:
        """The op set of a pass (of `tokens` tokens, when known) and BLAS's threads meanwhile. Several streams:
        the runner's op set, BLAS at one thread (a core each). One stream on several cores: from SHARED_MIN_TOKENS
        tokens, the op set shared between them (ops/shared.py) with BLAS at one thread still; a shorter pass, the
        runner's op set with BLAS at `threads` (too little to split, and BLAS's own threads do it sooner). One
        stream on one core: the runner's op set, BLAS at `threads`."""
        workers = self.threads or blas_threads()
        if streams > 1:
            return self.ops, 1
        if workers == 1 or (tokens is not None and tokens < SHARED_MIN_TOKENS):
            return self.ops, self.threads
        return shared(self.ops, workers), 1


def stream_count(threads: int | None, n_items: int) -> int:
    """How many forward passes run at once: one per core the caller gives (threads; None: as many as
    BLAS would use), and no more than there are inputs."""
    return max(1, min(threads or blas_threads(), n_items))


@functools.cache
def blas_libraries():
    """The BLAS libraries loaded when minibert first runs (NumPy's among them: numpy is imported before any of
    minibert), found once: finding them scans every loaded library (0.3 ms; a predict asked three times, 6% of
    a short pair's score), while reading or setting their threads is a call into each (microseconds)."""
    return ThreadpoolController().select(user_api="blas")


def blas_threads() -> int:
    """The threads BLAS would use now (its own setting: OPENBLAS_NUM_THREADS, OMP_NUM_THREADS, the cores)."""
    return max((lib.num_threads for lib in blas_libraries().lib_controllers), default=1)


@contextlib.contextmanager
def limit_threads(n: int | None):
    """Run the block with at most n BLAS threads (None: leave the settings as they are). The Numba
    kernels are serial within a stream (see minibert/ops/kernels.py)."""
    if n is None:
        yield
        return
    with blas_libraries().limit(limits=n):
        yield


def run_streams(jobs, work, streams: int):
    """(job, work(job)) for each job of the iterable, in order, with `streams` jobs running at once
    on their own threads (work must release the GIL for its heavy parts: BLAS and the nogil
    kernels do). Reads the jobs at most 2 x streams ahead, so memory stays bounded."""
    if streams == 1:
        for job in jobs:
            yield job, work(job)
        return
    with ThreadPoolExecutor(streams, thread_name_prefix="minibert-stream") as pool:
        pending = deque()
        for job in jobs:
            pending.append((job, pool.submit(work, job)))
            if len(pending) >= 2 * streams:
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()


def _is_positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def check_batch_size(batch_size):
    if not _is_positive_int(batch_size):
        raise ConfigError(f"batch_size must be a positive integer, found {batch_size!r}")


def check_max_batch_tokens(max_batch_tokens, max_length):
    if not _is_positive_int(max_batch_tokens) or max_batch_tokens < max_length:
        raise ConfigError(
            f"max_batch_tokens must be an integer >= max_length ({max_length}), found {max_batch_tokens!r}")


def check_threads(threads):
    if threads is not None and not _is_positive_int(threads):
        raise ConfigError(f"threads must be a positive integer or None, found {threads!r}")


def listed(indices, shown=10) -> str:
    """'0, 3, 7' or '0, 1, ... (25 in all)': the inputs an error is about."""
    text = ", ".join(str(i) for i in indices[:shown])
    return text if len(indices) <= shown else f"{text}, ... ({len(indices)} in all)"
