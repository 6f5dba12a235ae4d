"""minibert explain: the tokens, the stages, the first token's attention and the score of one pair.

The attention weights are checked against transformers' own (output_attentions, eager), the score
against predict; the HTML page is checked for its structure here, and rendered in a real headless
Chromium (tools/screenshot_explain.py) when chromium is installed (CI installs it, see .ci/run).
"""

import contextlib
import html
import importlib.util
import io
import json
import re
import warnings
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from minibert import CrossEncoder, TruncationWarning
from minibert.cli import main
from minibert.models import family_of
from minibert.oracle.explain import explain, format_html, format_text
from minibert.runtime.load import load_config

GOLDENS = Path(__file__).parent / "fixtures" / "goldens"
TOOLS = Path(__file__).parent.parent / "tools"
QUERY, PASSAGE = "how do I define a function?", "A function definition defines a user-defined function object."


def load_tool(name):
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


screenshot_tool = load_tool("screenshot_explain")


@pytest.fixture(scope="module", params=["tiny-l1", "tiny-l3"])
def model(request):
    return CrossEncoder(GOLDENS / request.param)


def test_tokens_and_score(model):
    e = explain(model, QUERY, PASSAGE)
    ids, types = model.tokenizer.encode_pairs([(QUERY, PASSAGE)])[0]
    assert e.input_ids.tolist() == ids.tolist() and e.type_ids.tolist() == types.tolist()
    assert e.tokens[0] == "[CLS]" and e.tokens.count("[SEP]") == 2
    assert e.sides[0] is None and set(e.sides[1:e.tokens.index("[SEP]")]) == {"query"}
    assert [t for t, s in zip(e.tokens, e.sides) if s == "passage"][:3] == (
        ["a", "function", "definition"] if model.path.name == "tiny-l1" else ["A", "function", "definition"])
    assert (e.type_ids[e.passage_tokens] == 1).all() and e.truncated == {}
    # explain runs the NumPy reference ops, predict the Numba kernels when installed: equal within 1e-6
    np.testing.assert_allclose(e.logits, np.atleast_1d(model.predict((QUERY, PASSAGE))), rtol=1e-6, atol=1e-6)
    layers = model.config.num_hidden_layers
    assert list(e.stages) == ["embeddings", *[f"layer_{i}" for i in range(layers)], "pooled", "logits"]
    assert e.stages["layer_0"].shape == (len(ids), model.config.hidden_size)
    assert e.stages["logits"].shape == (1, model.num_labels)


def test_attention_is_transformers_attention(model):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(model.path, attn_implementation="eager").eval()
    e = explain(model, QUERY, PASSAGE)
    with torch.no_grad():
        out = hf(input_ids=torch.from_numpy(e.input_ids[None]), token_type_ids=torch.from_numpy(e.type_ids[None]),
                 output_attentions=True)
    want = np.stack([a[0, :, 0, :].numpy() for a in out.attentions])    # [layers, NH, T]: the first query's row
    assert e.attention.shape == want.shape
    np.testing.assert_allclose(e.attention, want, atol=1e-6, rtol=1e-5)
    np.testing.assert_allclose(e.attention.sum(axis=-1), 1.0, atol=1e-6)


def test_truncation_is_shown(tmp_path):
    ce = CrossEncoder(GOLDENS / "tiny-l1", max_length=12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        e = explain(ce, QUERY, PASSAGE)
    assert len(e.tokens) == 12
    kept_q, total_q = e.truncated["query"]
    kept_p, total_p = e.truncated["passage"]
    assert kept_q + kept_p == 9 and total_q == 7 and total_p == 11 and kept_p < total_p
    last = [t for t, side in zip(e.tokens, e.sides) if side == "passage"][-1]
    assert f"the passage kept {kept_p} of its 11 tokens (up to {last!r})" in format_text(e)
    assert f"the passage kept {kept_p} of its 11 tokens (up to {html.escape(repr(last))})" in format_html(e)


def test_text_report(model):
    text = format_text(explain(model, QUERY, PASSAGE))
    for heading in ("1. tokens:", "2. stages", "3. how much the first token ([CLS]) attends", "4. score"):
        assert heading in text
    assert re.search(r"layer_0: 0\.\d{3} of its attention on the passage; most: \S+ 0\.\d{3}", text)
    assert "not truncated" in text and "sigmoid" in text
    assert ("softmax across labels" in text) == (model.num_labels > 1)


class PageParser(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.links, self.cells, self.ids, self.table = [], [], {}, set(), None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        self.links += [v for k, v in attrs.items() if k in ("src", "href")]
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "table":
            self.table = attrs.get("id")
        if tag == "td" and "title" in attrs and self.table:
            self.cells.setdefault(self.table, []).append(float(attrs["title"]))


def test_html_page_structure(model):
    e = explain(model, QUERY, PASSAGE)
    page = PageParser()
    page.feed(format_html(e))
    assert "script" not in page.tags and page.links == []            # self-contained: nothing to fetch or run
    assert {"tokens", "stages", "score"} <= page.ids
    layers, heads, T = e.attention.shape
    for layer in range(layers):
        cells = np.array(page.cells[f"attention-layer-{layer}"]).reshape(heads + 1, T)   # heads, then their mean
        np.testing.assert_allclose(cells[:heads], e.attention[layer], atol=5e-5)
        np.testing.assert_allclose(cells.sum(axis=1), 1.0, atol=T * 5e-5)


def test_html_escapes_text(tmp_path):
    ce = CrossEncoder(GOLDENS / "tiny-l1")
    page = format_html(explain(ce, "<b>bold</b> & co", PASSAGE))
    assert "<b>bold</b> &" not in page and "&lt;b&gt;bold&lt;/b&gt; &amp; co" in page


def run_cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in argv])
    return status, out.getvalue(), err.getvalue()


