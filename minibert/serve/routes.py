"""The routes: read a request, check it, queue its inputs, shape the answer.

Each scoring route follows the same steps: take a place in the queue (429 at once when
max_concurrent_requests requests are already being read, waiting or being scored), read the
body (at most payload_limit bytes, else 413), parse it (schemas: 422 for a wrong type, an empty
list; 413 for too many inputs), check that the model can serve the route (424, as TEI), count
each input's tokens in a worker thread (413 for an over-long input when truncate is false),
then wait for the batcher. A client that goes away while it waits loses its place: its inputs not yet scored are
dropped, and the request is logged with status 499.
"""

import asyncio
import contextlib
import logging
import time

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, Response

import minibert.serve.schemas as schemas
from minibert.errors import MinibertError, NumericalError
from minibert.serve.backend import CLASSIFIER, EMBEDDING, RERANKER, Backend, Left
from minibert.serve.queue import Batcher, Pass
from minibert.serve.schemas import (
    BACKEND,
    OVERLOADED,
    TOKENIZER,
    UNHEALTHY,
    VALIDATION,
    HTTPError,
    Limits,
)

log = logging.getLogger("minibert.serve")

NORMALIZE_EPS = np.float32(1e-12)   # as SentenceEncoder's normalize
CLIENT_GONE = 499                   # nginx's status for a client that closed the connection first


class ClientGone(Exception):
    """The client closed the connection before its answer was ready."""


class Metrics:
    """Prometheus metrics of one app, in its own registry (so several apps can share a process)."""

    def __init__(self):
        self.registry = r = CollectorRegistry()
        self.requests = Counter("minibert_requests", "HTTP requests answered, by route and status",
                                ["route", "status"], registry=r)
        self.latency = Histogram("minibert_request_duration_seconds", "Time from request to answer, by route",
                                 ["route"], registry=r,
                                 buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60))
        self.inputs = Counter("minibert_inputs_scored", "Pairs scored (or texts embedded)", registry=r)
        self.tokens = Counter("minibert_tokens_scored", "Tokens through the model", registry=r)
        self.queue_depth = Gauge("minibert_queue_depth", "Requests waiting or being scored", registry=r)
        powers = tuple(float(2 ** i) for i in range(13))
        self.batch_inputs = Histogram("minibert_batch_inputs", "Pairs (or texts) per forward pass",
                                      registry=r, buckets=powers)
        self.batch_requests = Histogram("minibert_batch_requests", "Requests sharing a forward pass",
                                        registry=r, buckets=powers[:10])
        self.batch_tokens = Histogram("minibert_batch_tokens", "Tokens per forward pass", registry=r,
                                      buckets=tuple(float(2 ** i) for i in range(4, 18)))
        self.batch_seconds = Histogram("minibert_batch_duration_seconds", "Time of one forward pass", registry=r,
                                       buckets=(.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))

    def on_pass(self, p: Pass) -> None:   # called from the batcher's thread; prometheus_client is thread-safe
        self.inputs.inc(p.inputs)
        self.tokens.inc(p.tokens)
        self.batch_inputs.observe(p.inputs)
        self.batch_requests.observe(p.requests)
        self.batch_tokens.observe(p.tokens)
        self.batch_seconds.observe(p.seconds)


