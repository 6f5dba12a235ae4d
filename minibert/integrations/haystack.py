"""Haystack: minibert as a ranker component.

    from haystack import Document, Pipeline
    from minibert.integrations.haystack import MinibertRanker

    ranker = MinibertRanker(model="weights/ms-marco-MiniLM-L-6-v2", top_k=3)
    ranker.warm_up()
    ranker.run(query="what is a generator", documents=[Document(content="..."), ...])["documents"]

Needs haystack-ai (pip install 'minibert-ce[haystack]'). It follows Haystack's own
SentenceTransformersSimilarityRanker: the same options (top_k, query_prefix, document_prefix,
meta_fields_to_embed, embedding_separator, scale_score, score_threshold, batch_size), copies of the
documents (dataclasses.replace) come back best first with `score` set (the sigmoid of the logit with
scale_score=True, the default, as there; the raw logit with scale_score=False), and it serializes
with to_dict / from_dict. Haystack 3 loads a serialized pipeline's components only from trusted
modules: `Pipeline.loads(text, allowed_modules=["minibert.integrations.haystack"])`.
The model is loaded by warm_up() (a Pipeline calls it; run() calls it too if nobody did).
"""

from dataclasses import replace
from pathlib import Path
from typing import Any

try:
    from haystack import Document, component, default_from_dict, default_to_dict
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(f"minibert.integrations.haystack needs haystack-ai "
                      f"(pip install 'minibert-ce[haystack]'): {exc}") from exc

from minibert.errors import ConfigError
from minibert.integrations import load_reranker

__all__ = ["MinibertRanker"]


@component
class MinibertRanker:
    """Ranks documents by a minibert cross-encoder's score for (query, document).

    model: a model directory or Hub id. max_length, threads: CrossEncoder's.
    """

    def __init__(self, model: str | Path, *, top_k: int = 10, query_prefix: str = "", document_prefix: str = "",
                 meta_fields_to_embed: list[str] | None = None, embedding_separator: str = "\n",
                 scale_score: bool = True, score_threshold: float | None = None, batch_size: int = 32,
                 max_length: int | None = None, threads: int | None = None):
        _check_top_k(top_k)
        self.model = str(model)
        self.top_k, self.query_prefix, self.document_prefix = top_k, query_prefix, document_prefix
        self.meta_fields_to_embed = list(meta_fields_to_embed or [])
        self.embedding_separator, self.scale_score, self.score_threshold = embedding_separator, scale_score, score_threshold
        self.batch_size, self.max_length, self.threads = batch_size, max_length, threads
        self._cross_encoder = None

    def warm_up(self) -> None:
        """Load the model (once)."""
        if self._cross_encoder is None:
            self._cross_encoder = load_reranker(self.model, {"max_length": self.max_length, "threads": self.threads})

    def to_dict(self) -> dict[str, Any]:
        return default_to_dict(self, model=self.model, top_k=self.top_k, query_prefix=self.query_prefix,
                               document_prefix=self.document_prefix, meta_fields_to_embed=self.meta_fields_to_embed,
                               embedding_separator=self.embedding_separator, scale_score=self.scale_score,
                               score_threshold=self.score_threshold, batch_size=self.batch_size,
                               max_length=self.max_length, threads=self.threads)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MinibertRanker":
        return default_from_dict(cls, data)

    @component.output_types(documents=list[Document])
    def run(self, query: str, documents: list[Document], top_k: int | None = None, scale_score: bool | None = None,
            score_threshold: float | None = None) -> dict[str, list[Document]]:
        """The documents best first (copies, with `score` set), at most top_k, those below score_threshold
        left out; top_k, scale_score and score_threshold default to the component's."""
        top_k = self.top_k if top_k is None else top_k
        _check_top_k(top_k)
        scale_score = self.scale_score if scale_score is None else scale_score
        score_threshold = self.score_threshold if score_threshold is None else score_threshold
        if not documents:
            return {"documents": []}
        self.warm_up()
        passages = [self.document_prefix + self.embedding_separator.join(
            [str(doc.meta[key]) for key in self.meta_fields_to_embed if doc.meta.get(key)] + [doc.content or ""])
            for doc in documents]
        hits = self._cross_encoder.rank(self.query_prefix + query, passages, batch_size=self.batch_size,
                                        activation="sigmoid" if scale_score else None)
        ranked = [replace(documents[hit["corpus_id"]], score=float(hit["score"])) for hit in hits]
        if score_threshold is not None:
            ranked = [doc for doc in ranked if doc.score >= score_threshold]
        return {"documents": ranked[:top_k]}


def _check_top_k(top_k) -> None:
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ConfigError(f"top_k must be a positive integer, found {top_k!r}")
