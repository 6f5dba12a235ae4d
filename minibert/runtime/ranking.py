"""rank(): the part CrossEncoder and SentenceEncoder share, whatever the score means."""

import numpy as np

from minibert.errors import ConfigError, InputError
from minibert.formats.tokenizer import check_unicode


def as_list(items, what: str):
    """A list of inputs; a lone str (or bytes, or a non-iterable) is an InputError."""
    if isinstance(items, (str, bytes)) or not hasattr(items, "__iter__"):
        raise InputError(f"expected {what}, found {type(items).__name__}")
    return list(items)


def check_rank_args(query, documents, top_k) -> list:
    """Check rank()'s arguments; return the documents as a list."""
    if not isinstance(query, str):
        raise InputError(f"the query must be a str, found {type(query).__name__}")
    check_unicode(query, "the query is")
    if isinstance(documents, str):
        raise InputError("documents must be a list of str, found a single str")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ConfigError(f"top_k must be a positive integer or None, found {top_k!r}")
    return as_list(documents, "a list of str")


def ranked(scores, documents, top_k, return_documents) -> list[dict]:
    """[{"corpus_id", "score"[, "text"]}], best score first, ties by corpus_id; at most top_k."""
    order = np.lexsort((np.arange(len(documents)), -np.asarray(scores, dtype=np.float64)))
    hits = []
    for i in order[:top_k]:
        hit = {"corpus_id": int(i), "score": float(scores[i])}
        if return_documents:
            hit["text"] = documents[i]
        hits.append(hit)
    return hits