def test_cli(tmp_path):
    page = tmp_path / "report.html"
    status, out, err = run_cli("explain", "--model", GOLDENS / "tiny-l1", "--query", QUERY, "--passage", PASSAGE,
                               "--html", page)
    assert status == 0, err
    assert out == format_text(explain(CrossEncoder(GOLDENS / "tiny-l1"), QUERY, PASSAGE))
    assert page.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    status, _, err = run_cli("explain", "--model", GOLDENS / "tiny-l1", "--query", QUERY)
    assert status == 2 and "--passage" in err


@pytest.mark.skipif(screenshot_tool.find_chromium() is None,
                    reason="chromium is not installed (apt-get install chromium; CI installs it)")
def test_html_renders_in_chromium(tmp_path):
    """The page in a real browser: the right size, text on white, and each layer's darkest heat cell drawn."""
    status = screenshot_tool.main(["--model", str(GOLDENS / "tiny-l3"), "--out", str(tmp_path / "page.png")])
    assert status == 0
    found = screenshot_tool.measure(tmp_path / "page.png")
    assert screenshot_tool.check(found, layers=3) == []
    # the check can fail: a page without heat maps has no pixel of the heat colour
    (tmp_path / "plain.html").write_text("<!DOCTYPE html><html><body><h1>just text</h1>" + "<p>words</p>" * 50
                                         + "</body></html>", encoding="utf-8")
    screenshot_tool.screenshot(tmp_path / "plain.html", tmp_path / "plain.png")
    plain = screenshot_tool.measure(tmp_path / "plain.png")
    assert plain["heat_pixels"] == 0 and screenshot_tool.check(plain, layers=3) != []


# ----------------------------------------------------------------------------------------------
# every family: the text and the page, and the attention shown is the attention transformers computes


# Every golden model fixture: every family's model (tests/test_first_only.py checks that they cover them all); the
# decoder rerankers' are read at their last token, through a chat template (test_a_decoder_explains_its_last_token).
MODELS = sorted(p.parent.name for p in GOLDENS.glob("*/golden.npz"))
DECODERS = [name for name in MODELS if family_of(load_config(GOLDENS / name)).decoder]
FAMILY_MODELS = [name for name in MODELS if name not in DECODERS]


