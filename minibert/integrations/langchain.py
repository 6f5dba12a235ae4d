"""LangChain: minibert as the cross-encoder of LangChain's CrossEncoderReranker.

    from langchain_classic.retrievers import ContextualCompressionRetriever
    from langchain_classic.retrievers.document_compressors import CrossEncoderReranker
    from minibert.integrations.langchain import MinibertCrossEncoder

    reranker = CrossEncoderReranker(model=MinibertCrossEncoder("weights/ms-marco-MiniLM-L-6-v2"), top_n=3)
    retriever = ContextualCompressionRetriever(base_compressor=reranker, base_retriever=retriever)

CrossEncoderReranker (a document compressor) lives in langchain-classic and accepts any subclass of
the BaseCrossEncoder defined there (langchain-community's `cross_encoders.BaseCrossEncoder` is the
same class), so this module needs langchain-classic only (pip install 'minibert-ce[langchain]').
Scores: `score` gives what langchain-community's HuggingFaceCrossEncoder gives, sentence-transformers'
predict with its default activation: the sigmoid of the logit for a one-logit model (the model's
stored activation, `activation="stored"`). CrossEncoderReranker only sorts by them.
"""

try:
    from langchain_classic.retrievers.document_compressors.cross_encoder import (
        BaseCrossEncoder,
    )
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(f"minibert.integrations.langchain needs langchain-classic "
                      f"(pip install 'minibert-ce[langchain]'): {exc}") from exc

from minibert.integrations import load_reranker

__all__ = ["MinibertCrossEncoder"]


class MinibertCrossEncoder(BaseCrossEncoder):
    """LangChain's BaseCrossEncoder over minibert's CrossEncoder.

    model: a model directory or Hub id (loaded with **options: CrossEncoder's max_length, threads,
    revision, ...), or a loaded minibert CrossEncoder. activation: "stored" (default: sigmoid for a
    one-logit model, as sentence-transformers), "sigmoid", or None for the raw logits.
    """

    def __init__(self, model, *, activation="stored", batch_size: int = 32, **options):
        self.model = load_reranker(model, options)
        self.activation, self.batch_size = activation, batch_size

    def score(self, text_pairs) -> list[float]:
        """One float per (query, passage) pair, in order."""
        pairs = [tuple(pair) for pair in text_pairs]
        if not pairs:
            return []
        return self.model.predict(pairs, batch_size=self.batch_size, activation=self.activation).tolist()
