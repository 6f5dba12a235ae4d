"""`minibert serve` over real HTTP: a server process on 127.0.0.1, talked to with httpx and real clients.

Every server is `python -m minibert serve --port 0` in a subprocess: it prints the port it got on
its "listening" line. The models: the tiny-l1 golden cross-encoder (a reranker), tiny-l3 (a
3-label classifier) and the real all-MiniLM-L6-v2 (a sentence encoder). The overload, shutdown and
disconnect tests hold requests in flight on purpose, whatever the machine's speed: a request whose
body is half sent (it holds a place in the queue from its first byte), or, in a server run in a
thread of the test, a model whose first pass waits for the test.
"""

import asyncio
import importlib.util
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")   # the serve-test extra; CI installs it
pytest.importorskip("starlette")

from minibert import CrossEncoder, SentenceEncoder  # noqa: E402
from minibert.serve.queue import Batcher  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
GOLDENS = ROOT / "tests" / "fixtures" / "goldens"
MINILM = ROOT / "weights" / "all-MiniLM-L6-v2"
WORDS = ("the a of and to in is what how city capital paris france berlin germany cat dog sat on mat "
         "cheese moon sun river fish bird tree water blue green red big small fast slow").split()


class Server:
    """A `minibert serve` process; .url once it listens; .stop() sends SIGTERM and waits."""

    def __init__(self, model, *options, tmp_path):
        self.log_path = tmp_path / f"serve-{time.monotonic_ns()}.log"
        self.log_file = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "minibert", "serve", "--model", str(model), "--port", "0", *options],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self.log_file)
        deadline = time.monotonic() + 60
        while not (found := re.search(r"listening on (http://127\.0\.0\.1:\d+)", self.log())):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the server did not start:\n{self.log()}")
            time.sleep(0.05)
        self.url = found.group(1)
        self.port = int(self.url.rsplit(":", 1)[1])
        self.client = httpx.Client(base_url=self.url, timeout=60)

    def log(self) -> str:
        return self.log_path.read_text()

    def post(self, path, body=None, **kwargs):
        return self.client.post(path, json=body, **kwargs) if body is not None else self.client.post(path, **kwargs)

    def metric(self, name: str) -> float:
        for line in self.client.get("/metrics").text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        raise KeyError(name)

    def wait_for(self, condition, what: str):
        wait_for(condition, what)

    def stop(self, sig=signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=60)
        finally:
            self.log_file.close()


def wait_for(condition, what: str, timeout=30):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


class ThreadServer:
    """uvicorn serving `app` in a thread of this process, on a free port of 127.0.0.1."""

    def __init__(self, app):
        import uvicorn

        sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.port = sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_config=None, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]})
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "the server did not start"
            time.sleep(0.01)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.server.should_exit = True
        self.thread.join(30)


class PartialRequest:
    """A request sent over a raw socket up to the middle of its body: in flight until .finish()."""

    def __init__(self, port, path, body: dict):
        data = json.dumps(body).encode()
        self.rest = data[len(data) // 2:]
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          f"Content-Length: {len(data)}\r\n\r\n".encode() + data[:len(data) // 2])

    def finish(self):
        """(status, JSON body) once the rest of the body is sent."""
        self.sock.sendall(self.rest)
        response = b""
        while b"\r\n\r\n" not in response:
            response += self.sock.recv(65536)
        head, body = response.split(b"\r\n\r\n", 1)
        length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))
        while len(body) < length:
            body += self.sock.recv(65536)
        self.sock.close()
        return int(head.split()[1]), json.loads(body)


def sentence(rng, n_words) -> str:
    return " ".join(rng.choice(WORDS, size=n_words))


def rerank_body(seed, n=20):
    rng = np.random.default_rng(seed)
    return {"query": sentence(rng, 3), "texts": [sentence(rng, 12) for _ in range(n)], "raw_scores": True}


