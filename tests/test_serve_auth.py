"""`minibert serve` exposed: the API key, CORS, TEI's left truncation, /tokenize and /decode.

The key tests run a real `minibert serve --api-key-file` process (its log is the one checked for the
key); the others serve the tiny-l1 golden cross-encoder from create_app in a thread of the test.
Token ids are checked against the tokenizers library's own encoding of the same tokenizer.json.
"""

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from test_serve import GOLDENS, MINILM, Server, ThreadServer, sentence
from tokenizers import Tokenizer

from minibert import SentenceEncoder
from minibert.cli import main
from minibert.models import Batch, forward
from minibert.serve import create_app
from minibert.serve.auth import resolve_api_key
from minibert.serve.backend import Backend, Left

pytestmark = pytest.mark.filterwarnings("ignore::minibert.errors.TruncationWarning")   # the long pairs, on purpose

KEY = "mb-9f8e7d6c5b4a39281706f5e4d3c2b1a0"
ORIGIN = "https://app.example.com"
TINY = GOLDENS / "tiny-l1"
PAIR = {"query": "what is the capital of france", "texts": ["paris is the capital of france"]}
# Every route but /health, with a body it accepts (on a reranker; /embed answers 424 there).
ROUTES = [("POST", "/rerank", PAIR), ("POST", "/predict", {"inputs": ["a question", "a passage"]}),
          ("POST", "/embed", {"inputs": "a text"}), ("POST", "/tokenize", {"inputs": "a text"}),
          ("POST", "/decode", {"ids": [5, 6]}), ("GET", "/info", None), ("GET", "/metrics", None),
          ("POST", "/v1/rerank", {"query": "q", "documents": ["d"]}),
          ("POST", "/v2/rerank", {"model": "m", "query": "q", "documents": ["d"]}),
          ("GET", "/no-such-route", None)]


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    """A `minibert serve --api-key-file` process that allows ORIGIN."""
    tmp = tmp_path_factory.mktemp("keyed")
    (tmp / "key").write_text(f"  {KEY}\n")
    server = Server(TINY, "--api-key-file", str(tmp / "key"), "--cors-allow-origin", ORIGIN,
                    "--cors-allow-origin", "http://localhost:3000", tmp_path=tmp)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def open_server(ce):
    """create_app(ce) without a key or CORS, served in a thread."""
    with ThreadServer(create_app(ce, max_client_batch_size=40)) as server:
        server.client = httpx.Client(base_url=server.url, timeout=60)
        yield server


def send(client, method, path, body, key=None, scheme="Bearer", **headers):
    if key is not None:
        headers["Authorization"] = f"{scheme} {key}"
    return client.request(method, path, json=body, headers=headers)


# ---------------------------------------------------------------------------------------------
# The API key


def test_every_route_but_health_needs_the_key(keyed):
    client = keyed.client
    assert client.get("/health").status_code == 200
    for method, path, body in ROUTES:
        cohere = path.startswith(("/v1/", "/v2/"))
        for key, scheme, message in ((None, None, "no api key supplied"), ("wrong", "Bearer", "invalid api token"),
                                     (KEY[:-1], "Bearer", "invalid api token"), (KEY, "Basic", "invalid api token"),
                                     (KEY + "x", "Bearer", "invalid api token")):
            r = send(client, method, path, body, key, scheme)
            assert r.status_code == 401, (path, key, scheme)
            assert r.headers["www-authenticate"].startswith("Bearer")
            if cohere:   # Cohere's error shape
                assert r.json() == {"message": message}
            else:        # TEI's
                assert r.json()["error_type"] == "Unauthorized" and set(r.json()) == {"error", "error_type"}
            assert KEY not in r.text
        r = send(client, method, path, body, KEY)
        assert r.status_code == {"/embed": 424, "/no-such-route": 404}.get(path, 200), (path, r.text)
        assert send(client, method, path, body, KEY, "bearer").status_code == r.status_code   # the scheme in any case


