"""Who may use the server: an API key (`Authorization: Bearer KEY`) and the browser origins CORS allows.

With a key, every route but GET /health answers 401 to a request without `Authorization: Bearer KEY`
(TEI's `--api-key`; TEI leaves /metrics open too, minibert does not). The 401 body has the shape of
the API the route belongs to: TEI's `{"error", "error_type": "Unauthorized"}`, or on Cohere's
/v1 and /v2 routes Cohere's `{"message"}` ("no api key supplied", "invalid api token"). The key
presented is compared with the server's in constant time (the SHA-256 digests of both, through
hmac.compare_digest, so neither its characters nor its length show in the timing), and it is never
logged or put into an error message: messages about a key name where it came from, never what it is.

CORS is off unless origins are named: a browser page from another origin then cannot read any
answer. With origins, starlette's CORSMiddleware answers their preflight requests (OPTIONS, without
a key: a browser sends none there) and adds the CORS headers to the answers, 401s included.
"""

import hashlib
import hmac
import json
import os
from pathlib import Path
from urllib.parse import urlsplit

from minibert.errors import ConfigError

HEALTH = "/health"                 # the one route open without the key (load balancers, orchestrators)
COHERE_PREFIXES = ("/v1/", "/v2/")  # routes whose errors take Cohere's shape
KEY_ENV = "MINIBERT_API_KEY"
UNAUTHORIZED = "Unauthorized"      # the error_type of a TEI-shaped 401 (TEI's own 401 has no body)


def check_api_key(key, where: str = "api_key") -> str:
    """The key, if it can travel in an Authorization header: a non-empty string of printable ASCII
    without spaces. The error says what is wrong and where the key came from, never the key itself."""
    if not isinstance(key, str):
        raise ConfigError(f"{where} must be a string, found {type(key).__name__}")
    if not key:
        raise ConfigError(f"{where} is empty")
    bad = next((i for i, c in enumerate(key) if not "!" <= c <= "~"), None)
    if bad is not None:
        raise ConfigError(f"{where} must be printable ASCII without spaces (as an Authorization header carries "
                          f"it): character {bad + 1} of {len(key)} is not")
    return key


def resolve_api_key(key: str | None = None, key_file: str | None = None, environ=os.environ) -> tuple[str | None, str]:
    """(the key, where it came from) for `minibert serve`: --api-key-file PATH (its text, without the
    surrounding whitespace and newline), else --api-key, else the MINIBERT_API_KEY environment
    variable (unset or empty: no key). (None, "") when there is none."""
    if key_file is not None:
        try:
            text = Path(key_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"--api-key-file {key_file}: cannot read it: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"--api-key-file {key_file}: not UTF-8 text") from None
        where = f"the key in --api-key-file {key_file}"
        return check_api_key(text.strip(), where), where
    if key is not None:
        return check_api_key(key, "--api-key"), "--api-key"
    if environ.get(KEY_ENV):
        return check_api_key(environ[KEY_ENV], KEY_ENV), KEY_ENV
    return None, ""


def check_origins(origins) -> list[str]:
    """CORS origins as a browser sends them: "*" or scheme://host[:port], nothing after."""
    origins = [origins] if isinstance(origins, str) else list(origins or ())
    for origin in origins:
        if origin == "*":
            continue
        parts = urlsplit(origin) if isinstance(origin, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc or \
                parts.path or parts.query or parts.fragment:
            raise ConfigError(f"cors origin {origin!r}: expected \"*\" or scheme://host[:port] "
                              "(e.g. https://app.example.com), with no path")
    return origins


class RequireKey:
    """ASGI middleware: every HTTP request but GET /health needs `Authorization: Bearer <key>`."""

    def __init__(self, app, api_key: str):
        self.app = app
        self._digest = _digest(check_api_key(api_key).encode("ascii"))

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] == HEALTH:
            return await self.app(scope, receive, send)
        presented = _bearer(scope)
        if presented is not None and hmac.compare_digest(_digest(presented), self._digest):
            return await self.app(scope, receive, send)
        cohere = scope["path"].startswith(COHERE_PREFIXES)
        if presented is None:
            body = ({"message": "no api key supplied"} if cohere else
                    {"error": "this server needs an API key: send the header `Authorization: Bearer <key>`",
                     "error_type": UNAUTHORIZED})
        else:
            body = {"message": "invalid api token"} if cohere else {"error": "invalid API key", "error_type": UNAUTHORIZED}
        data = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                                (b"www-authenticate", b'Bearer realm="minibert"')]})
        await send({"type": "http.response.body", "body": data})


def _bearer(scope) -> bytes | None:
    """The token of the first Authorization header (b"" if its scheme is not Bearer, in any case); None
    when there is no such header."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.strip().partition(b" ")
            return token.strip() if scheme.lower() == b"bearer" else b""
    return None


def _digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()
