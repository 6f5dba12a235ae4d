"""A HuggingFace-Hub-like HTTP server on 127.0.0.1, for tests/test_fetch.py (never the real Hub).

It answers the requests minibert.hub makes, the way the Hub does:

    GET /api/models/{repo_id}/revision/{revision}[?blobs=true]
        {"id", "sha", "siblings": [{"rfilename"[, "size", "blobId", "lfs": {"sha256", "size", "pointerSize"}]}]}
    GET /{repo_id}/resolve/{revision}/{path}
        a regular file: 200 + bytes, ETag = git blob sha1, X-Repo-Commit
        an LFS file:    302 to /cdn/{sha256}/{path} (on this server, or on `cdn`, another server:
                        another origin), X-Linked-Etag = sha256, X-Linked-Size, X-Repo-Commit
    GET /cdn/{sha256}/{path}
        the LFS bytes; ETag = sha256
    errors: 401/404 X-Error-Code RepoNotFound, 404 RevisionNotFound / EntryNotFound,
        401 (no token) or 403 (wrong token) GatedRepo.

File bodies honour `Range: bytes=N-` (206 + Content-Range; 416 past the end). `faults` breaks
things on purpose; `log` holds every request (method, path, headers) in arrival order.
"""

import hashlib
import json
import re
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote, unquote, urlsplit


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def commit_id(n: int) -> str:
    return hashlib.sha1(b"commit %d" % n).hexdigest()


@dataclass
class Repo:
    commits: dict                          # commit -> {path: bytes}
    main: str                              # the commit that "main" points to
    lfs: set = field(default_factory=set)  # paths served through a redirect, as Git LFS files are
    gated_token: str | None = None         # gated: resolve needs "Authorization: Bearer <this>"
    cdn: "HubServer | None" = None         # where LFS redirects go (default: this server)

    def push(self, files: dict, lfs=()) -> str:
        """A new commit with `files`, which "main" then points to -> its id."""
        self.main = commit_id(len(self.commits) + 1000)
        self.commits[self.main] = dict(files)
        self.lfs |= set(lfs)
        return self.main


@dataclass
class Faults:
    drop_once: set = field(default_factory=set)   # paths: close the connection after half the body, once
    corrupt: set = field(default_factory=set)     # paths: serve the body with one byte changed
    ignore_range: bool = False                    # answer every Range request with 200 and the whole file
    commit_header: str | None = None              # send this X-Repo-Commit instead of the real one
    hang: float = 0.0                             # seconds to wait before answering anything
    unavailable: int = 0                          # answer the next this many requests with 503


class HubServer:
    """Start with `with HubServer() as hub:`; `hub.url` is its endpoint."""

    def __init__(self):
        self.repos: dict[str, Repo] = {}
        self.blobs: dict[str, bytes] = {}  # sha256 -> bytes, for /cdn/
        self.faults = Faults()
        self.log: list[tuple[str, str, dict]] = []
        self.after_listing = None  # called after each file list is sent (to move "main" mid-fetch)
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.hub = self
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def add_repo(self, repo_id: str, files: dict, *, lfs=(), gated_token=None, cdn=None) -> Repo:
        repo = Repo(commits={}, main="", gated_token=gated_token, cdn=cdn)
        repo.push(files, lfs)
        self.repos[repo_id] = repo
        return repo

    def requests(self, kind: str = "") -> list[tuple[str, str, dict]]:
        """Logged requests whose path contains `kind` ('/resolve/', '/api/', '/cdn/')."""
        with self._lock:
            return [entry for entry in self.log if kind in entry[1]]

    def file_requests(self, name: str) -> list[dict]:
        """The headers of every request for the bytes of `name` (resolve or CDN), in order."""
        out = []
        for _, path, headers in self.requests():
            path = urlsplit(path).path
            if "/resolve/" in path:
                requested = path.partition("/resolve/")[2].partition("/")[2]  # after the revision
            elif path.startswith("/cdn/"):
                requested = path[len("/cdn/"):].partition("/")[2]  # after the sha256
            else:
                continue
            if unquote(requested) == name:
                out.append(headers)
        return out


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # do not wait for a handler that is still hanging

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)  # a client that gave up is no error here