def test_16_clients_with_the_key_get_their_scores_while_others_get_401(keyed, ce):
    rng = np.random.default_rng(3)
    bodies = [{"query": sentence(rng, 3), "texts": [sentence(rng, 10) for _ in range(12)], "raw_scores": True}
              for _ in range(16)]

    def client(i):
        body = bodies[i % 16]
        with httpx.Client(base_url=keyed.url, timeout=60) as c:
            return [send(c, "POST", "/rerank", body, KEY if i < 16 else (None, "bad", KEY[1:])[i % 3])
                    for _ in range(2)]

    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(client, range(32)))
    for i, responses in enumerate(answers):
        for r in responses:
            if i >= 16:
                assert r.status_code == 401, r.text
                continue
            assert r.status_code == 200, r.text
            expected = ce.predict([(bodies[i]["query"], t) for t in bodies[i]["texts"]])
            got = np.empty(len(expected))
            for rank in r.json():
                got[rank["index"]] = rank["score"]
            assert np.abs(got - expected).max() <= 1e-5


def test_the_key_is_in_no_log_line_and_no_error_body(keyed):
    for body in (b"{not json", b'{"query": 1, "texts": []}'):   # 422s, with the key
        r = keyed.client.post("/rerank", content=body, headers={"Authorization": f"Bearer {KEY}"})
        assert r.status_code == 422 and KEY not in r.text
    keyed.client.post("/rerank", json=PAIR, headers={"Authorization": f"Bearer {KEY}x"})
    keyed.client.get("/info")
    log = keyed.log()
    assert "an API key is required on every route but /health (from the key in --api-key-file" in log
    assert "POST /rerank 401" in log and "GET /info 401" in log
    assert KEY not in log and KEY[:12] not in log


def test_cors_preflight_is_answered_without_the_key_for_allowed_origins_only(keyed, open_server):
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}
    r = keyed.client.options("/rerank", headers={"Origin": ORIGIN, **preflight})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert "authorization" in r.headers["access-control-allow-headers"].lower()
    r = keyed.client.options("/rerank", headers={"Origin": "https://evil.example.com", **preflight})
    assert r.status_code == 400 and "access-control-allow-origin" not in r.headers
    # The answers themselves carry the header for an allowed origin, 401s included (so a page can read them).
    ok = send(keyed.client, "POST", "/rerank", PAIR, KEY, Origin=ORIGIN)
    refused = send(keyed.client, "POST", "/rerank", PAIR, None, Origin="http://localhost:3000")
    other = send(keyed.client, "POST", "/rerank", PAIR, KEY, Origin="https://evil.example.com")
    assert (ok.status_code, refused.status_code, other.status_code) == (200, 401, 200)
    assert ok.headers["access-control-allow-origin"] == ORIGIN
    assert refused.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert "access-control-allow-origin" not in other.headers
    # CORS is off by default: no preflight answer, no CORS header on any answer.
    r = open_server.client.options("/rerank", headers={"Origin": ORIGIN, **preflight})
    assert r.status_code == 405 and "access-control-allow-origin" not in r.headers
    r = open_server.client.post("/rerank", json=PAIR, headers={"Origin": ORIGIN})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_the_key_from_a_file_the_flag_or_the_environment():
    assert resolve_api_key(None, None, {}) == (None, "")
    assert resolve_api_key(None, None, {"MINIBERT_API_KEY": ""}) == (None, "")
    assert resolve_api_key(None, None, {"MINIBERT_API_KEY": KEY}) == (KEY, "MINIBERT_API_KEY")
    assert resolve_api_key(KEY, None, {"MINIBERT_API_KEY": "other"}) == (KEY, "--api-key")


@pytest.mark.parametrize("args", [
    ["--api-key", KEY, "--port", "notaport"],                  # another flag's error
    ["--api-key", KEY, "--bogus"],                             # unknown option
    ["--api-kye", KEY],                                        # a misspelt key option, echoed by argparse
    [f"--api={KEY}"],                                          # an ambiguous abbreviation with its value
    [f"--api-key={KEY}", "--api-key-file", "k.txt"],           # both ways at once
    ["--api-key", KEY, "extra"],                               # a stray argument
    ["--api-key", KEY + " with a space"],                      # a key no header can carry (a config error)
    ["--api-key", KEY, "--cors-allow-origin", "app.example.com"],   # a bad origin
    ["--api-key", KEY, "--max-batch-tokens", "0"],
])
def test_usage_and_config_errors_never_print_the_key(args, capsys, monkeypatch):
    monkeypatch.delenv("MINIBERT_API_KEY", raising=False)   # each case's own rule must hide the key
    status = main(["serve", "--model", str(TINY), *args])
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.startswith("minibert: error: ") and len(err.splitlines()) == 1, err
    assert KEY not in err and KEY[:12] not in err, err


