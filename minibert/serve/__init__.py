"""`minibert serve`: a reranking HTTP server speaking TEI's and Cohere's APIs, with dynamic batching.

    from minibert.serve import create_app
    app = create_app("weights/ms-marco-MiniLM-L-6-v2")     # an ASGI app (Starlette)
    # uvicorn.run(app) or mount it in your own ASGI application

Needs the `serve` extra (starlette, uvicorn, prometheus_client); `import minibert` never imports
this package. Layout: schemas.py (every request and response shape), routes.py (the routes,
errors, log line, metrics), queue.py (the batching queue), backend.py (the model, through the
public CrossEncoder / SentenceEncoder API), auth.py (the API key and CORS).
"""

import contextlib
import ipaddress
import logging
import signal
import socket
import sys

from minibert.errors import ConfigError, MinibertError

try:
    import prometheus_client  # noqa: F401
    import starlette  # noqa: F401
    import uvicorn
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(f"minibert.serve needs the `serve` extra (pip install 'minibert-ce[serve]'): {exc}") from exc

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Route

from minibert.runtime.cross_encoder import CrossEncoder
from minibert.runtime.long_passages import DEFAULT_STRIDE
from minibert.runtime.sentence_encoder import SentenceEncoder
from minibert.serve.auth import RequireKey, check_api_key, check_origins
from minibert.serve.backend import Backend
from minibert.serve.routes import (
    ClientGone,
    LogRequests,
    Service,
    error_response,
    log,
    make_routes,
)
from minibert.serve.schemas import HTTPError, Limits
from minibert.version import __version__

__all__ = ["create_app", "serve"]


def create_app(model, *, model_id: str | None = None, max_client_batch_size: int = 32,
               max_batch_tokens: int = 16384, max_batch_requests: int = 32, max_concurrent_requests: int = 512,
               payload_limit: int = 2_000_000, threads: int | None = None, api_key: str | None = None,
               cors_allow_origins=(), long_passages: str = "truncate", stride: int = DEFAULT_STRIDE,
               widen: bool = False) -> Starlette:
    """The ASGI app serving `model`: a model directory (a sentence-transformers SentenceTransformer gives
    a sentence encoder, any other a cross-encoder, sentence-transformers' CrossEncoder chains included) or a
    loaded CrossEncoder / SentenceEncoder.

    model_id: the name /info reports (default: the directory's name). The limits are TEI's
    options of the same names: texts per request, tokens and inputs per forward pass (32 inputs:
    offline predict's batch; TEI's has no default), requests waiting or
    being scored (more get a 429), bytes per request body (more get a 413). threads: the cores a
    model loaded here scores on (CrossEncoder's threads).
    api_key: every route but GET /health then needs `Authorization: Bearer <api_key>` (else 401).
    cors_allow_origins: the browser origins ("https://app.example.com", or "*") allowed to call the
    server from a page (CORS); none by default.
    long_passages, stride: CrossEncoder.predict's, for every pair a reranker scores (/rerank, /v1/rerank,
    /v2/rerank, /predict): "max" scores long passages whole, in windows.
    widen: a model loaded here widens a half-precision checkpoint's weights at load (CrossEncoder's widen).
    """
    for name, value in (("max_client_batch_size", max_client_batch_size), ("max_batch_tokens", max_batch_tokens),
                        ("max_batch_requests", max_batch_requests),
                        ("max_concurrent_requests", max_concurrent_requests), ("payload_limit", payload_limit)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, found {value!r}")
    if api_key is not None:
        check_api_key(api_key)
    origins = check_origins(cors_allow_origins)
    if isinstance(model, (CrossEncoder, SentenceEncoder)):
        backend = Backend(model, model_id, long_passages=long_passages, stride=stride)
    else:
        backend = Backend.load(model, model_id, max_batch_tokens=max_batch_tokens, threads=threads, widen=widen,
                               long_passages=long_passages, stride=stride)
    if max_batch_tokens < backend.max_input_length:
        raise ConfigError(f"max_batch_tokens must be >= the model's max input length ({backend.max_input_length}), "
                          f"found {max_batch_tokens}")
    backend.warm_up()   # compiles the kernels (or loads them from Numba's cache) before the first request
    limits = Limits(max_client_batch_size=max_client_batch_size, max_batch_tokens=max_batch_tokens,
                    max_batch_requests=max_batch_requests, max_concurrent_requests=max_concurrent_requests,
                    payload_limit=payload_limit)
    service = Service(backend, limits, __version__)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        service.batcher.start()
        try:
            yield
        finally:
            service.batcher.stop()   # in-flight requests are answered by now (uvicorn waits for them)
            log.info("stopped")

    routes = make_routes(service)
    app = Starlette(routes=[Route(path, endpoint, methods=methods) for path, endpoint, methods in routes],
                    exception_handlers={cls: error_response for cls in (HTTPError, ClientGone, HTTPException, Exception)},
                    lifespan=lifespan)
    # Outermost last: the log line sees every request; CORS answers preflights before the key is asked for
    # and puts its headers on 401s too.
    if api_key is not None:
        app.add_middleware(RequireKey, api_key=api_key)
    if origins:
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(LogRequests, service=service, routes={path for path, _, _ in routes})
    app.state.service = service
    return app


def serve(model, host: str = "127.0.0.1", port: int = 8080, key_source: str = "", **options) -> None:
    """Load the model, listen on host:port (0: any free port) and serve until SIGTERM or Ctrl-C.

    options: create_app's. key_source: where the api_key came from, for the log (never the key).

    Logs a line when listening, one per request, and one when stopped. On SIGTERM / SIGINT it
    stops accepting connections, answers the requests in flight, then returns (uvicorn then
    re-raises the signal: SIGINT becomes KeyboardInterrupt, SIGTERM ends the process with it).
    """
    _log_to_stderr()
    app = create_app(model, **options)
    service = app.state.service
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family, backlog=2048)
    except OSError as exc:
        raise MinibertError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    b = service.backend
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    log.info("listening on http://%s:%d (model %s: %s, max input length %d tokens)", shown,
             sock.getsockname()[1], b.model_id, b.kind, b.max_input_length)
    if options.get("api_key") is not None:
        log.info("an API key is required on every route but /health (from %s)", key_source or "create_app")
    elif not ipaddress.ip_address(sock.getsockname()[0]).is_loopback:
        log.info("no API key: anyone who can reach this address can use the server (see --api-key-file)")
    if b.long_passages != "truncate":
        log.info("long passages: scored whole, in windows sharing %d tokens, the score the %s", b.stride,
                 {"max": "best window's", "first": "first window's", "mean": "mean of the windows'"}[b.long_passages])

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            if not self.should_exit:
                log.info("%s: answering %d requests in flight, then stopping", signal.Signals(sig).name,
                         service.in_flight)
            super().handle_exit(sig, frame)

    # Idle connections are kept 75 s (nginx's default), not uvicorn's 5 s: a pooled client reusing a
    # connection just as the server closes it gets an error instead of an answer.
    config = uvicorn.Config(app, log_config=None, log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=None, timeout_keep_alive=75)
    Server(config).run(sockets=[sock])


def _log_to_stderr() -> None:
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s minibert serve: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