class _Handler(BaseHTTPRequestHandler):
    server_version = "HubServer/1"

    def log_message(self, *args):  # quiet
        pass

    @property
    def hub(self) -> HubServer:
        return self.server.hub

    def do_GET(self):
        with self.hub._lock:
            self.hub.log.append(("GET", self.path, {k.lower(): v for k, v in self.headers.items()}))
        if self.hub.faults.hang:
            time.sleep(self.hub.faults.hang)
        with self.hub._lock:
            unavailable = self.hub.faults.unavailable > 0
            self.hub.faults.unavailable -= unavailable
        if unavailable:
            return self._error(503, None, "Service Unavailable")
        path = urlsplit(self.path).path
        if path.startswith("/api/models/"):
            return self._listing(path[len("/api/models/"):], "blobs=true" in urlsplit(self.path).query)
        if path.startswith("/cdn/"):
            digest, _, name = path[len("/cdn/"):].partition("/")
            data = self.hub.blobs.get(digest)
            if data is None:
                return self._error(404, "EntryNotFound", "no such blob")
            return self._send_file(unquote(name), data, {"ETag": f'"{digest}"'})
        if "/resolve/" in path:
            return self._resolve(path)
        return self._error(404, None, "not found")

    # -- routes ------------------------------------------------------------------------------

    def _listing(self, rest: str, blobs: bool):
        repo_id, sep, revision = rest.partition("/revision/")
        repo = self._repo(repo_id)
        if repo is None:
            return
        commit = self._commit(repo, unquote(revision) if sep else "main")
        if commit is None:
            return
        siblings = []
        for name, data in sorted(repo.commits[commit].items()):
            entry = {"rfilename": name}
            if blobs:
                entry.update(size=len(data), blobId=git_blob_sha1(data))
                if name in repo.lfs:
                    entry["lfs"] = {"sha256": sha256(data), "size": len(data), "pointerSize": 134}
            siblings.append(entry)
        self._send_json(200, {"id": repo_id, "sha": commit, "siblings": siblings})
        if self.hub.after_listing is not None:
            self.hub.after_listing()

    def _resolve(self, path: str):
        repo_id, _, rest = path.lstrip("/").partition("/resolve/")
        revision, _, name = rest.partition("/")
        name = unquote(name)
        repo = self._repo(repo_id)
        if repo is None:
            return
        if repo.gated_token is not None:
            auth = self.headers.get("Authorization")
            if auth != f"Bearer {repo.gated_token}":
                return self._error(401 if auth is None else 403, "GatedRepo",
                                   f"Access to model {repo_id} is restricted. You must have access to it "
                                   "and be authenticated to access it. Please log in.")
        commit = self._commit(repo, unquote(revision))
        if commit is None:
            return
        data = repo.commits[commit].get(name)
        commit_header = self.hub.faults.commit_header or commit
        if data is None:
            return self._error(404, "EntryNotFound", f"{name} does not exist", {"X-Repo-Commit": commit_header})
        if name in repo.lfs:
            digest = sha256(data)
            self.hub.blobs[digest] = data
            base = repo.cdn.url if repo.cdn is not None else ""
            if repo.cdn is not None:
                repo.cdn.blobs[digest] = data
            self.send_response(302)
            self.send_header("Location", f"{base}/cdn/{digest}/{quote(name)}")
            self.send_header("X-Repo-Commit", commit_header)
            self.send_header("X-Linked-Etag", f'"{digest}"')
            self.send_header("X-Linked-Size", str(len(data)))
            self.send_header("ETag", f'"{git_blob_sha1(data)}"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._send_file(name, data, {"ETag": f'"{git_blob_sha1(data)}"', "X-Repo-Commit": commit_header})

    # -- helpers -----------------------------------------------------------------------------

    def _repo(self, repo_id: str) -> Repo | None:
        repo = self.hub.repos.get(repo_id)
        if repo is None:  # like the Hub: 401 without a token (private and missing look the same)
            status = 404 if self.headers.get("Authorization") else 401
            self._error(status, "RepoNotFound", "Repository not found")
        return repo

    def _commit(self, repo: Repo, revision: str) -> str | None:
        if revision == "main":
            return repo.main
        if revision in repo.commits:
            return revision
        self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return None

    def _send_file(self, name: str, data: bytes, headers: dict):
        faults = self.hub.faults
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if match and not faults.ignore_range:
            start = int(match[1])
            if start >= len(data):
                return self._error(416, None, "Range Not Satisfiable", {"Content-Range": f"bytes */{len(data)}"})
        body = data[start:]
        if name in faults.corrupt and body:
            body = bytes([body[0] ^ 0xFF]) + body[1:]
        self.send_response(206 if match and not faults.ignore_range else 200)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(body)))
        if match and not faults.ignore_range:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if name in faults.drop_once:
            faults.drop_once.discard(name)
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)  # the client sees the end of the stream early
            return
        self.wfile.write(body)

    def _send_json(self, status: int, payload, headers=None):
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, code: str | None, message: str, headers=None):
        headers = dict(headers or {})
        if code:
            headers["X-Error-Code"] = code
        headers["X-Error-Message"] = message
        self._send_json(status, {"error": message}, headers)
