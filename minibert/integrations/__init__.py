"""minibert inside the RAG frameworks: thin adapters over the public CrossEncoder.

- `minibert.integrations.langchain.MinibertCrossEncoder`: the model of LangChain's CrossEncoderReranker
  (langchain-classic), so a ContextualCompressionRetriever reranks with minibert.
- `minibert.integrations.llama_index.MinibertRerank`: a LlamaIndex node postprocessor (llama-index-core).
- `minibert.integrations.haystack.MinibertRanker`: a Haystack ranker component (haystack-ai).

Each module imports its framework when it is imported itself; `import minibert` (and this package)
imports none of them. Each writes the score its framework's own sentence-transformers reranker writes:
the model's stored activation, a sigmoid for a one-logit cross-encoder (see each module).
"""

from minibert.errors import ConfigError
from minibert.runtime.cross_encoder import CrossEncoder


def load_reranker(model, options: dict) -> CrossEncoder:
    """model as a CrossEncoder (a loaded one, or a directory / Hub id loaded with CrossEncoder's options);
    a model of several labels is refused: a reranker gives one relevance score per document."""
    if isinstance(model, CrossEncoder):
        if options:
            raise ConfigError(f"CrossEncoder options ({', '.join(sorted(options))}) are for a model loaded here; "
                              "this one is already loaded")
        ce = model
    else:
        ce = CrossEncoder(model, **options)
    if ce.num_labels != 1:
        raise ConfigError(f"{ce.path}: a reranker needs a single-logit relevance model; this one has "
                          f"num_labels={ce.num_labels} ({', '.join(ce.id2label.values())})")
    return ce
