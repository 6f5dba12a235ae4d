"""Every request and response shape of the HTTP API, with its defaults next to its fields.

Two families of routes:
- text-embeddings-inference (TEI, `router/src/http/types.rs`): POST /rerank, /embed, /predict,
  /tokenize, /decode, GET /info, /health. Same field names, same defaults (`truncate` absent or null means the
  server's auto-truncate, which is on; `truncation_direction` "right"; `normalize` true).
- Cohere's rerank API, which Jina and many SDKs mirror: POST /v1/rerank, /v2/rerank.

Parsing is strict about the fields it knows (a wrong type is a 422 naming the field) and, like
TEI's serde structs, ignores the fields it does not know (clients add "model", "top_n", ...).
Errors are `{"error": message, "error_type": type}` with TEI's error types; the statuses follow
minibert's issue: 422 for a malformed or empty request, 413 for one too large, 424 for a route
the model cannot serve, 429 when the queue is full.
"""

import json
import uuid
from dataclasses import dataclass

import numpy as np

from minibert.errors import MinibertError

# TEI's error types, as TEI writes them in "error_type".
VALIDATION, EMPTY, TOKENIZER, BACKEND, OVERLOADED, UNHEALTHY = (
    "Validation", "Empty", "Tokenizer", "Backend", "Overloaded", "Unhealthy")


class HTTPError(MinibertError):
    """A request the server answers with an error status and `{"error", "error_type"}`."""

    def __init__(self, status: int, error_type: str, message: str):
        super().__init__(message)
        self.status, self.error_type, self.message = status, error_type, message

    def body(self) -> dict:
        return {"error": self.message, "error_type": self.error_type}


def invalid(message: str) -> HTTPError:
    return HTTPError(422, VALIDATION, message)


@dataclass(frozen=True)
class Limits:
    """The server's limits, as `minibert serve` options set them (TEI's names and defaults)."""
    max_client_batch_size: int = 32       # texts (or pairs) in one request
    max_batch_tokens: int = 16384         # tokens in one forward pass
    max_batch_requests: int = 32          # inputs (pairs or texts) in one forward pass
    max_concurrent_requests: int = 512    # requests waiting or being scored; more get a 429
    payload_limit: int = 2_000_000        # bytes of one request body; more get a 413
    auto_truncate: bool = True            # what `truncate` absent or null means


# ---------------------------------------------------------------------------------------------
# Reading a body