def check_rerank(ce, body, ranks):
    expected = ce.predict([(body["query"], t) for t in body["texts"]])
    got = np.empty(len(body["texts"]))
    for rank in ranks:
        got[rank["index"]] = rank["score"]
    assert np.abs(got - expected).max() <= 1e-5


@pytest.fixture(scope="module")
def server_factory(tmp_path_factory):
    started = []

    def start(model, *options):
        server = Server(model, *options, tmp_path=tmp_path_factory.mktemp("serve"))
        started.append(server)
        return server
    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def reranker(server_factory):
    return server_factory(GOLDENS / "tiny-l1", "--max-client-batch-size", "40")


@pytest.fixture(scope="module")
def classifier(server_factory):
    return server_factory(GOLDENS / "tiny-l3")


@pytest.fixture(scope="module")
def encoder():
    return SentenceEncoder(MINILM)


@pytest.fixture(scope="module")
def embedder(server_factory):
    return server_factory(MINILM)


# ---------------------------------------------------------------------------------------------
# TEI routes


def test_rerank_scores_are_predicts_sigmoid_best_first(reranker, ce):
    texts = ["paris is the capital of france", "the cat sat on the mat", "berlin is in germany", ""]
    query = "what is the capital of france"
    r = reranker.post("/rerank", {"query": query, "texts": texts, "return_text": True})
    assert r.status_code == 200, r.text
    ranks = r.json()
    expected = ce.predict([(query, t) for t in texts], activation="sigmoid")
    assert sorted(rank["index"] for rank in ranks) == list(range(len(texts)))
    assert [rank["index"] for rank in ranks] == sorted(range(len(texts)), key=lambda i: -expected[i])
    for rank in ranks:
        assert set(rank) == {"index", "text", "score"}
        assert rank["text"] == texts[rank["index"]]
        assert abs(rank["score"] - expected[rank["index"]]) <= 1e-5

    raw = reranker.post("/rerank", {"query": query, "texts": texts, "raw_scores": True}).json()
    logits = ce.predict([(query, t) for t in texts])
    assert all(set(rank) == {"index", "score"} for rank in raw)
    assert max(abs(rank["score"] - logits[rank["index"]]) for rank in raw) <= 1e-5


def test_rerank_ignores_unknown_fields_and_takes_tei_spellings(reranker, ce):
    body = {"query": "q", "texts": ["a", "b"], "model": "anything", "top_n": 1, "truncate": None,
            "truncation_direction": "Right"}
    r = reranker.post("/rerank", body)
    assert r.status_code == 200, r.text
    assert len(r.json()) == 2


def test_truncation(reranker, ce):
    long = " ".join(["cheese"] * 200)   # far past tiny-l1's 48 tokens
    query = "the moon"
    r = reranker.post("/rerank", {"query": query, "texts": [long, "short"]})   # truncate: the default
    assert r.status_code == 200, r.text
    expected = ce.predict([(query, long), (query, "short")], activation="sigmoid")
    assert max(abs(rank["score"] - expected[rank["index"]]) for rank in r.json()) <= 1e-5

    r = reranker.post("/rerank", {"query": query, "texts": ["short", long], "truncate": False})
    assert r.status_code == 413
    assert r.json() == {"error": "`texts[1]` is longer than the model's max_input_length of 48 tokens and "
                                 "truncate is false", "error_type": "Validation"}
    exactly = " ".join(["the"] * 42)   # [CLS] the mo ##on [SEP] the x 42 [SEP]: 48 tokens, nothing cut
    assert len(ce.tokenizer.encode_pairs([(query, exactly)])[0][0]) == 48
    assert reranker.post("/rerank", {"query": query, "texts": [exactly], "truncate": False}).status_code == 200
    r = reranker.post("/rerank", {"query": query, "texts": [exactly + " the"], "truncate": False})   # 49
    assert r.status_code == 413

    # Left truncation is served (tests/test_serve_auth.py checks what it keeps); a text that fits is not cut.
    r = reranker.post("/rerank", {"query": query, "texts": [long, "short"], "truncation_direction": "left"})
    assert r.status_code == 200, r.text
    assert [abs(rank["score"] - expected[1]) <= 1e-5 for rank in r.json() if rank["index"] == 1] == [True]


