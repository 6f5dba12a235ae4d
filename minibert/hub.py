"""The HuggingFace Hub over plain HTTP(S): list a repository at one commit, download one file.

Standard library only (urllib.request, which also honours the usual *_proxy variables). The Hub's
HTTP API, as huggingface_hub uses it (file_download.py, hf_api.py):

    GET {endpoint}/api/models/{repo_id}/revision/{revision}?blobs=true
        200 {"sha": "<commit>", "siblings": [{"rfilename": "config.json", "size": 612,
             "blobId": "<git blob sha1>", "lfs": {"sha256": "...", "size": ...}}, ...]}
        ("lfs" only for files kept in Git LFS; "size" and "blobId" only with blobs=true)
    GET {endpoint}/{repo_id}/resolve/{commit}/{filename}
        a regular file: 200 and its bytes; ETag is its git blob sha1
        an LFS file:    302 to a CDN on another host; X-Linked-Etag is the sha256 of the content,
                        X-Linked-Size its size
        both:           X-Repo-Commit, the commit the revision resolved to
    errors carry X-Error-Code (RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo) and
    X-Error-Message. Without a token the Hub answers 401 for a missing repository as for a
    private one, so "not found" also says how to send a token.

Every request is bounded: a socket timeout, at most MAX_REDIRECTS hops, and a few retries with
exponential backoff after connection errors, timeouts, 429 and 5xx. The token (HF_TOKEN) goes as
`Authorization: Bearer ...` to the endpoint's own origin only: redirects are followed here, not
by urllib, which would forward it to the CDN. No message, record or repr contains it.
"""

import hashlib
import http.client
import json
import os
import re
import ssl
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urljoin, urlsplit

from minibert.errors import ConfigError, FetchError

DEFAULT_ENDPOINT = "https://huggingface.co"
# Defaults of Hub(...), read when a Hub is made (the tests shorten them).
TIMEOUT = 30.0      # seconds a connection may stay silent before the request is given up
RETRIES = 4         # further tries after a connection error, a timeout, 429 or 5xx
BACKOFF = 0.5       # seconds before the first retry, doubled for each next one ...
MAX_BACKOFF = 8.0   # ... up to this
MAX_REDIRECTS = 10
MAX_ATTEMPTS = 50   # GETs per file in all, resumed ones included: a hard bound on resuming
CHUNK = 1 << 20     # bytes per read while streaming and hashing
MAX_API_BYTES = 64 << 20

_REDIRECTS = (301, 302, 303, 307, 308)
_HUB_HEADERS = ("X-Repo-Commit", "X-Linked-Etag", "X-Linked-Size", "ETag")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SHA1 = re.compile(r"[0-9a-f]{40}")


class RepoNotFoundError(FetchError):
    """No such repository or revision (or a private repository that the token cannot read)."""


class AccessDeniedError(FetchError):
    """A gated or private repository that HF_TOKEN cannot read, or a token the Hub rejects."""


class HubUnreachableError(FetchError):
    """No usable answer from the Hub or its CDN (refused, reset, timed out, 429, 5xx) after the retries."""


class IntegrityError(FetchError):
    """Bytes whose size or hash differ from what the Hub (or a wheel's RECORD) announced."""


class _Retryable(Exception):
    """A failure another try may cure; `reason` goes into the final message."""

    def __init__(self, reason: str, url: str):
        super().__init__(reason)
        self.reason, self.url = reason, url


class _RangeNotSatisfiable(_Retryable):
    """416: the partial file is not a prefix the server can continue."""


@dataclass(frozen=True)
class RemoteFile:
    """One file of a repository at one commit, as the Hub's listing describes it."""
    name: str                    # path in the repository, '/'-separated
    size: int | None = None
    sha256: str | None = None    # LFS files: sha256 of the content
    git_sha1: str | None = None  # other files: the git blob id, sha1(b"blob <size>\0" + content)