def parse_json(body: bytes) -> dict:
    """The JSON object of a request body; anything else (bad UTF-8, bad JSON, NaN, not an object) is a 422."""
    try:
        value = json.loads(body.decode("utf-8"), parse_constant=_no_constant)
    except UnicodeDecodeError as exc:
        raise invalid(f"the request body is not UTF-8 (byte {exc.start} is {body[exc.start]:#04x})") from None
    except json.JSONDecodeError as exc:
        raise invalid(f"the request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except (ValueError, RecursionError) as exc:   # NaN / Infinity, an integer too long, nesting too deep
        raise invalid(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise invalid(f"expected a JSON object as the request body, found {_json_type(value)}")
    return value


def _no_constant(name):
    raise ValueError(f"{name} is not a JSON number")


def _json_type(value) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array",
            dict: "an object"}.get(type(value), type(value).__name__)


def text(value, where: str) -> str:
    """A JSON string that is valid Unicode (a JSON escape can make a lone surrogate)."""
    if not isinstance(value, str):
        raise invalid(f"{where} must be a string, found {_json_type(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise invalid(f"{where} is not valid Unicode text ({exc.reason} at position {exc.start})") from None
    return value


def texts(value, where: str, limits: Limits) -> list[str]:
    """A non-empty JSON array of strings, at most max_client_batch_size of them."""
    if not isinstance(value, list):
        raise invalid(f"{where} must be an array of strings, found {_json_type(value)}")
    items = [text(item, f"{where}[{i}]") for i, item in enumerate(value)]
    check_count(len(items), where, limits)
    return items


def check_count(n: int, where: str, limits: Limits) -> None:
    if n == 0:
        raise HTTPError(422, EMPTY, f"`{where}` cannot be empty")
    if n > limits.max_client_batch_size:
        raise HTTPError(413, VALIDATION, f"batch size {n} > maximum allowed batch size {limits.max_client_batch_size}")


def required(body: dict, name: str):
    if name not in body:
        raise invalid(f"missing field `{name}`")
    return body[name]


def flag(body: dict, name: str, default):
    """A boolean field; absent or null gives the default (TEI: serde default / Option)."""
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid(f"`{name}` must be true or false, found {_json_type(value)}")
    return value


def count(body: dict, name: str) -> int | None:
    """A positive integer field, or None when absent or null."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise invalid(f"`{name}` must be a positive integer, found {json.dumps(value)}")
    return value


# TEI's TruncationDirection: "Left" / "Right" and their lowercase aliases.
TRUNCATION_DIRECTIONS = {"left": "left", "Left": "left", "right": "right", "Right": "right"}


def truncation(body: dict, limits: Limits) -> tuple[bool, str]:
    """(truncate, direction): `truncate` absent or null -> the server's auto-truncate (on)."""
    truncate = flag(body, "truncate", limits.auto_truncate)
    direction = body.get("truncation_direction", "right")
    if direction not in TRUNCATION_DIRECTIONS:
        raise invalid(f"`truncation_direction` must be \"left\" or \"right\", found {json.dumps(direction)}")
    return truncate, TRUNCATION_DIRECTIONS[direction]


# ---------------------------------------------------------------------------------------------
# TEI requests


@dataclass(frozen=True)
class RerankRequest:
    """POST /rerank (TEI): score `query` against each of `texts`."""
    query: str
    texts: list[str]
    truncate: bool = True                # absent / null: the server's auto-truncate
    truncation_direction: str = "right"
    raw_scores: bool = False             # False: sigmoid of the logit (TEI's rule for one-logit models)
    return_text: bool = False


def parse_rerank(body: dict, limits: Limits) -> RerankRequest:
    query = text(required(body, "query"), "`query`")
    items = texts(required(body, "texts"), "texts", limits)
    truncate, direction = truncation(body, limits)
    return RerankRequest(query, items, truncate, direction, flag(body, "raw_scores", False),
                         flag(body, "return_text", False))


@dataclass(frozen=True)
class PredictRequest:
    """POST /predict (TEI): per-label scores of a pair [text, text_pair], or of a batch of pairs."""
    inputs: list[tuple[str, str]]
    single: bool                         # the request sent one input (answered with one list)
    truncate: bool = True
    truncation_direction: str = "right"
    raw_scores: bool = False             # False: sigmoid (one label) or softmax (several)


def parse_predict(body: dict, limits: Limits) -> PredictRequest:
    inputs = required(body, "inputs")
    single = isinstance(inputs, str) or (isinstance(inputs, list) and bool(inputs) and isinstance(inputs[0], str))
    sequences = [inputs] if single else inputs
    if not isinstance(sequences, list):
        raise invalid(f"`inputs` must be a string, a pair [string, string] or a batch of them, "
                      f"found {_json_type(inputs)}")
    pairs = [_pair(sequence, "`inputs`" if single else f"`inputs[{i}]`") for i, sequence in enumerate(sequences)]
    check_count(len(pairs), "inputs", limits)
    truncate, direction = truncation(body, limits)
    return PredictRequest(pairs, single, truncate, direction, flag(body, "raw_scores", False))


def _pair(sequence, where: str) -> tuple[str, str]:
    if isinstance(sequence, list) and len(sequence) == 2:
        return text(sequence[0], f"{where}[0]"), text(sequence[1], f"{where}[1]")
    if isinstance(sequence, str) or (isinstance(sequence, list) and len(sequence) == 1):
        raise invalid(f"{where} is a single text; minibert's cross-encoders score pairs: send [text, text_pair]")
    raise invalid(f"{where} must be a pair [string, string], found {_json_type(sequence)}"
                  + (f" of {len(sequence)} items" if isinstance(sequence, list) else ""))


@dataclass(frozen=True)
class EmbedRequest:
    """POST /embed (TEI): one embedding per input."""
    inputs: list[str]
    truncate: bool = True
    truncation_direction: str = "right"
    normalize: bool = True               # TEI's default
    dimensions: int | None = None        # keep the first `dimensions` values (before normalizing)


def parse_embed(body: dict, limits: Limits) -> EmbedRequest:
    inputs = required(body, "inputs")
    items = [text(inputs, "`inputs`")] if isinstance(inputs, str) else texts(inputs, "inputs", limits)
    truncate, direction = truncation(body, limits)
    if body.get("prompt_name") is not None:
        raise invalid("`prompt_name` is not supported: minibert's sentence encoders apply no prompts")
    return EmbedRequest(items, truncate, direction, flag(body, "normalize", True), count(body, "dimensions"))


@dataclass(frozen=True)
class TokenizeRequest:
    """POST /tokenize (TEI): the tokens of each text, untruncated (TEI's TokenizeInput: a string or an array)."""
    inputs: list[str]
    add_special_tokens: bool = True      # TEI's default


def parse_tokenize(body: dict, limits: Limits) -> TokenizeRequest:
    inputs = required(body, "inputs")
    items = [text(inputs, "`inputs`")] if isinstance(inputs, str) else texts(inputs, "inputs", limits)
    if body.get("prompt_name") is not None:
        raise invalid("`prompt_name` is not supported: minibert's server applies no prompts")
    return TokenizeRequest(items, flag(body, "add_special_tokens", True))


@dataclass(frozen=True)
class DecodeRequest:
    """POST /decode (TEI): the text of token ids, one list ([id, ...]) or several ([[id, ...], ...])."""
    ids: list[list[int]]
    skip_special_tokens: bool = True     # TEI's default


def parse_decode(body: dict, limits: Limits) -> DecodeRequest:
    ids = required(body, "ids")
    if not isinstance(ids, list):
        raise invalid(f"`ids` must be an array of token ids or an array of them, found {_json_type(ids)}")
    single = not ids or not isinstance(ids[0], list)
    batch = [ids] if single else ids
    if not single:
        check_count(len(batch), "ids", limits)
    lists = [_token_ids(item, "`ids`" if single else f"`ids[{i}]`") for i, item in enumerate(batch)]
    return DecodeRequest(lists, flag(body, "skip_special_tokens", True))


def _token_ids(value, where: str) -> list[int]:
    """A non-empty array of token ids (TEI's u32)."""
    if not isinstance(value, list):
        raise invalid(f"{where} must be an array of token ids, found {_json_type(value)}")
    if not value:
        raise HTTPError(422, EMPTY, f"{where} cannot be empty")
    for i, token in enumerate(value):
        if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token < 2 ** 32:
            raise invalid(f"{where}[{i}] must be a token id (an integer from 0 to 2^32 - 1), found {json.dumps(token)}")
    return value


# ---------------------------------------------------------------------------------------------
# Cohere / Jina requests


@dataclass(frozen=True)
class CohereRerankRequest:
    """POST /v1/rerank and /v2/rerank (Cohere; Jina's API is v1's): rank `documents` against `query`.

    Long documents are truncated with the pair to the model's max length, as Cohere truncates
    (`max_tokens_per_doc` is accepted; the model's limit is what applies).
    """
    query: str
    documents: list[str]
    model: str | None = None             # accepted, not checked: the server has one model
    top_n: int | None = None             # None: every document
    return_documents: bool = False       # Cohere's default (Jina's is true)


def parse_cohere_rerank(body: dict, limits: Limits) -> CohereRerankRequest:
    model = body.get("model")
    if model is not None:
        text(model, "`model`")
    query = text(required(body, "query"), "`query`")
    documents = required(body, "documents")
    if not isinstance(documents, list):
        raise invalid(f"`documents` must be an array of strings or {{\"text\": string}} objects, "
                      f"found {_json_type(documents)}")
    items = [_document(d, f"`documents[{i}]`") for i, d in enumerate(documents)]
    check_count(len(items), "documents", limits)
    count(body, "max_tokens_per_doc")
    return CohereRerankRequest(query, items, model, count(body, "top_n"), flag(body, "return_documents", False))


def _document(document, where: str) -> str:
    if isinstance(document, dict):
        if "text" not in document:
            raise invalid(f"{where} is an object without a \"text\" field")
        return text(document["text"], f"{where}.text")
    return text(document, where)


# ---------------------------------------------------------------------------------------------
# Responses


def ranked(scores: np.ndarray) -> list[int]:
    """Indices best score first, ties by index (as minibert's rank orders them)."""
    return [int(i) for i in np.lexsort((np.arange(len(scores)), -np.asarray(scores, dtype=np.float64)))]


def rerank_response(request: RerankRequest, scores: np.ndarray) -> list[dict]:
    """TEI's RerankResponse: [{"index", "text"?, "score"}] sorted best first."""
    out = []
    for i in ranked(scores):
        rank = {"index": i}
        if request.return_text:
            rank["text"] = request.texts[i]
        rank["score"] = float(scores[i])
        out.append(rank)
    return out


def predict_response(request: PredictRequest, scores: np.ndarray, id2label: dict[int, str]):
    """TEI's PredictResponse: per input, [{"score", "label"}] sorted best first; a list of them for a batch."""
    batch = [[{"score": float(row[j]), "label": id2label[j]} for j in ranked(row)] for row in scores]
    return batch[0] if request.single else batch


def cohere_response(request: CohereRerankRequest, scores: np.ndarray, version: str, tokens: int) -> dict:
    """Cohere's rerank response: {"id", "results": [{"index", "relevance_score", "document"?}], "meta"}.

    "model" and "usage" are what Jina's clients read besides "results"; Cohere's SDK ignores them.
    """
    results = []
    for i in ranked(scores)[:request.top_n]:
        result = {"index": i, "relevance_score": float(scores[i])}
        if request.return_documents:
            result["document"] = {"text": request.documents[i]}
        results.append(result)
    return {"id": str(uuid.uuid4()), "results": results,
            "meta": {"api_version": {"version": version}, "billed_units": {"search_units": 1},
                     "tokens": {"input_tokens": tokens, "output_tokens": 0}},
            "model": request.model, "usage": {"total_tokens": tokens}}


def info_response(*, model_id: str, model_type: dict, architecture: str | None, max_input_length: int,
                  limits: Limits, version: str) -> dict:
    """TEI's Info (GET /info), with minibert's `architecture` besides."""
    return {
        "model_id": model_id,
        "model_sha": None,
        "model_dtype": "float32",
        "model_type": model_type,
        "architecture": architecture,
        "max_concurrent_requests": limits.max_concurrent_requests,
        "max_input_length": max_input_length,
        "max_batch_tokens": limits.max_batch_tokens,
        "max_batch_requests": limits.max_batch_requests,
        "max_client_batch_size": limits.max_client_batch_size,
        "auto_truncate": limits.auto_truncate,
        "tokenization_workers": 1,
        "version": version,
        "sha": None,
        "docker_label": None,
    }