def test_predict_on_a_classifier(classifier, ce3):
    pairs = [("the cat", "sat on the mat"), ("Paris", "is in France")]
    r = classifier.post("/predict", {"inputs": [list(p) for p in pairs]})
    assert r.status_code == 200, r.text
    expected = ce3.predict(pairs, activation="softmax")
    labels = ce3.id2label
    for row, want in zip(r.json(), expected):
        assert [p["score"] for p in row] == sorted((p["score"] for p in row), reverse=True)
        got = {p["label"]: p["score"] for p in row}
        assert max(abs(got[labels[j]] - want[j]) for j in range(3)) <= 1e-5

    single = classifier.post("/predict", {"inputs": list(pairs[0]), "raw_scores": True})
    assert single.status_code == 200
    logits = ce3.predict(pairs[0])
    got = {p["label"]: p["score"] for p in single.json()}   # one input: one list, not a list of lists
    assert max(abs(got[labels[j]] - logits[j]) for j in range(3)) <= 1e-5

    assert classifier.post("/predict", {"inputs": "a single text"}).status_code == 422
    assert classifier.post("/predict", {"inputs": [["a", "b", "c"]]}).status_code == 422


def test_predict_on_a_reranker_is_its_sigmoid(reranker, ce):
    r = reranker.post("/predict", {"inputs": [["q", "a"], ["q", "b"]]})
    assert r.status_code == 200
    expected = ce.predict([("q", "a"), ("q", "b")], activation="sigmoid")
    assert [[p["label"] for p in row] for row in r.json()] == [["LABEL_0"], ["LABEL_0"]]
    assert max(abs(row[0]["score"] - e) for row, e in zip(r.json(), expected)) <= 1e-5


def test_embed(embedder, encoder):
    texts = ["a first text", "the second one is longer than the first"]
    r = embedder.post("/embed", {"inputs": texts})
    assert r.status_code == 200, r.text
    got = np.array(r.json(), dtype=np.float32)
    assert got.shape == (2, 384)
    assert np.abs(got - encoder.encode(texts, normalize=True)).max() <= 1e-5

    one = embedder.post("/embed", {"inputs": texts[0], "normalize": False})
    assert np.abs(np.array(one.json()[0]) - encoder.encode(texts[0])).max() <= 1e-5
    cut = np.array(embedder.post("/embed", {"inputs": texts, "dimensions": 64}).json())
    full = encoder.encode(texts)[:, :64]
    assert cut.shape == (2, 64)
    assert np.abs(cut - full / np.linalg.norm(full, axis=1, keepdims=True)).max() <= 1e-5
    assert embedder.post("/embed", {"inputs": texts, "dimensions": 385}).status_code == 422
    assert embedder.post("/embed", {"inputs": texts, "prompt_name": "query"}).status_code == 422


def test_info_health_metrics(reranker, embedder, classifier):
    info = reranker.client.get("/info").json()
    assert info["model_id"] == "tiny-l1"
    assert info["model_type"] == {"reranker": {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}}
    assert info["architecture"] == "BertForSequenceClassification"
    assert (info["max_input_length"], info["max_client_batch_size"], info["max_batch_tokens"],
            info["max_concurrent_requests"], info["auto_truncate"], info["max_batch_requests"]) == (48, 40, 16384, 512,
                                                                                                    True, 32)
    assert info["version"] and info["model_dtype"] == "float32"
    assert embedder.client.get("/info").json()["model_type"] == {"embedding": {"pooling": "mean"}}
    assert list(classifier.client.get("/info").json()["model_type"]) == ["classifier"]

    health = reranker.client.get("/health")
    assert (health.status_code, health.content) == (200, b"")

    reranker.post("/rerank", {"query": "q", "texts": ["a", "b", "c"]})
    text = reranker.client.get("/metrics").text
    for name in ("minibert_requests_total", "minibert_request_duration_seconds_bucket", "minibert_inputs_scored_total",
                 "minibert_tokens_scored_total", "minibert_queue_depth", "minibert_batch_inputs_bucket",
                 "minibert_batch_requests_bucket", "minibert_batch_tokens_bucket"):
        assert name in text, name
    assert reranker.metric('minibert_requests_total{route="/rerank",status="200"}') >= 1
    assert reranker.metric("minibert_inputs_scored_total") >= 3
    assert re.search(r"POST /rerank 200 3 pairs \d+\.\d ms", reranker.log())


