"""minibert inside LangChain, LlamaIndex and Haystack, each the real package from PyPI (the
integrations-test extra), on the tiny-l1 golden cross-encoder; and Haystack's own
HuggingFaceTEIRanker (huggingface-api-haystack: Haystack 3 moved it out of haystack-ai) against
`minibert serve` (create_app in a thread of the test, with an API key).

The scores each adapter writes are checked against CrossEncoder.predict on the same pairs, and the
order against them, so a wrong activation, a lost or shuffled document, or a wrong top-n fails.
"""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
from test_serve import GOLDENS, ROOT, ThreadServer

from minibert import CrossEncoder
from minibert.errors import ConfigError

QUERY = "what is the capital of france"
TEXTS = ["paris is the capital of france", "the cat sat on the mat", "berlin is in germany",
         "the capital city of france is paris", "fish in the river", "rome is the capital of italy"]
pytestmark = pytest.mark.filterwarnings("ignore::minibert.errors.TruncationWarning")   # the long text, on purpose
os.environ["HAYSTACK_TELEMETRY_ENABLED"] = "False"   # Haystack would post usage data to its server
FRAMEWORKS = ("langchain_classic", "langchain_core", "langchain_community", "llama_index", "haystack",
              "haystack_integrations")


def sigmoid(x):
    return 1 / (1 + np.exp(-np.asarray(x, dtype=np.float64)))


def best_first(scores) -> list[int]:
    """Indices by score, best first, ties by index."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))


@pytest.fixture(scope="module")
def expected(ce):
    """predict's sigmoid scores of (QUERY, text) for each text."""
    return sigmoid(ce.predict([(QUERY, t) for t in TEXTS]))


