"""Scores from a running reranking server, for `minibert agree --url`: text-embeddings-inference's API (TEI:
POST /rerank) or Cohere's (POST /v2/rerank, which Jina and many servers mirror), minibert's own included.

One request per query and slice of its passages, each slice at most the server's limit: TEI's /info says
it (max_client_batch_size); without /info, Cohere's documented 1,000 documents. A 413 (too large) halves
the slice and sends it again. TEI is asked for raw scores (raw_scores: true: the logits); Cohere's
relevance_score is always the sigmoid of a one-logit model's logit.

The standard library's urllib only: no extra needed.
"""

import json
import urllib.error
import urllib.request

import numpy as np

from minibert.errors import InputError, MinibertError

APIS = ("tei", "cohere")
ROUTES = {"tei": "/rerank", "cohere": "/v2/rerank"}
COHERE_MAX_DOCUMENTS = 1000
TIMEOUT = 600.0   # seconds for one request


def _post(url: str, body: dict, timeout=TIMEOUT):
    request = urllib.request.Request(url, json.dumps(body).encode("utf-8"),
                                     {"Content-Type": "application/json", "Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read().decode("utf-8"))


def _get(url: str, timeout=30.0):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read().decode("utf-8"))


def split_url(url: str, api: str) -> tuple[str, str]:
    """(the server's base URL, the rerank route's URL) of a base URL or a full route URL."""
    if api not in APIS:
        raise InputError(f"--api must be one of {', '.join(APIS)}, found {api!r}")
    url = url.rstrip("/")
    for route in ("/v1/rerank", "/v2/rerank", "/rerank"):
        if url.endswith(route):
            return url[:-len(route)], url
    return url, url + ROUTES[api]


def server_info(base: str) -> dict | None:
    """GET /info (TEI's, and minibert serve's), or None when the server has none."""
    try:
        info = _get(base + "/info")
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def remote_scores(url: str, api: str, groups, queries, passages, model_name: str | None = None) -> tuple[np.ndarray, dict]:
    """Every pair's score from the server: ([n] float64 in pairs order, what was learned about the server).
    groups: the pairs of each query (agree.Group); queries, passages: [n] strings."""
    base, route = split_url(url, api)
    info = server_info(base) or {}
    limit = info.get("max_client_batch_size")
    limit = limit if isinstance(limit, int) and limit > 0 else (COHERE_MAX_DOCUMENTS if api == "cohere" else 32)
    model_name = model_name or info.get("model_id") or "reranker"
    scores = np.full(len(passages), np.nan)
    requests, largest = 0, 0
    for group in groups:
        start, size = 0, limit
        while start < len(group.rows):
            rows = group.rows[start:start + size]
            texts = [passages[r] for r in rows]
            try:
                got = _rerank(route, api, queries[rows[0]], texts, model_name)
            except urllib.error.HTTPError as exc:
                if exc.code == 413 and size > 1:      # too many texts for this server: try half as many
                    size = max(1, size // 2)
                    continue
                raise MinibertError(f"{route}: HTTP {exc.code}: {_error_text(exc)}") from None
            except (urllib.error.URLError, OSError) as exc:
                raise MinibertError(f"{route}: {getattr(exc, 'reason', exc)}") from None
            requests, largest = requests + 1, max(largest, len(rows))
            scores[rows] = got
            start += len(rows)
    return scores, {"route": route, "limit": limit, "largest_request": largest, "requests": requests}


def _rerank(route: str, api: str, query: str, texts: list[str], model_name: str) -> np.ndarray:
    if api == "tei":
        answer = _post(route, {"query": query, "texts": texts, "raw_scores": True, "truncate": True})
        items, key = answer, "score"
    else:
        answer = _post(route, {"model": model_name, "query": query, "documents": texts, "top_n": len(texts)})
        items, key = answer.get("results") if isinstance(answer, dict) else None, "relevance_score"
    got = np.full(len(texts), np.nan)
    try:
        for item in items:
            got[int(item["index"])] = float(item[key])
    except (TypeError, KeyError, ValueError, IndexError):
        raise MinibertError(f"{route}: unexpected answer {json.dumps(answer)[:200]}") from None
    if np.isnan(got).any():
        raise MinibertError(f"{route}: the answer has no score for text {int(np.flatnonzero(np.isnan(got))[0])}")
    return got


def _error_text(exc) -> str:
    try:
        body = exc.read().decode("utf-8", "replace")
        message = json.loads(body).get("error") if body.startswith("{") else None
        return message or body[:200] or exc.reason
    except (OSError, ValueError, AttributeError):
        return str(exc.reason)