# ---------------------------------------------------------------------------------------------
# Cohere / Jina routes and real clients


@pytest.mark.parametrize("version", ["1", "2"])
def test_cohere_rerank(reranker, ce, version):
    documents = ["paris is the capital", {"text": "the cat sat"}, "berlin"]
    body = {"model": "minibert", "query": "capital", "documents": documents, "top_n": 2, "return_documents": True}
    r = reranker.post(f"/v{version}/rerank", body)
    assert r.status_code == 200, r.text
    out = r.json()
    texts = ["paris is the capital", "the cat sat", "berlin"]
    expected = ce.predict([("capital", t) for t in texts], activation="sigmoid")
    assert [x["index"] for x in out["results"]] == list(np.argsort(-expected)[:2])
    for x in out["results"]:
        assert abs(x["relevance_score"] - expected[x["index"]]) <= 1e-5
        assert x["document"] == {"text": texts[x["index"]]}
    assert out["meta"]["api_version"]["version"] == version and out["id"]
    plain = reranker.post(f"/v{version}/rerank", {"query": "capital", "documents": texts}).json()
    assert len(plain["results"]) == 3 and all(set(x) == {"index", "relevance_score"} for x in plain["results"])


def test_cohere_sdk(reranker, ce):
    cohere = pytest.importorskip("cohere")
    documents = ["paris is the capital of france", "the cat sat on the mat", "berlin is in germany"]
    client = cohere.ClientV2(base_url=reranker.url, api_key="x")
    response = client.rerank(model="minibert", query="capital of france", documents=documents, top_n=2)
    expected = ce.predict([("capital of france", d) for d in documents], activation="sigmoid")
    assert [x.index for x in response.results] == list(np.argsort(-expected)[:2])
    assert max(abs(x.relevance_score - expected[x.index]) for x in response.results) <= 1e-5

    v1 = cohere.Client(base_url=reranker.url, api_key="x").rerank(
        model="minibert", query="capital of france", documents=documents, return_documents=True)
    assert [x.document.text for x in v1.results] == [documents[i] for i in np.argsort(-expected)]


RERANKERS_CLIENT = """
import json, sys
sys.modules["torch"] = sys.modules["transformers"] = None   # as installed without them: rerankers skips its local models
from rerankers.models.api_rankers import APIRanker          # rerankers' TEI provider: POST /rerank with "texts"
url, query, documents = json.loads(sys.argv[1])
ranker = APIRanker(model="minibert", api_key="x", api_provider="text-embeddings-inference", url=url, verbose=0)
results = ranker.rank(query=query, docs=documents)
print(json.dumps([[r.document.text, r.score] for r in results.results]))
"""


def test_rerankers_tei_client(reranker, ce):
    if importlib.util.find_spec("rerankers") is None:   # not imported here: with torch installed it loads torch
        pytest.skip("rerankers is not installed (the serve-test extra)")
    documents = ["paris is the capital of france", "the cat sat on the mat", "berlin is in germany"]
    argument = json.dumps([reranker.url + "/rerank", "capital of france", documents])
    out = subprocess.run([sys.executable, "-c", RERANKERS_CLIENT, argument], capture_output=True, text=True,
                         check=True, timeout=60)
    results = json.loads(out.stdout)
    expected = ce.predict([("capital of france", d) for d in documents], activation="sigmoid")
    assert [text for text, _ in results] == [documents[i] for i in np.argsort(-expected)]
    assert max(abs(score - expected[documents.index(text)]) for text, score in results) <= 1e-5


