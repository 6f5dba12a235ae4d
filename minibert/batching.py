"""How scoring and embedding split their inputs into forward passes, shared by both APIs.

Texts are tokenized a chunk at a time, and each chunk is cut into batches of at most
`batch_size` sequences and `max_batch_tokens` tokens: with packed (padding-free) batches, the
token budget bounds the memory of a forward pass whatever the number of inputs.
"""

from minibert.errors import ConfigError

DEFAULT_MAX_BATCH_TOKENS = 16384  # tokens per forward pass: about 100 MB of activations for MiniLM
TOKENIZE_CHUNK = 1024             # sequences tokenized at a time, so memory stays bounded on long inputs


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