@dataclass(frozen=True)
class Snapshot:
    """A repository at one commit: every file of one fetch is downloaded at `commit`."""
    repo_id: str
    revision: str                  # as asked: a branch, a tag or a commit
    commit: str                    # what the revision resolved to when listed
    files: dict[str, RemoteFile]   # name -> file


class Hub:
    """One Hub endpoint (HF_ENDPOINT, default https://huggingface.co), with HF_TOKEN if set."""

    def __init__(self, endpoint: str | None = None, token: str | None = None, *,
                 timeout: float | None = None, retries: int | None = None, backoff: float | None = None):
        endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"HF_ENDPOINT must be an http(s) URL such as {DEFAULT_ENDPOINT}, found {endpoint!r}")
        self.endpoint = endpoint
        self._origin = _origin(endpoint)
        self._token = (os.environ.get("HF_TOKEN", "") if token is None else token).strip() or None
        self.timeout = TIMEOUT if timeout is None else timeout
        self.retries = RETRIES if retries is None else retries
        self.backoff = BACKOFF if backoff is None else backoff
        self._opener = urllib.request.build_opener(_NoRedirects)
        from minibert import __version__
        self._user_agent = f"minibert/{__version__} (python-urllib)"

    def __repr__(self):
        return f"Hub({self.endpoint!r}, token={'set' if self._token else 'none'})"

    # -----------------------------------------------------------------------------------------
    # The two calls

    def snapshot(self, repo_id: str, revision: str = "main") -> Snapshot:
        """The files of `repo_id` at `revision`, and the commit that revision resolves to."""
        url = f"{self.endpoint}/api/models/{repo_id}/revision/{quote(revision, safe='')}?blobs=true"
        what = f"the file list of {repo_id} at {revision}"

        def attempt():
            response, _ = self._get(url, {"Accept": "application/json"}, repo_id, what)
            with response:
                return _read_body(response, url)

        body = self._retrying(attempt, what)
        try:
            info = json.loads(body)
        except ValueError:
            info = None
        commit = info.get("sha") if isinstance(info, dict) else None
        siblings = info.get("siblings") if isinstance(info, dict) else None
        if not (isinstance(commit, str) and _SHA1.fullmatch(commit) and isinstance(siblings, list)):
            raise FetchError(f"{url}: expected JSON {{\"sha\": <40 hex digits>, \"siblings\": [...]}}, "
                             f"found {body[:200]!r}")
        files = {}
        for entry in siblings:
            name = entry.get("rfilename") if isinstance(entry, dict) else None
            if not isinstance(name, str):
                raise FetchError(f"{url}: a sibling without an rfilename: {entry!r:.200}")
            lfs = entry["lfs"] if isinstance(entry.get("lfs"), dict) else None
            files[name] = RemoteFile(
                name=name,
                size=_int_or_none((lfs or entry).get("size")),
                sha256=_hex_or_none(lfs.get("sha256"), _SHA256) if lfs else None,
                git_sha1=None if lfs else _hex_or_none(entry.get("blobId"), _SHA1))
        return Snapshot(repo_id, revision, commit, files)

    def download(self, repo_id: str, commit: str, remote: RemoteFile, target: Path, *,
                 force: bool = False, progress_stream=None) -> dict:
        """`remote` at `commit` -> `target`, verified, renamed into place in one step.

        The bytes go to `target`.incomplete first, which a later call continues with an HTTP
        Range request (a server that ignores Range sends the whole file, which is then taken
        from the start). A file already at `target` that matches the listing's size and hash is
        kept, unless `force`. Returns what was checked: {"size", "sha256"[, "git_sha1"]}.
        """
        if not force and target.is_file():
            record = _verified(target, remote)
            if record is not None:
                return record
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = partial_path(target)
        if force:
            partial.unlink(missing_ok=True)
        url = f"{self.endpoint}/{repo_id}/resolve/{quote(commit, safe='')}/{quote(remote.name)}"
        progress = Progress(remote.name, remote.size, progress_stream)
        may_restart = True  # a resumed file that fails verification is downloaded once more from zero
        attempts = failures = 0
        try:
            while True:
                attempts += 1
                before = _size(partial)
                try:
                    expected, resumed = self._download_once(url, partial, remote, repo_id, commit, progress)
                except _Retryable as exc:
                    failures = 0 if _size(partial) > before else failures + 1
                    if failures > self.retries or attempts >= MAX_ATTEMPTS:
                        raise self._unreachable(exc, remote.name, attempts) from None
                    self._pause(max(failures - 1, 0))
                    continue
                problem, record = _check(partial, expected)
                if problem is None:
                    break
                partial.unlink(missing_ok=True)
                if not (resumed and may_restart):
                    raise IntegrityError(f"{remote.name} of {repo_id} at {commit[:12]}: {problem}; "
                                         "the download was discarded")
                may_restart = False
        finally:
            progress.close()
        install(partial, target)
        return record

    # -----------------------------------------------------------------------------------------
    # HTTP

    def _download_once(self, url, partial, remote, repo_id, commit, progress) -> tuple[dict, bool]:
        """One GET from where `partial` ends -> (the size and hashes to expect, whether it resumed)."""
        offset = _size(partial)
        if remote.size is not None and offset > remote.size:
            partial.unlink()
            offset = 0
        if offset and offset == remote.size:  # complete: stopped between the last byte and the rename
            return _expected(remote, {}, commit), True
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            response, hub_headers = self._get(url, headers, repo_id, remote.name)
        except _RangeNotSatisfiable:
            partial.unlink(missing_ok=True)
            raise
        with response:
            expected = _expected(remote, hub_headers, commit)
            if response.getcode() == 206:
                start = _content_range_start(response.headers.get("Content-Range"))
                if start != offset:
                    partial.unlink(missing_ok=True)
                    raise _Retryable(f"asked for bytes from {offset}, the server sent them from {start}", url)
            else:
                offset = 0  # 200: the whole file, also from a server that ignores Range
            length = _int_or_none(response.headers.get("Content-Length"))
            total = offset + length if length is not None else expected["size"]
            progress.start(offset)
            received = 0
            with open(partial, "ab" if offset else "wb") as out:
                while True:
                    try:
                        chunk = response.read(CHUNK)
                    except (OSError, http.client.HTTPException) as exc:
                        raise _Retryable(f"connection lost after {offset + received} bytes "
                                         f"({_describe(exc)})", url) from None
                    if not chunk:
                        break
                    out.write(chunk)
                    received += len(chunk)
                    progress.update(len(chunk))
                out.flush()
                os.fsync(out.fileno())
        if total is not None and offset + received < total:
            raise _Retryable(f"connection closed after {offset + received} of {total} bytes", url)
        return expected, offset > 0

    def _get(self, url: str, headers: dict, repo_id: str, what: str):
        """GET `url`, redirects followed by hand -> (the 2xx response, Hub headers met on the way).

        The token is sent only to the endpoint's origin (scheme, host and port), so a redirect to a
        CDN does not carry it. Raises _Retryable for what another try may cure, FetchError else.
        """
        hub_headers = {}
        for _ in range(MAX_REDIRECTS + 1):
            sent = {"User-Agent": self._user_agent, **headers}
            if self._token and _origin(url) == self._origin:
                sent["Authorization"] = f"Bearer {self._token}"
            try:
                response = self._opener.open(urllib.request.Request(url, headers=sent), timeout=self.timeout)
            except urllib.error.HTTPError as exc:
                response = exc  # a 3xx (not followed by urllib), 4xx or 5xx: an answer all the same
            except urllib.error.URLError as exc:
                raise _connection_failure(exc.reason, url) from None
            except (OSError, http.client.HTTPException) as exc:
                raise _connection_failure(exc, url) from None
            status = response.getcode()
            if _origin(url) == self._origin:
                for name in _HUB_HEADERS:
                    if response.headers.get(name) is not None:
                        hub_headers.setdefault(name, response.headers[name])
            if status in _REDIRECTS and response.headers.get("Location"):
                response.close()
                url = urljoin(url, response.headers["Location"])
                continue
            if 200 <= status < 300:
                return response, hub_headers
            body = _read_error_body(response)
            if status == 416 and "Range" in headers:
                raise _RangeNotSatisfiable(f"HTTP 416 for {headers['Range']}", url)
            if status == 429 or status >= 500:
                raise _Retryable(f"HTTP {status}{_detail(response.headers, body)}", url)
            raise self._status_error(status, response.headers, body, url, repo_id, what)
        raise FetchError(f"{what}: more than {MAX_REDIRECTS} redirects, the last to {_host(url)}")

    def _status_error(self, status, headers, body, url, repo_id, what) -> FetchError:
        """The FetchError that a 4xx answer means."""
        code = headers.get("X-Error-Code", "")
        detail = _detail(headers, body)
        listing = urlsplit(url).path.startswith(urlsplit(self.endpoint).path + "/api/")
        if self._token:
            token_hint = "HF_TOKEN is set, but its account must have access"
        else:
            token_hint = "set HF_TOKEN to a token of an account that has access"
        if code == "GatedRepo":
            return AccessDeniedError(f"{repo_id} is a gated repository{detail}: accept its conditions at "
                                     f"{self.endpoint}/{repo_id}; {token_hint}")
        if code == "RevisionNotFound":
            return RepoNotFoundError(f"{what}: no such revision in {repo_id} on {self.endpoint}{detail}")
        if code == "EntryNotFound" or (status == 404 and not listing):
            return FetchError(f"{what} of {repo_id}: listed, but the Hub has no such file{detail}")
        if status == 401 and "invalid credentials" in detail.lower():
            return AccessDeniedError(f"{self.endpoint} rejected HF_TOKEN (invalid credentials); "
                                     "set a valid token or unset HF_TOKEN")
        if code == "RepoNotFound" or status in (401, 404):
            return RepoNotFoundError(f"repository {repo_id} not found on {self.endpoint}; if it is private, "
                                     f"{token_hint}")
        if status == 403:
            return AccessDeniedError(f"{self.endpoint} refused access to {repo_id} (HTTP 403){detail}; "
                                     f"{token_hint}")
        return FetchError(f"{what} of {repo_id}: HTTP {status} from {_host(url)}{detail}")

    def _retrying(self, attempt, what: str):
        """attempt() until it succeeds, at most 1 + retries times, with growing pauses between."""
        for n in range(self.retries + 1):
            try:
                return attempt()
            except _Retryable as exc:
                if n == self.retries:
                    raise self._unreachable(exc, what, n + 1) from None
                self._pause(n)

    def _pause(self, n: int) -> None:
        time.sleep(min(self.backoff * 2 ** n, MAX_BACKOFF))

    def _unreachable(self, exc: _Retryable, what: str, tries: int) -> HubUnreachableError:
        if _origin(exc.url) == self._origin:
            return HubUnreachableError(
                f"could not reach the HuggingFace Hub at {self.endpoint} for {what}: {exc.reason} "
                f"({tries} {'try' if tries == 1 else 'tries'}); check the network, or set HF_ENDPOINT "
                "to a reachable mirror")
        return HubUnreachableError(
            f"could not download {what} from {_host(exc.url)}, where {self.endpoint} redirected: "
            f"{exc.reason} ({tries} {'try' if tries == 1 else 'tries'})")


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Hand 3xx answers back (as HTTPError) instead of following them: Hub._get follows them."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def _connection_failure(reason, url: str) -> Exception:
    if isinstance(reason, ssl.SSLCertVerificationError):  # not cured by trying again
        return HubUnreachableError(f"the TLS certificate of {_host(url)} could not be verified: "
                                   f"{reason.verify_message or reason}")
    return _Retryable(_describe(reason), url)


