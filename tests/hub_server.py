"""A HuggingFace-Hub-like HTTP server on 127.0.0.1, for the Hub tests (never the real Hub).

It answers what huggingface_hub asks (hf_api.py model_info / list_repo_tree, file_download.py
get_hf_file_metadata / http_get), the way the Hub does:

    GET /api/models/{repo_id}[/revision/{revision}][?blobs=true]
        {"id", "sha", "siblings": [{"rfilename"[, "size", "blobId", "lfs": {"sha256", "size", "pointerSize"}]}]}
    GET /api/models/{repo_id}/tree/{revision}[/{path}][?recursive=true]
        [{"type": "file", "path", "size", "oid", ["lfs": {"oid", "size", "pointerSize"}]}, {"type": "directory", ...}]
    HEAD or GET /{repo_id}/resolve/{revision}/{path}
        a regular file: 200 (+ bytes for GET), ETag = git blob sha1, Content-Length, X-Repo-Commit
        an LFS file:    302 to {cdn}/cdn/{sha256}/{path}, on a second server (another origin, as the
                        Hub's CDN is another host), X-Linked-Etag = sha256, X-Linked-Size, X-Repo-Commit
    HEAD or GET {cdn}/cdn/{sha256}/{path}
        the LFS bytes; ETag = sha256
    errors: 401/404 X-Error-Code RepoNotFound, 404 RevisionNotFound / EntryNotFound (with
        X-Repo-Commit), 401 (no token) or 403 (wrong token) GatedRepo.

A revision is "main", a tag (Repo.tags) or a commit id. File bodies honour `Range: bytes=N-`
(206 + Content-Range; 416 past the end). `faults` breaks things on purpose; `log` holds every
request (method, path, headers) in arrival order, the CDN's included.
"""

import hashlib
import json
import os
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
    tags: dict = field(default_factory=dict)  # tag -> commit

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
    fail_get: set = field(default_factory=set)    # paths whose bytes (GET, not HEAD) are answered with 500


class HubServer:
    """Start with `with HubServer() as hub:`; `hub.url` is its endpoint, `hub.cdn_url` its CDN's."""

    def __init__(self):
        self.repos: dict[str, Repo] = {}
        self.blobs: dict[str, bytes] = {}  # sha256 -> bytes, for /cdn/
        self.faults = Faults()
        self.log: list[tuple[str, str, dict]] = []
        self.after_listing = None  # called after each file list is sent (to move "main" mid-fetch)
        self._lock = threading.Lock()
        self._servers = [_Server(("127.0.0.1", 0), _Handler) for _ in range(2)]  # the Hub, its CDN
        for server in self._servers:
            server.hub = self
        self.url, self.cdn_url = (f"http://127.0.0.1:{server.server_address[1]}" for server in self._servers)
        self._threads = [threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
                         for server in self._servers]

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        for server, thread in zip(self._servers, self._threads):
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)

    def add_repo(self, repo_id: str, files: dict, *, lfs=(), gated_token=None) -> Repo:
        repo = Repo(commits={}, main="", gated_token=gated_token)
        repo.push(files, lfs)
        self.repos[repo_id] = repo
        return repo

    def requests(self, kind: str = "", method: str | None = None) -> list[tuple[str, str, dict]]:
        """Logged requests whose path contains `kind` ('/resolve/', '/api/', '/cdn/'), of `method` if given."""
        with self._lock:
            return [entry for entry in self.log if kind in entry[1] and method in (None, entry[0])]

    def file_requests(self, name: str) -> list[dict]:
        """The headers of every GET for the bytes of `name` (resolve or CDN), in order."""
        out = []
        for _, path, headers in self.requests(method="GET"):
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

    def do_HEAD(self):
        self.do_GET(method="HEAD")

    def do_GET(self, method="GET"):
        self.method = method
        with self.hub._lock:
            self.hub.log.append((method, self.path, {k.lower(): v for k, v in self.headers.items()}))
        if self.hub.faults.hang:
            time.sleep(self.hub.faults.hang)
        with self.hub._lock:
            unavailable = self.hub.faults.unavailable > 0
            self.hub.faults.unavailable -= unavailable
        if unavailable:
            return self._error(503, None, "Service Unavailable")
        path, query = urlsplit(self.path).path, urlsplit(self.path).query
        if path.startswith("/api/models/") and "/tree/" in path:
            return self._tree(path[len("/api/models/"):], "recursive=true" in query.lower())
        if path.startswith("/api/models/"):
            return self._listing(path[len("/api/models/"):], "blobs=true" in query.lower())
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

    def _tree(self, rest: str, recursive: bool):
        repo_id, _, rest = rest.partition("/tree/")
        revision, _, folder = rest.partition("/")
        repo = self._repo(repo_id)
        if repo is None:
            return
        commit = self._commit(repo, unquote(revision))
        if commit is None:
            return
        prefix = unquote(folder).strip("/") + "/" if folder.strip("/") else ""
        entries, folders = [], set()
        for name, data in sorted(repo.commits[commit].items()):
            if not name.startswith(prefix):
                continue
            parts = name[len(prefix):].split("/")
            for depth in range(1, len(parts)):
                folders.add(prefix + "/".join(parts[:depth]))
            if len(parts) > 1 and not recursive:
                continue
            entry = {"type": "file", "oid": git_blob_sha1(data), "size": len(data), "path": name}
            if name in repo.lfs:
                entry["lfs"] = {"oid": sha256(data), "size": len(data), "pointerSize": 134}
            entries.append(entry)
        shown = folders if recursive else {f for f in folders if "/" not in f[len(prefix):]}
        entries += [{"type": "directory", "oid": "0" * 40, "size": 0, "path": f} for f in sorted(shown)]
        self._send_json(200, entries)

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
            self.send_response(302)
            self.send_header("Location", f"{self.hub.cdn_url}/cdn/{digest}/{quote(name)}")
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
        if revision in repo.tags:
            return repo.tags[revision]
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
        if self.method == "GET" and name in faults.fail_get:
            return self._error(500, None, "Internal Error")
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
        if self.method == "HEAD":
            return
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
        if self.method != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str | None, message: str, headers=None):
        headers = dict(headers or {})
        if code:
            headers["X-Error-Code"] = code
        headers["X-Error-Message"] = message
        self._send_json(status, {"error": message}, headers)


