"""LlamaIndex: minibert as a node postprocessor that reranks retrieved nodes.

    from minibert.integrations.llama_index import MinibertRerank

    rerank = MinibertRerank(model="weights/ms-marco-MiniLM-L-6-v2", top_n=3)
    nodes = rerank.postprocess_nodes(nodes, query_str="what is a generator")
    query_engine = index.as_query_engine(similarity_top_k=10, node_postprocessors=[rerank])

Needs llama-index-core (pip install 'minibert-ce[llama-index]'). Like LlamaIndex's own
SentenceTransformerRerank, it writes each node's new score on the node (NodeWithScore.score: the
sigmoid of the logit, the model's stored activation, which is what sentence-transformers' predict
gives there), keeps the retrieval score in the node's metadata with keep_retrieval_score=True, and
returns the top_n nodes best first (ties in input order).
"""

from typing import Any

try:
    from llama_index.core.bridge.pydantic import Field, PrivateAttr
    from llama_index.core.callbacks import CBEventType, EventPayload
    from llama_index.core.postprocessor.types import BaseNodePostprocessor
    from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(f"minibert.integrations.llama_index needs llama-index-core "
                      f"(pip install 'minibert-ce[llama-index]'): {exc}") from exc

from minibert.integrations import load_reranker

__all__ = ["MinibertRerank"]


class MinibertRerank(BaseNodePostprocessor):
    """Rerank nodes with a minibert cross-encoder; model: a directory or Hub id (loaded with **options:
    CrossEncoder's max_length, threads, revision, ...) or a loaded minibert CrossEncoder."""

    model: str = Field(description="The cross-encoder: a model directory or Hub id.")
    top_n: int = Field(default=2, description="Number of nodes to return, best first.")
    keep_retrieval_score: bool = Field(default=False, description="Keep the retrieval score in the node's "
                                                                  "metadata (retrieval_score).")
    batch_size: int = Field(default=32, description="Pairs per forward pass.")
    _model: Any = PrivateAttr()

    def __init__(self, model, top_n: int = 2, keep_retrieval_score: bool = False, batch_size: int = 32, **options):
        ce = load_reranker(model, options)
        super().__init__(model=str(ce.path), top_n=top_n, keep_retrieval_score=keep_retrieval_score,
                         batch_size=batch_size)
        self._model = ce

    @classmethod
    def class_name(cls) -> str:
        return "MinibertRerank"

    def _postprocess_nodes(self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
                           ) -> list[NodeWithScore]:
        if query_bundle is None:
            raise ValueError("MinibertRerank needs the query: postprocess_nodes(nodes, query_str=...)")
        if not nodes:
            return []
        pairs = [(query_bundle.query_str, n.node.get_content(metadata_mode=MetadataMode.EMBED)) for n in nodes]
        with self.callback_manager.event(
                CBEventType.RERANKING,
                payload={EventPayload.NODES: nodes, EventPayload.MODEL_NAME: self.model,
                         EventPayload.QUERY_STR: query_bundle.query_str, EventPayload.TOP_K: self.top_n}) as event:
            scores = self._model.predict(pairs, batch_size=self.batch_size, activation="stored")
            for node, score in zip(nodes, scores):
                if self.keep_retrieval_score:
                    node.node.metadata["retrieval_score"] = node.score
                node.score = float(score)
            best = sorted(nodes, key=lambda n: -n.score)[:self.top_n]   # stable: ties keep the input order
            event.on_end(payload={EventPayload.NODES: best})
        return best