def _describe(exc) -> str:
    """A short phrase for a connection failure: 'timed out', 'Connection refused', ..."""
    if isinstance(exc, TimeoutError):  # socket.timeout is TimeoutError since Python 3.10
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _origin(url: str) -> tuple:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname, parts.port or {"http": 80, "https": 443}.get(parts.scheme)


def _host(url: str) -> str:
    return urlsplit(url).netloc.rpartition("@")[2]


def _read_body(response, url: str) -> bytes:
    """The whole body of a small answer (the file list); a short one is worth another try."""
    length = _int_or_none(response.headers.get("Content-Length"))
    chunks, received = [], 0
    while received <= MAX_API_BYTES:
        try:
            chunk = response.read(CHUNK)
        except (OSError, http.client.HTTPException) as exc:
            raise _Retryable(f"connection lost ({_describe(exc)})", url) from None
        if not chunk:
            break
        chunks.append(chunk)
        received += len(chunk)
    else:
        raise FetchError(f"{url}: answer larger than {MAX_API_BYTES} bytes")
    if length is not None and received < length:
        raise _Retryable(f"connection closed after {received} of {length} bytes", url)
    return b"".join(chunks)


def _read_error_body(response) -> bytes:
    try:
        return response.read(64 << 10)
    except (OSError, http.client.HTTPException, AttributeError):
        return b""
    finally:
        response.close()