def test_importing_minibert_or_the_package_imports_no_framework():
    code = ("import sys, minibert, minibert.cli, minibert.integrations; "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {FRAMEWORKS!r}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_multi_label_model_is_refused(ce3):
    from minibert.integrations.langchain import MinibertCrossEncoder

    with pytest.raises(ConfigError, match="single-logit relevance model; this one has num_labels=3"):
        MinibertCrossEncoder(ce3)
    with pytest.raises(ConfigError, match=r"options \(max_length\) are for a model loaded here"):
        MinibertCrossEncoder(CrossEncoder(GOLDENS / "tiny-l1"), max_length=16)


# ---------------------------------------------------------------------------------------------
# LangChain


def test_langchain_contextual_compression_reranks_with_minibert(expected):
    from langchain_classic.retrievers import ContextualCompressionRetriever
    from langchain_classic.retrievers.document_compressors import CrossEncoderReranker
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever

    from minibert.integrations.langchain import MinibertCrossEncoder

    class ListRetriever(BaseRetriever):
        """A tiny in-memory retriever: every document, in the order given."""
        documents: list[Document]

        def _get_relevant_documents(self, query, *, run_manager):
            return self.documents

    model = MinibertCrossEncoder(GOLDENS / "tiny-l1", max_length=48)
    assert np.abs(np.array(model.score([(QUERY, t) for t in TEXTS])) - expected).max() <= 1e-6
    assert model.score([]) == []
    docs = [Document(page_content=t, metadata={"i": i}) for i, t in enumerate(TEXTS)]
    retriever = ContextualCompressionRetriever(base_compressor=CrossEncoderReranker(model=model, top_n=3),
                                               base_retriever=ListRetriever(documents=docs))
    found = retriever.invoke(QUERY)
    assert [d.metadata["i"] for d in found] == best_first(expected)[:3]
    raw = MinibertCrossEncoder(GOLDENS / "tiny-l1", activation=None)
    assert np.abs(sigmoid(raw.score([(QUERY, TEXTS[0])])) - expected[0]).max() <= 1e-6


def test_langchain_communitys_base_cross_encoder_is_the_one_the_reranker_takes():
    import langchain_classic.retrievers.document_compressors.cross_encoder as classic

    try:
        from langchain_community.cross_encoders import BaseCrossEncoder
    except ImportError:   # langchain-community is not in the extra; when installed, it must be the same class
        return
    assert BaseCrossEncoder is classic.BaseCrossEncoder


# ---------------------------------------------------------------------------------------------
# LlamaIndex


def test_llama_index_postprocessor_writes_the_scores_on_the_nodes(expected):
    from llama_index.core.schema import NodeWithScore, TextNode

    from minibert.integrations.llama_index import MinibertRerank

    nodes = [NodeWithScore(node=TextNode(text=t, id_=str(i)), score=0.5 + i) for i, t in enumerate(TEXTS)]
    rerank = MinibertRerank(model=GOLDENS / "tiny-l1", top_n=4, keep_retrieval_score=True)
    out = rerank.postprocess_nodes(nodes, query_str=QUERY)
    assert [int(n.node.id_) for n in out] == best_first(expected)[:4]
    for n in out:
        i = int(n.node.id_)
        assert abs(n.score - expected[i]) <= 1e-6
        assert n.node.metadata["retrieval_score"] == 0.5 + i
    assert rerank.postprocess_nodes([], query_str=QUERY) == []
    assert MinibertRerank(model=GOLDENS / "tiny-l1").top_n == 2
    with pytest.raises(ValueError, match="needs the query"):
        rerank.postprocess_nodes(nodes)


# ---------------------------------------------------------------------------------------------
# Haystack


def test_haystack_ranker_in_a_pipeline_and_serialized(expected):
    from haystack import Document, Pipeline

    from minibert.integrations.haystack import MinibertRanker

    docs = [Document(content=t, meta={"i": i}) for i, t in enumerate(TEXTS)]
    ranker = MinibertRanker(model=GOLDENS / "tiny-l1", top_k=3)
    ranker.warm_up()
    out = ranker.run(query=QUERY, documents=docs)["documents"]
    assert [d.meta["i"] for d in out] == best_first(expected)[:3]
    assert all(abs(d.score - expected[d.meta["i"]]) <= 1e-6 for d in out)
    assert all(d.score is None for d in docs)   # the input documents are left as they were
    raw = ranker.run(query=QUERY, documents=docs, top_k=6, scale_score=False)["documents"]
    assert all(abs(sigmoid(d.score) - expected[d.meta["i"]]) <= 1e-6 for d in raw) and len(raw) == 6
    threshold = float(np.sort(expected)[-3:-1].mean())   # between the second and the third score
    above = ranker.run(query=QUERY, documents=docs, score_threshold=threshold)["documents"]
    assert [d.meta["i"] for d in above] == best_first(expected)[:2]

    data = ranker.to_dict()
    assert data["init_parameters"]["model"] == str(GOLDENS / "tiny-l1") and data["init_parameters"]["top_k"] == 3
    pipeline = Pipeline()
    pipeline.add_component("ranker", MinibertRanker.from_dict(data))
    loaded = Pipeline.loads(pipeline.dumps(), allowed_modules=["minibert.integrations.haystack"])
    result = loaded.run({"ranker": {"query": QUERY, "documents": docs}})
    assert [d.meta["i"] for d in result["ranker"]["documents"]] == best_first(expected)[:3]
    with pytest.raises(ConfigError, match="top_k must be a positive integer"):
        MinibertRanker(model=GOLDENS / "tiny-l1", top_k=0)


def test_haystacks_tei_ranker_against_minibert_serve(ce):
    from haystack import Document
    from haystack.utils import Secret
    from haystack_integrations.components.rankers.huggingface_api import (
        HuggingFaceTEIRanker,
        TruncationDirection,
    )

    from minibert.serve import create_app

    key = "haystack-test-key-0123456789"
    long = " ".join(["paris is a big city in france"] * 12) + " the end"
    texts = [*TEXTS, long]
    docs = [Document(content=t, meta={"i": i}) for i, t in enumerate(texts)]
    app = create_app(ce, api_key=key)
    with ThreadServer(app) as server:
        ranker = HuggingFaceTEIRanker(url=server.url, top_k=4, token=Secret.from_token(key))
        right = sigmoid(ce.predict([(QUERY, t) for t in texts]))
        left_ce = app.state.service.backend.left_model   # its tokenizer: tests/test_serve_auth.py
        left = sigmoid(left_ce.predict([(QUERY, t) for t in texts]))
        assert abs(left[-1] - right[-1]) > 1e-4   # the long text is cut differently
        for direction, want in ((None, right), (TruncationDirection.RIGHT, right), (TruncationDirection.LEFT, left)):
            out = ranker.run(query=QUERY, documents=docs, truncation_direction=direction)["documents"]
            assert [d.meta["i"] for d in out] == best_first(want)[:4], direction
            assert all(abs(d.score - want[d.meta["i"]]) <= 1e-5 for d in out), direction
        unauthorized = HuggingFaceTEIRanker(url=server.url, max_retries=1, token=None)
        with pytest.raises(Exception, match="401"):
            unauthorized.run(query=QUERY, documents=docs)


# ---------------------------------------------------------------------------------------------
# The README's examples


def test_the_readmes_examples_run():
    """Each python block of the README's framework section, on tiny-l1, with the retriever, nodes and
    documents it takes from the reader's code."""
    from haystack import Document as HaystackDocument
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever
    from llama_index.core.schema import NodeWithScore, TextNode

    class ListRetriever(BaseRetriever):
        documents: list[Document]

        def _get_relevant_documents(self, query, *, run_manager):
            return self.documents

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("\n### In LangChain, LlamaIndex and Haystack")
    section = readme[start:readme.index("\n## ", start)]
    blocks = re.findall(r"^```python\n(.*?)^```", section, re.DOTALL | re.MULTILINE)
    assert len(blocks) == 3
    given = {"base_retriever": ListRetriever(documents=[Document(page_content=t, metadata={"i": i})
                                                        for i, t in enumerate(TEXTS)]),
             "nodes": [NodeWithScore(node=TextNode(text=t, id_=str(i))) for i, t in enumerate(TEXTS)],
             "documents": [HaystackDocument(content=t, meta={"i": i}) for i, t in enumerate(TEXTS)]}
    top = best_first(sigmoid(CrossEncoder(GOLDENS / "tiny-l1").predict(
        [("what is a generator", t) for t in TEXTS])))[:3]
    for block, index in zip(blocks, (lambda d: d.metadata["i"], lambda n: int(n.node.id_), lambda d: d.meta["i"])):
        namespace = dict(given)
        exec(block.replace("weights/ms-marco-MiniLM-L-6-v2", str(GOLDENS / "tiny-l1")), namespace)  # noqa: S102
        assert [index(x) for x in namespace["best"]] == top