# ---------------------------------------------------------------------------------------------
# Fixtures for the Hub tests (imported by tests/test_hub.py and tests/test_fetch.py)

import pytest  # noqa: E402

MODULES = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
           {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
           {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]
MODEL_REPO = "someone/tiny-cross-encoder"
# What a minibert folder gets from MODEL_REPO (pytorch_model.bin, README.md, onnx/ are left behind).
NEEDED = {"config.json", "vocab.txt", "tokenizer_config.json", "modules.json", "sentence_bert_config.json",
          "1_Pooling/config.json", "model.safetensors"}


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """A HubServer as HF_ENDPOINT, online, with an empty HuggingFace cache under tmp_path/hf-home."""
    import huggingface_hub.constants

    with HubServer() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
        yield server


@pytest.fixture(scope="session")
def model_files(tmp_path_factory) -> dict[str, bytes]:
    """A tiny random cross-encoder in the Hub's layout (also a sentence encoder: modules.json), plus
    files minibert does not need."""
    from conftest import build_tiny_bert

    directory = build_tiny_bert(tmp_path_factory.mktemp("tiny-for-hub"))
    files = {path.name: path.read_bytes() for path in directory.iterdir()}
    files.update({
        "modules.json": json.dumps(MODULES).encode(),
        "sentence_bert_config.json": b'{"max_seq_length": 64, "do_lower_case": false}',
        "1_Pooling/config.json": b'{"word_embedding_dimension": 32, "pooling_mode_mean_tokens": true}',
        "README.md": b"# a model card\n",
        "pytorch_model.bin": b"not needed: model.safetensors is there",
        "onnx/model.onnx": b"not needed either",
        ".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
    })
    return files


@pytest.fixture
def model_repo(hub, model_files):
    return hub.add_repo(MODEL_REPO, model_files, lfs={"model.safetensors", "pytorch_model.bin", "onnx/model.onnx"})


def folder(dest) -> dict[str, bytes]:
    """Every file under `dest` by relative path, huggingface_hub's .cache/ left out."""
    from pathlib import Path

    dest = Path(dest)
    return {p.relative_to(dest).as_posix(): p.read_bytes() for p in sorted(dest.rglob("*"))
            if p.is_file() and not p.relative_to(dest).as_posix().startswith(".cache/")}


def hf_cache_env(server: HubServer, hf_home) -> dict:
    """The environment of a process that uses `server` as the Hub and `hf_home` as HF_HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    return {**env, "HF_ENDPOINT": server.url, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "0",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1", "no_proxy": "127.0.0.1,localhost"}