class Service:
    """The model, its queue, the limits and the metrics: what every route needs."""

    def __init__(self, backend: Backend, limits: Limits, version: str):
        self.backend, self.limits, self.version = backend, limits, version
        self.metrics = Metrics()
        self.batcher = Batcher(backend.run, limits.max_batch_tokens, limits.max_batch_requests, self.metrics.on_pass)
        self.in_flight = 0   # requests holding a place: waiting, being counted or scored

    def require(self, *kinds: str) -> None:
        """424, as TEI answers a route the model type cannot serve."""
        if self.backend.kind not in kinds:
            what = {RERANKER: "a re-ranker", CLASSIFIER: "a classifier", EMBEDDING: "an embedding"}
            raise HTTPError(424, BACKEND, f"model is not {' or '.join(what[k] for k in kinds)} model "
                                          f"(it is {what[self.backend.kind]} model)")

    async def body(self, request) -> dict:
        """The request's JSON object, read up to payload_limit bytes."""
        limit = self.limits.payload_limit
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise HTTPError(413, VALIDATION, f"the request body is {int(declared)} bytes, more than the limit of {limit}")
        chunks, size = [], 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise HTTPError(413, VALIDATION, f"the request body is more than the limit of {limit} bytes")
                chunks.append(chunk)
        except ClientDisconnect:
            raise ClientGone() from None
        return schemas.parse_json(b"".join(chunks))

    @contextlib.asynccontextmanager
    async def place(self):
        """A place in the queue for a scoring request, from its first byte to its answer; 429 if none is free."""
        if self.in_flight >= self.limits.max_concurrent_requests:
            raise HTTPError(429, OVERLOADED, f"model is overloaded: {self.in_flight} requests are waiting or being "
                                             f"scored (max_concurrent_requests {self.limits.max_concurrent_requests})")
        self.in_flight += 1
        self.metrics.queue_depth.inc()
        try:
            yield
        finally:
            self.in_flight -= 1
            self.metrics.queue_depth.dec()

    async def compute(self, request, inputs: list, truncate: bool = True, direction: str = "right",
                      where: str = "inputs") -> tuple[np.ndarray, int]:
        """(the model's array for inputs [n, ...], tokens scored), through the shared queue."""
        request.scope["state"]["minibert_inputs"] = len(inputs)
        try:
            lengths, truncated = await asyncio.to_thread(self.backend.lengths, inputs, not truncate)
        except MinibertError as exc:
            raise HTTPError(422, TOKENIZER, str(exc)) from None
        if truncated and any(truncated):
            i, limit = truncated.index(True), self.backend.max_input_length
            raise HTTPError(413, VALIDATION, f"`{where}[{i}]` is longer than the model's max_input_length of "
                                             f"{limit} tokens and truncate is false")
        if direction == "left":
            refusal = self.backend.truncate_left_refusal()
            if refusal:
                raise HTTPError(422, VALIDATION, refusal)
            inputs = [Left(x) for x in inputs]
        job = self.batcher.submit(inputs, lengths)
        return await self._answer(request, job), sum(lengths)

    async def _answer(self, request, job) -> np.ndarray:
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait({job.future, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if not job.future.done():
            self.batcher.cancel(job)
            job.future.cancel()
            raise ClientGone()
        try:
            return job.future.result()
        except NumericalError as exc:
            raise HTTPError(424, BACKEND, str(exc)) from None
        except MinibertError as exc:
            raise HTTPError(422, TOKENIZER, str(exc)) from None


async def _disconnected(request) -> None:
    """Returns when the client has closed the connection (the body has been read by then)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


# ---------------------------------------------------------------------------------------------
# Activations (the model gives raw logits; TEI's rule picks the function)


def sigmoid(x: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(x))   # of a non-positive number only: no overflow
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(np.float32)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# The routes


def make_routes(service: Service):
    """(path, endpoint, methods) for every route of the API."""
    limits = service.limits

    def scoring(route):
        """The route with a place in the queue from its first byte on (429 when none is free)."""
        async def endpoint(request):
            async with service.place():
                return await route(request)
        return endpoint

    @scoring
    async def rerank(request):
        req = schemas.parse_rerank(await service.body(request), limits)
        service.require(RERANKER)
        logits, _ = await service.compute(request, [(req.query, t) for t in req.texts], req.truncate,
                                          req.truncation_direction, "texts")
        scores = logits[:, 0] if req.raw_scores else sigmoid(logits[:, 0])
        return JSONResponse(schemas.rerank_response(req, scores))

    @scoring
    async def predict(request):
        req = schemas.parse_predict(await service.body(request), limits)
        service.require(RERANKER, CLASSIFIER)
        logits, _ = await service.compute(request, req.inputs, req.truncate, req.truncation_direction)
        if req.raw_scores:
            scores = logits
        else:
            scores = sigmoid(logits) if logits.shape[1] == 1 else softmax(logits)
        return JSONResponse(schemas.predict_response(req, scores, service.backend.id2label))

    @scoring
    async def embed(request):
        req = schemas.parse_embed(await service.body(request), limits)
        service.require(EMBEDDING)
        request.scope["state"]["minibert_unit"] = "texts"
        out, _ = await service.compute(request, req.inputs, req.truncate, req.truncation_direction)
        if req.dimensions is not None:
            if req.dimensions > out.shape[1]:
                raise schemas.invalid(f"`dimensions` is {req.dimensions}, more than the model's {out.shape[1]}")
            out = out[:, :req.dimensions]
        if req.normalize:
            out = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), NORMALIZE_EPS)
        return JSONResponse(out.astype(np.float32).tolist())

    def cohere(version):
        @scoring
        async def cohere_rerank(request):
            req = schemas.parse_cohere_rerank(await service.body(request), limits)
            service.require(RERANKER)
            logits, tokens = await service.compute(request, [(req.query, d) for d in req.documents],
                                                   where="documents")
            return JSONResponse(schemas.cohere_response(req, sigmoid(logits[:, 0]), version, tokens))
        return cohere_rerank

    async def tokenize(request):
        req = schemas.parse_tokenize(await service.body(request), limits)
        request.scope["state"].update(minibert_inputs=len(req.inputs), minibert_unit="texts")
        return JSONResponse(await asyncio.to_thread(service.backend.tokenize, req.inputs, req.add_special_tokens))

    async def decode(request):
        req = schemas.parse_decode(await service.body(request), limits)
        request.scope["state"].update(minibert_inputs=len(req.ids), minibert_unit="texts")
        return JSONResponse(await asyncio.to_thread(service.backend.decode, req.ids, req.skip_special_tokens))

    async def info(request):
        b = service.backend
        return JSONResponse(schemas.info_response(
            model_id=b.model_id, model_type=b.model_type(), architecture=b.architecture(),
            max_input_length=b.max_input_length, limits=limits, version=service.version))

    async def health(request):
        if not service.batcher.alive:
            raise HTTPError(503, UNHEALTHY, "unhealthy: the model's worker thread is not running")
        return Response(status_code=200)

    async def metrics(request):
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return [
        ("/rerank", rerank, ["POST"]),
        ("/predict", predict, ["POST"]),
        ("/embed", embed, ["POST"]),
        ("/tokenize", tokenize, ["POST"]),
        ("/decode", decode, ["POST"]),
        ("/v1/rerank", cohere("1"), ["POST"]),
        ("/v2/rerank", cohere("2"), ["POST"]),
        ("/info", info, ["GET"]),
        ("/health", health, ["GET"]),
        ("/metrics", metrics, ["GET"]),
    ]


# ---------------------------------------------------------------------------------------------
# Errors and the log line


def error_response(request, exc: Exception) -> Response:
    if isinstance(exc, HTTPError):
        return JSONResponse(exc.body(), status_code=exc.status)
    if isinstance(exc, ClientGone):
        return Response(status_code=CLIENT_GONE)   # nobody reads it; the log line and metrics do
    if isinstance(exc, HTTPException):   # 404, 405 from the router
        return JSONResponse({"error": f"{exc.detail}: {request.method} {request.url.path}", "error_type": VALIDATION},
                            status_code=exc.status_code, headers=exc.headers)
    log.exception("internal error on %s %s", request.method, request.url.path)
    return JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}", "error_type": BACKEND},
                        status_code=500)


class LogRequests:
    """ASGI middleware: one log line per request (method, path, status, pairs, ms), and the request metrics."""

    def __init__(self, app, service: Service, routes: set[str]):
        self.app, self.service, self.routes = app, service, routes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state = scope.setdefault("state", {})
        status = [500]
        t0 = time.perf_counter()

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            seconds = time.perf_counter() - t0
            route = scope["path"] if scope["path"] in self.routes else "other"
            self.service.metrics.requests.labels(route, str(status[0])).inc()
            self.service.metrics.latency.labels(route).observe(seconds)
            n = state.get("minibert_inputs")
            unit = state.get("minibert_unit", "pairs")
            log.info("%s %s %d %s %.1f ms", scope["method"], scope["path"], status[0],
                     f"{n} {unit}" if n is not None else "-", seconds * 1000)