def test_key_file_errors_name_the_file(tmp_path, capsys):
    missing = tmp_path / "missing.key"
    assert main(["serve", "--model", str(TINY), "--api-key-file", str(missing)]) == 2
    assert f"--api-key-file {missing}: cannot read it" in capsys.readouterr().err
    (tmp_path / "empty.key").write_text("\n")
    assert main(["serve", "--model", str(TINY), "--api-key-file", str(tmp_path / "empty.key")]) == 2
    assert "is empty" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# TEI's truncation_direction "left"


def library_tokenizer(max_length=None, direction="right", model=TINY) -> Tokenizer:
    """The tokenizers library's own tokenizer for the model's tokenizer.json (its baked-in padding off)."""
    tokenizer = Tokenizer.from_file(str(model / "tokenizer.json"))
    tokenizer.no_padding()
    if max_length is None:
        tokenizer.no_truncation()
    else:
        tokenizer.enable_truncation(max_length, strategy="longest_first", direction=direction)
    return tokenizer


LONG_PAIRS = [("what is the capital of france", " ".join(["paris is a big city in france"] * 12) + " the end"),
              (" ".join(["which river runs through the city of paris"] * 8) + " today", "the seine"),
              ("the moon " * 30 + "sun", "green tree " * 40 + "fish"),
              ("short", "short passage")]


def test_left_truncation_cuts_each_side_as_the_tokenizers_library_does(ce):
    left = library_tokenizer(ce.max_length, "left")
    right = library_tokenizer(ce.max_length, "right")
    encoded = Backend(ce).left_model.tokenizer.encode_pairs(LONG_PAIRS)
    for (query, passage), (ids, type_ids) in zip(LONG_PAIRS, encoded):
        expected = left.encode(query, passage)
        assert ids.tolist() == expected.ids and type_ids.tolist() == expected.type_ids
    # The pairs that are cut lose their first tokens: not what right truncation keeps, same length.
    for (query, passage), (ids, _) in zip(LONG_PAIRS[:3], encoded):
        assert len(ids) == ce.max_length and ids.tolist() != right.encode(query, passage).ids
    assert ce.tokenizer.encode_pairs(LONG_PAIRS[:1])[0][0].tolist() == right.encode(*LONG_PAIRS[0]).ids


def test_left_truncated_requests_score_the_left_truncated_ids(open_server, ce):
    left = library_tokenizer(ce.max_length, "left")
    encodings = [left.encode(q, p) for q, p in LONG_PAIRS]
    batch = Batch.pack([(np.array(e.ids), np.array(e.type_ids)) for e in encodings])
    expected = forward(ce.params, ce.config, batch, ce.ops)[:, 0]     # the model on exactly those ids
    right = ce.predict(LONG_PAIRS)
    assert np.abs(expected[:3] - right[:3]).min() > 1e-3              # the direction changes the score
    query, texts = LONG_PAIRS[0][0], [p for _, p in LONG_PAIRS[:1]]

    def rerank(direction):
        return open_server.client.post("/rerank", json={"query": query, "texts": texts, "raw_scores": True,
                                                         "truncation_direction": direction})

    with ThreadPoolExecutor(4) as pool:   # left and right requests in flight together share passes
        answers = list(pool.map(rerank, ["left", "Right", "Left", "right"]))
    for r, want in zip(answers, [expected[0], right[0], expected[0], right[0]]):
        assert r.status_code == 200, r.text
        assert abs(r.json()[0]["score"] - want) <= 1e-5
    r = open_server.client.post("/predict", json={"inputs": [list(pair) for pair in LONG_PAIRS], "raw_scores": True,
                                                  "truncation_direction": "left"})
    assert r.status_code == 200, r.text
    assert np.abs(np.array([scores[0]["score"] for scores in r.json()]) - expected).max() <= 1e-5
    r = open_server.client.post("/rerank", json={"query": query, "texts": texts, "truncate": False,
                                                 "truncation_direction": "left"})
    assert r.status_code == 413   # truncate false still refuses an over-long input, whichever direction