# ---------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize("body, status, error_type", [
    (b"{not json", 422, "Validation"),
    (b'["a", "list"]', 422, "Validation"),
    (b'{"query": "q", "texts": ["a", NaN]}', 422, "Validation"),
    (b'{"query": "q", "texts": [null]}', 422, "Validation"),
    (b'{"query": "q", "texts": [3]}', 422, "Validation"),
    (b'{"query": "q", "texts": "not a list"}', 422, "Validation"),
    (b'{"query": "\\ud800", "texts": ["a"]}', 422, "Validation"),     # a lone surrogate
    (b'{"query": "q", "texts": ["a\\udfff"]}', 422, "Validation"),
    (b'{"texts": ["a"]}', 422, "Validation"),
    (b'{"query": "q", "texts": []}', 422, "Empty"),
    (b'{"query": "q", "texts": ["a"], "raw_scores": "yes"}', 422, "Validation"),
    (b'{"query": "q", "texts": ["a"], "truncation_direction": "up"}', 422, "Validation"),
    (b"\xff\xfe", 422, "Validation"),
    (json.dumps({"query": "q", "texts": ["a"] * 41}).encode(), 413, "Validation"),
])
def test_bad_rerank_requests(reranker, body, status, error_type):
    r = reranker.post("/rerank", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert r.json()["error_type"] == error_type and r.json()["error"]


@pytest.mark.parametrize("body", [
    {"query": "q", "documents": [{"txt": "a"}]},
    {"query": "q", "documents": [None]},
    {"query": "q", "documents": ["a"], "top_n": 0},
    {"query": "q", "documents": ["a"], "return_documents": 1},
    {"query": 1, "documents": ["a"]},
])
def test_bad_cohere_requests(reranker, body):
    r = reranker.post("/v2/rerank", body)
    assert r.status_code == 422 and r.json()["error_type"] == "Validation", r.text


def test_payload_limit_and_unknown_routes(reranker):
    big = {"query": "q", "texts": ["word " * 420_000]}   # 2.1 MB, over TEI's 2 MB default
    r = reranker.post("/rerank", big)
    assert r.status_code == 413 and r.json()["error_type"] == "Validation"
    r = reranker.client.get("/nope")
    assert r.status_code == 404 and r.json()["error_type"] == "Validation"
    assert reranker.client.get("/rerank").status_code == 405
    assert reranker.post("/rerank", {"query": "q", "texts": ["a"]}).status_code == 200   # still serving


def test_routes_the_model_cannot_serve_are_424(reranker, classifier, embedder):
    for server, path, body in [
        (embedder, "/rerank", {"query": "q", "texts": ["a"]}),
        (embedder, "/v1/rerank", {"query": "q", "documents": ["a"]}),
        (embedder, "/predict", {"inputs": ["q", "a"]}),
        (classifier, "/rerank", {"query": "q", "texts": ["a"]}),   # 3 labels: not a re-ranker
        (classifier, "/v2/rerank", {"query": "q", "documents": ["a"]}),
        (reranker, "/embed", {"inputs": "a"}),
    ]:
        r = server.post(path, body)
        assert r.status_code == 424, (path, r.text)
        assert r.json()["error_type"] == "Backend" and "model is not" in r.json()["error"]


# ---------------------------------------------------------------------------------------------
# Concurrency: batching, overload, shutdown, disconnects


def test_concurrent_requests_get_their_own_predict_scores(reranker, ce):
    rng = np.random.default_rng(7)
    requests = []
    for i in range(24):
        query = sentence(rng, 3)
        texts = [sentence(rng, int(rng.integers(1, 40))) for _ in range(int(rng.integers(1, 41)))]
        requests.append((query, texts))
    bad = {"query": "q", "texts": [None]}

    def send(i):
        if i % 6 == 5:   # bad requests in the middle of the good ones disturb none of them
            return reranker.client.post("/rerank", json=bad)
        query, texts = requests[i]
        return reranker.client.post("/rerank", json={"query": query, "texts": texts, "raw_scores": True})

    before = reranker.metric("minibert_batch_inputs_count")
    with ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(send, range(len(requests))))
    for i, (r, (query, texts)) in enumerate(zip(responses, requests)):
        if i % 6 == 5:
            assert r.status_code == 422
            continue
        assert r.status_code == 200, r.text
        expected = ce.predict([(query, t) for t in texts])
        got = np.empty(len(texts))
        for rank in r.json():
            got[rank["index"]] = rank["score"]
        assert np.abs(got - expected).max() <= 1e-5, i
    assert reranker.metric("minibert_batch_inputs_count") > before