def custom_code(name) -> bool:
    """A model whose code is not in transformers (config.json's auto_map: GTE "new"): transformers cannot load it
    here. tests/test_gte.py checks explain's attention for it against transformers' native GTE instead."""
    return "auto_map" in json.loads((GOLDENS / name / "config.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", FAMILY_MODELS)
def test_every_family(tmp_path, name):
    """DeBERTa-v2 scores its own attention (c2c + c2p + p2c) and ModernBERT's is rotary with sliding windows:
    the first token's weights explain shows are transformers' output_attentions (eager) within 1e-5."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    ce = CrossEncoder(GOLDENS / name)
    e = explain(ce, QUERY, PASSAGE)
    layers, T = ce.config.num_hidden_layers, len(e.input_ids)
    assert e.attention is not None and e.attention.shape == (layers, ce.config.num_attention_heads, T)
    np.testing.assert_allclose(e.attention.sum(axis=-1), 1.0, atol=1e-6)   # over the pair's tokens
    assert (e.attention >= 0).all()
    if not custom_code(name):
        hf = transformers.AutoModelForSequenceClassification.from_pretrained(
            GOLDENS / name, attn_implementation="eager", dtype=torch.float32).eval()
        inputs = {"input_ids": torch.from_numpy(e.input_ids[None])}
        if ce.tokenizer.token_types:
            inputs["token_type_ids"] = torch.from_numpy(e.type_ids[None])
        with torch.no_grad():
            out = hf(**inputs, output_attentions=True)
        want = np.stack([a[0, :, 0, :].numpy() for a in out.attentions])    # [layers, NH, T]: the first query's row
        np.testing.assert_allclose(e.attention, want, atol=1e-5, rtol=0)
        np.testing.assert_allclose(e.logits, out.logits[0].numpy(), atol=1e-5, rtol=1e-5)

    page_file = tmp_path / "report.html"
    status, text, err = run_cli("explain", "--model", GOLDENS / name, "--query", QUERY, "--passage", PASSAGE,
                                "--html", page_file)
    assert status == 0, err
    assert text == format_text(e) and "not available" not in text
    assert len(re.findall(r"layer_\d+: 0\.\d{3} of its attention on the passage; most: \S+", text)) == layers
    page = PageParser()
    page.feed(page_file.read_text(encoding="utf-8"))
    assert "script" not in page.tags and page.links == []
    for layer in range(layers):
        cells = np.array(page.cells[f"attention-layer-{layer}"]).reshape(-1, T)   # heads, then their mean
        np.testing.assert_allclose(cells[:-1], e.attention[layer], atol=5e-5)


@pytest.mark.parametrize("name", DECODERS)
def test_a_decoder_explains_its_last_token(tmp_path, name):
    """A decoder reranker: the sides found in the rendered conversation are the query's and the passage's tokens, the
    attention shown is the last token's row of transformers' output_attentions (causal, grouped kv heads) within
    1e-5, the logit is predict's, and the text and the page say so."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    ce = CrossEncoder(GOLDENS / name, ops="numpy")
    e = explain(ce, QUERY, PASSAGE)
    assert e.reads == "last" and e.reader == len(e.tokens) - 1 and e.truncated == {}
    decode = ce.tokenizer.tokenizer.decode
    for side, text in (("query", QUERY), ("passage", PASSAGE)):
        assert decode([int(i) for i, s in zip(e.input_ids, e.sides) if s == side]).strip() == text, side
    hf = transformers.AutoModelForCausalLM.from_pretrained(GOLDENS / name, attn_implementation="eager",
                                                           dtype=torch.float32).eval()
    with torch.no_grad():
        out = hf(input_ids=torch.from_numpy(e.input_ids[None]), output_attentions=True)
    want = np.stack([a[0, :, -1, :].numpy() for a in out.attentions])   # [layers, NH, T]: the last query's row
    assert e.attention.shape == want.shape == (ce.config.num_hidden_layers, ce.config.num_attention_heads, len(e.tokens))
    np.testing.assert_allclose(e.attention, want, atol=1e-5, rtol=0)
    np.testing.assert_allclose(e.logits, np.atleast_1d(ce.predict((QUERY, PASSAGE))), atol=1e-6, rtol=1e-6)

    page_file = tmp_path / "report.html"
    status, text, err = run_cli("explain", "--model", GOLDENS / name, "--query", QUERY, "--passage", PASSAGE,
                                "--html", page_file)
    assert status == 0, err
    assert text == format_text(e) and f"3. how much the last token ({e.tokens[-1]}) attends" in text
    score = json.loads((GOLDENS / name / "1_LogitScore" / "config.json").read_text())
    token = ce.tokenizer.tokenizer.id_to_token
    said = f"logit({token(score['true_token_id'])!r})" + (f" - logit({token(score['false_token_id'])!r})"
                                                          if score["false_token_id"] is not None else "")
    assert f"the logit is {said} at the last token" in text
    page = PageParser()
    page.feed(page_file.read_text(encoding="utf-8"))
    for layer in range(len(e.attention)):
        cells = np.array(page.cells[f"attention-layer-{layer}"]).reshape(-1, len(e.tokens))   # heads, then the mean
        np.testing.assert_allclose(cells[:-1], e.attention[layer], atol=5e-5)


@pytest.mark.parametrize("name", DECODERS)
def test_a_decoders_cut_is_shown(name):
    """A conversation over max_length: its first tokens kept, the template's tail written back (the template's own),
    and what each side kept said."""
    # room for the conversation around an empty passage and 30 of the passage's tokens (mxbai's template writes
    # its instruction after the document: a long tail)
    (ids, _), = CrossEncoder(GOLDENS / name).tokenizer.encode_pairs([(QUERY, "")])
    ce = CrossEncoder(GOLDENS / name, max_length=len(ids) + 30)
    e = explain(ce, QUERY, PASSAGE * 10)
    tail = ce.tokenizer.suffix(ce.tokenizer.messages(QUERY, PASSAGE))
    assert len(e.tokens) == len(ids) + 30 and e.input_ids[-len(tail):].tolist() == tail
    assert set(e.sides[-len(tail):]) == {None} and e.sides[-len(tail) - 1] == "passage"
    kept, total = e.truncated["passage"]
    assert kept == e.sides.count("passage") < total and "query" not in e.truncated
    assert f"the passage kept {kept} of its {total} tokens" in format_text(e)