def _detail(headers, body: bytes) -> str:
    """' (the server's message)', from X-Error-Message or a JSON {"error": ...} body; or ''."""
    message = headers.get("X-Error-Message")
    if not message:
        try:
            error = json.loads(body).get("error")
            message = error if isinstance(error, str) else None
        except (ValueError, AttributeError):
            message = None
    message = " ".join((message or "").split())[:200]
    return f" ({message})" if message else ""


def _content_range_start(value: str | None) -> int | None:
    match = re.fullmatch(r"\s*bytes\s+(\d+)-\d+/(?:\d+|\*)\s*", value or "")
    return int(match[1]) if match else None


def _int_or_none(value) -> int | None:
    try:
        return int(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None


def _hex_or_none(value, pattern: re.Pattern) -> str | None:
    return value.lower() if isinstance(value, str) and pattern.fullmatch(value.lower()) else None


def _etag(value: str | None) -> str | None:
    """An ETag header's value without W/ and quotes, lowercased; None when absent."""
    if not value:
        return None
    value = value.strip()
    value = value[2:] if value.startswith("W/") else value
    return value.strip('"').lower() or None


# ---------------------------------------------------------------------------------------------
# Verification


def _expected(remote: RemoteFile, hub_headers: dict, commit: str) -> dict:
    """The size and hashes `remote` must have: the listing's, checked against the download's headers."""
    served = hub_headers.get("X-Repo-Commit")
    if served and served.strip().lower() != commit:
        raise FetchError(f"{remote.name}: the Hub served it from commit {served.strip()[:12]}, "
                         f"not from {commit[:12]}, where the file list was taken")
    size, sha256, git_sha1 = remote.size, remote.sha256, remote.git_sha1

    linked_size = _int_or_none(hub_headers.get("X-Linked-Size"))
    if linked_size is not None:
        if size is not None and size != linked_size:
            raise IntegrityError(f"{remote.name}: the file list gives {size} bytes, the download "
                                 f"header X-Linked-Size {linked_size}")
        size = linked_size
    linked = _etag(hub_headers.get("X-Linked-Etag"))
    if linked and _SHA256.fullmatch(linked):  # an LFS file: the linked ETag is the sha256 of the content
        if sha256 is not None and sha256 != linked:
            raise IntegrityError(f"{remote.name}: the file list gives sha256 {sha256}, the download "
                                 f"header X-Linked-Etag {linked}")
        sha256 = linked
    etag = _etag(hub_headers.get("ETag"))
    if sha256 is None and not linked and etag and _SHA1.fullmatch(etag):  # a regular file: the git blob id
        if git_sha1 is not None and git_sha1 != etag:
            raise IntegrityError(f"{remote.name}: the file list gives git blob {git_sha1}, the download "
                                 f"header ETag {etag}")
        git_sha1 = etag
    return {"size": size, "sha256": sha256, "git_sha1": git_sha1}


def _check(path: Path, expected: dict) -> tuple[str | None, dict | None]:
    """(what is wrong with the file at `path`, None) or (None, its record)."""
    size = path.stat().st_size
    if expected["size"] is not None and size != expected["size"]:
        return f"{size} bytes, expected {expected['size']}", None
    sha256, git_sha1 = file_digests(path)
    if expected["sha256"] is not None and sha256 != expected["sha256"]:
        return f"sha256 {sha256}, expected {expected['sha256']}", None
    if expected["git_sha1"] is not None and git_sha1 != expected["git_sha1"]:
        return f"git blob sha1 {git_sha1}, expected {expected['git_sha1']}", None
    record = {"size": size, "sha256": sha256}
    if expected["git_sha1"] is not None:
        record["git_sha1"] = git_sha1
    return None, record


def _verified(path: Path, remote: RemoteFile) -> dict | None:
    """The record of a file already in place that matches the listing, or None (also when the
    listing gives no hash to check it against)."""
    if remote.sha256 is None and remote.git_sha1 is None:
        return None
    problem, record = _check(path, {"size": remote.size, "sha256": remote.sha256, "git_sha1": remote.git_sha1})
    return record if problem is None else None


def file_digests(path: Path) -> tuple[str, str]:
    """(sha256, git blob sha1) of a file, in one pass."""
    sha256 = hashlib.sha256()
    sha1 = hashlib.sha1(b"blob %d\0" % path.stat().st_size, usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            sha256.update(block)
            sha1.update(block)
    return sha256.hexdigest(), sha1.hexdigest()


# ---------------------------------------------------------------------------------------------
# Files


def partial_path(target: Path) -> Path:
    """Where the bytes of `target` gather until they are complete and verified."""
    return target.with_name(target.name + ".incomplete")


def install(partial: Path, target: Path) -> None:
    """Rename the complete, fsynced `partial` to `target` in one step, and make the rename durable."""
    os.replace(partial, target)
    _fsync_directory(target.parent)


def write_json(path: Path, data) -> None:
    """Write `data` as JSON to `path` atomically (temporary file, fsync, rename)."""
    partial = partial_path(path)
    with open(partial, "w", encoding="utf-8") as f:
        f.write(json.dumps(data, indent=2, sort_keys=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    install(partial, path)


def _fsync_directory(directory: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


# ---------------------------------------------------------------------------------------------
# Progress


class Progress:
    """`name  12.5/86.7 MB  14%`, redrawn in place on `stream` (default: stderr) when that is a
    terminal, at most ten times a second; silent otherwise."""

    def __init__(self, name: str, total: int | None, stream=None):
        self.stream = sys.stderr if stream is None else stream
        self.enabled = is_terminal(self.stream)
        self.name, self.total, self.done = name, total, 0
        self._drawn_at = None

    def start(self, done: int) -> None:
        self.done = done
        self._draw()

    def update(self, n: int) -> None:
        self.done += n
        if self._drawn_at is None or time.monotonic() - self._drawn_at >= 0.1:
            self._draw()

    def close(self) -> None:
        if self.enabled and self._drawn_at is not None:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()

    def _draw(self) -> None:
        if not self.enabled:
            return
        self._drawn_at = time.monotonic()
        line = f"{self.name}  {self.done / 1e6:.1f}"
        if self.total:
            line += f"/{self.total / 1e6:.1f} MB  {min(100, 100 * self.done // self.total):3d}%"
        else:
            line += " MB"
        self.stream.write("\r" + line + "\x1b[K")  # \x1b[K: clear the rest of the line
        self.stream.flush()


def is_terminal(stream) -> bool:
    """Whether `stream` is a terminal (False for anything without a working isatty)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False