def test_overload_is_429_at_once(ce):
    from minibert.serve import create_app

    app = create_app(CrossEncoder(GOLDENS / "tiny-l1"), max_concurrent_requests=2)
    bodies = [rerank_body(seed) for seed in range(2)]
    with ThreadServer(app) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        held = [PartialRequest(server.port, "/rerank", body) for body in bodies]   # two places taken
        wait_for(lambda: app.state.service.in_flight == 2, "two requests in flight")
        r = client.post("/rerank", json={"query": "q", "texts": ["one more"]})
        assert r.status_code == 429 and r.json()["error_type"] == "Overloaded", r.text
        assert client.post("/v2/rerank", json={"query": "q", "documents": ["a"]}).status_code == 429
        assert client.get("/health").status_code == 200   # not a scoring route: no place needed
        for request, body in zip(held, bodies):
            status, ranks = request.finish()
            assert status == 200
            check_rerank(ce, body, ranks)
        assert client.post("/rerank", json={"query": "q", "texts": ["now there is room"]}).status_code == 200


def test_sigterm_answers_the_requests_in_flight(server_factory, ce):
    server = server_factory(GOLDENS / "tiny-l1")
    bodies = [rerank_body(seed) for seed in range(3)]
    held = [PartialRequest(server.port, "/rerank", body) for body in bodies]
    server.wait_for(lambda: server.metric("minibert_queue_depth") == 3, "three requests in flight")
    server.process.send_signal(signal.SIGTERM)
    server.wait_for(lambda: "SIGTERM: answering 3 requests in flight, then stopping" in server.log(), "SIGTERM")
    time.sleep(0.3)
    with pytest.raises(httpx.ConnectError):   # no new connections once stopping
        httpx.get(server.url + "/health")
    for request, body in zip(held, bodies):   # the requests in flight are read to the end and answered
        status, ranks = request.finish()
        assert status == 200
        check_rerank(ce, body, ranks)
    assert server.process.wait(timeout=30) == -signal.SIGTERM   # uvicorn ends by the signal, after the answers
    log = server.log()
    assert len(re.findall(r"POST /rerank 200 20 pairs", log)) == 3
    assert log.rstrip().endswith("stopped"), log


def test_a_client_that_disconnects_while_uploading(reranker):
    server = reranker
    request = PartialRequest(server.port, "/rerank", rerank_body(0))
    server.wait_for(lambda: server.metric("minibert_queue_depth") == 1, "the request in flight")
    request.sock.close()
    server.wait_for(lambda: "POST /rerank 499 -" in server.log(), "the 499 log line")
    assert server.metric("minibert_queue_depth") == 0
    assert server.post("/rerank", {"query": "q", "texts": ["still serving"]}).status_code == 200