def test_a_pass_mixing_directions_gives_each_input_its_own_scores(ce):
    backend = Backend(ce)
    mixed = [Left(LONG_PAIRS[0]), LONG_PAIRS[0], LONG_PAIRS[1], Left(LONG_PAIRS[2])]
    got = backend.run(mixed)[:, 0]
    alone = [backend.run([x])[0, 0] for x in mixed]
    assert np.abs(got - alone).max() <= 1e-5
    assert abs(got[0] - got[1]) > 1e-3


def test_left_truncation_of_a_text_to_embed():
    encoder = SentenceEncoder(MINILM, max_length=16)
    backend = Backend(encoder)
    text = "it starts here " + "filler words " * 10 + "and it ends there"
    ids = backend.left_model.tokenizer.encode_texts([text])[0][0]
    assert ids.tolist() == library_tokenizer(encoder.max_seq_length, "left", MINILM).encode(text).ids
    left, right = backend.run([Left(text), text])
    assert np.abs(right - encoder.encode([text], normalize=False)[0]).max() <= 1e-5
    assert np.abs(left - right).max() > 1e-3


# ---------------------------------------------------------------------------------------------
# TEI's /tokenize and /decode


TEXTS = ["What is the capital of France?", "héllo wörld — ünïcode 東京 ok", "   spaced   out  "]


def test_tokenize_gives_the_tokenizers_librarys_tokens_with_byte_offsets(open_server):
    library = library_tokenizer()
    for special in (True, False):
        r = open_server.client.post("/tokenize", json={"inputs": TEXTS, "add_special_tokens": special})
        assert r.status_code == 200, r.text
        for text, tokens in zip(TEXTS, r.json()):
            expected = library.encode(text, add_special_tokens=special)
            assert [t["id"] for t in tokens] == expected.ids
            assert [t["special"] for t in tokens] == [bool(m) for m in expected.special_tokens_mask]
            data = text.encode()
            for t, token, (start, stop) in zip(tokens, expected.tokens, expected.offsets):
                if t["special"]:
                    assert (t["text"], t["start"], t["stop"]) == (token, None, None)
                else:   # TEI's offsets are UTF-8 byte offsets; the library's Python ones count characters
                    assert (t["start"], t["stop"]) == (len(text[:start].encode()), len(text[:stop].encode()))
                    assert t["text"] == data[t["start"]:t["stop"]].decode()
    one = open_server.client.post("/tokenize", json={"inputs": TEXTS[1]}).json()
    assert len(one) == 1 and [t["id"] for t in one[0]] == library.encode(TEXTS[1]).ids
    assert one[0][0]["special"] and not one[0][1]["special"] and one[0][2]["stop"] > one[0][2]["start"] + 1


def test_decode_gives_the_tokenizers_librarys_text(open_server):
    library = library_tokenizer()
    ids = [library.encode(text).ids for text in TEXTS]
    for skip in (True, False):
        r = open_server.client.post("/decode", json={"ids": ids, "skip_special_tokens": skip})
        assert r.status_code == 200, r.text
        assert r.json() == [library.decode(i, skip_special_tokens=skip) for i in ids]
    r = open_server.client.post("/decode", json={"ids": ids[0]})
    assert r.json() == [library.decode(ids[0])] and "[CLS]" not in r.json()[0]


@pytest.mark.parametrize("path, body, status, error_type", [
    ("/tokenize", {"inputs": []}, 422, "Empty"),
    ("/tokenize", {"inputs": [1]}, 422, "Validation"),
    ("/tokenize", {"inputs": ["a"] * 41}, 413, "Validation"),
    ("/tokenize", {"inputs": "a", "add_special_tokens": "yes"}, 422, "Validation"),
    ("/decode", {"ids": []}, 422, "Empty"),
    ("/decode", {"ids": [[1], []]}, 422, "Empty"),
    ("/decode", {"ids": [1, -2]}, 422, "Validation"),
    ("/decode", {"ids": [1, 2.5]}, 422, "Validation"),
    ("/decode", {"ids": "1 2"}, 422, "Validation"),
    ("/decode", {"ids": [[1]] * 41}, 413, "Validation"),
])
def test_bad_tokenize_and_decode_requests(open_server, path, body, status, error_type):
    r = open_server.client.post(path, json=body)
    assert (r.status_code, r.json()["error_type"]) == (status, error_type), r.text
    assert json.loads(r.text)["error"]