def test_a_client_that_disconnects_while_its_pairs_wait(ce):
    from minibert.serve import create_app

    app = create_app(CrossEncoder(GOLDENS / "tiny-l1"))
    service = app.state.service
    passes, entered, release = [], threading.Event(), threading.Event()
    run = service.batcher.run

    def gated(inputs):   # the model holds its first pass until the test lets it go
        passes.append(list(inputs))
        entered.set()
        assert release.wait(30)
        return run(inputs)
    service.batcher.run = gated
    a, b = rerank_body(1), rerank_body(2)
    with ThreadServer(app) as server, httpx.Client(base_url=server.url, timeout=60) as client, \
            ThreadPoolExecutor(1) as pool:
        first = pool.submit(client.post, "/rerank", json=a)
        assert entered.wait(30)
        gone = PartialRequest(server.port, "/rerank", b)
        gone.sock.sendall(gone.rest)   # b is complete: it waits in the queue behind a's pass
        wait_for(lambda: service.batcher.queued == 1, "b in the queue")
        gone.sock.close()
        # The event loop is free while the model works: /metrics answers, and counts b's 499.
        wait_for(lambda: 'route="/rerank",status="499"} 1.0' in client.get("/metrics").text, "b's 499")
        assert service.batcher.queued == 0   # b's pairs left the queue unscored
        release.set()
        assert first.result().status_code == 200
        check_rerank(ce, a, first.result().json())
        after = client.post("/rerank", json={"query": "q", "texts": ["still serving"]})
        assert after.status_code == 200
    assert passes == [[(a["query"], t) for t in a["texts"]], [("q", "still serving")]]


# ---------------------------------------------------------------------------------------------
# The batching queue on its own: which inputs share a pass


def test_batcher_shares_passes_within_the_token_budget():
    calls = []

    def run(inputs):
        calls.append(list(inputs))
        if "bad" in inputs:
            raise ValueError("a bad input")
        return np.array([[float(x)] for x in inputs])

    async def main():
        batcher = Batcher(run, max_batch_tokens=10)
        a = batcher.submit(["1", "2", "3"], [3, 3, 3])      # 9 tokens
        b = batcher.submit(["4", "5"], [3, 3])              # 4 fits next to a's 9? no: 12 > 10
        c = batcher.submit(["6"], [20])                     # alone: longer than the budget, still scored
        d = batcher.submit(["7", "bad"], [1, 1])
        e = batcher.submit(["8"], [1])
        batcher.start()   # all five are queued before the worker looks
        try:
            out = await asyncio.gather(a.future, b.future, c.future, d.future, e.future, return_exceptions=True)
        finally:
            await asyncio.to_thread(batcher.stop)
        return out

    a, b, c, d, e = asyncio.run(main())
    assert [list(x[:, 0]) for x in (a, b, c, e)] == [[1, 2, 3], [4, 5], [6], [8]]
    assert isinstance(d, ValueError)
    # passes: a + b's first input would be 12 tokens, so a alone; b; c alone; d + e fail together,
    # then each is scored alone so that only d fails.
    assert calls == [["1", "2", "3"], ["4", "5"], ["6"], ["7", "bad", "8"], ["7", "bad"], ["8"]]


def test_batcher_caps_the_inputs_of_a_pass():
    calls = []

    def run(inputs):
        calls.append(list(inputs))
        return np.array([[float(x)] for x in inputs])

    async def main():
        batcher = Batcher(run, max_batch_tokens=100, max_batch_requests=3)
        jobs = [batcher.submit(["1", "2"], [1, 1]), batcher.submit(["3", "4", "5", "6"], [1, 1, 1, 1])]
        batcher.start()
        try:
            return await asyncio.gather(*(job.future for job in jobs))
        finally:
            await asyncio.to_thread(batcher.stop)

    first, second = asyncio.run(main())
    assert [list(first[:, 0]), list(second[:, 0])] == [[1, 2], [3, 4, 5, 6]]
    assert calls == [["1", "2", "3"], ["4", "5", "6"]]   # the second request spans two passes


def test_import_minibert_does_not_import_the_server_stack():
    code = ("import sys, minibert, minibert.cli; "
            "print(sorted(m for m in ('starlette', 'uvicorn', 'prometheus_client', 'minibert.serve') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_port_in_use_is_one_error_line_and_exit_1():
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "minibert", "serve", "--model", str(GOLDENS / "tiny-l1"),
                              "--port", str(port)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert out.stderr.splitlines()[-1].startswith(f"minibert: error: cannot listen on 127.0.0.1:{port}: ")
