"""The public API: a sentence encoder that embeds texts, as sentence-transformers' SentenceTransformer does.

A sentence encoder is the other half of retrieval: it embeds queries and passages one text at a
time, so passages can be embedded once and compared with a query by cosine similarity (a
cross-encoder then reranks the best few). It runs the same encoder as the cross-encoder, of any
family, then replaces the head (pooler, classifier) with sentence-transformers' modules, as the
directory's files say (minibert/formats/sentence_transformers.py, minibert/models/chain.py):

    text --tokenize--> [CLS] text [SEP]                 input_ids [T], all token type 0 (RoBERTa: <s> text </s>)
    encoder            the last layer's hidden states   [T, H]
    Pooling            cls / max / mean / ...            [H] per mode, concatenated: [P * H]
    Dense, LayerNorm   if listed                         [D]
    Normalize          x / max(||x||, 1e-12), if listed  [D]
"""

import numpy as np

from minibert.errors import ConfigError, NumericalError
from minibert.formats.tokenizer import check_text
from minibert.models import forward
from minibert.models.pooling import cos_sim, l2_normalize
from minibert.runtime.load import LoadedModel
from minibert.runtime.ranking import as_list, check_rank_args, ranked
from minibert.runtime.runner import (
    DEFAULT_MAX_BATCH_TOKENS,
    Progress,
    check_batch_size,
    distinct,
    length_or_none,
    listed,
    stream,
)


class SentenceEncoder(LoadedModel):
    """A sentence encoder loaded from a sentence-transformers (or plain HuggingFace) directory.

    Args:
        model_name_or_path: a directory as sentence-transformers saves it (modules.json,
            1_Pooling/config.json, sentence_bert_config.json, config.json, model.safetensors,
            tokenizer.json or vocab.txt); without modules.json, mean pooling is used. Or a Hub id
            "owner/name", as for CrossEncoder (revision, token, cache_folder, local_files_only).
        max_length: tokens per text, special tokens included. Default: sentence_bert_config.json's
            max_seq_length, capped by max_position_embeddings; without one, the tokenizer's
            model_max_length, capped the same way.
        ops: the op set, as for CrossEncoder ("numpy", "numba" or a minibert.ops.OpSet). Default:
            Numba when installed, unless MINIBERT_NO_NUMBA=1.
        max_batch_tokens: at most this many tokens go through one forward pass.
        threads: cores to encode on, as for CrossEncoder (streams of forward passes, BLAS at one
            thread in each). Default None: as many as BLAS's own setting.
        widen: as for CrossEncoder (False: a half-precision checkpoint's matrices stay as stored).
    """

    def __init__(self, model_name_or_path, max_length=None, ops=None, max_batch_tokens=DEFAULT_MAX_BATCH_TOKENS,
                 threads=None, *, widen=False, revision=None, token=None, cache_folder=None, local_files_only=False):
        super().__init__(model_name_or_path, cross_encoder=False, max_length=max_length, ops=ops,
                         max_batch_tokens=max_batch_tokens, threads=threads, revision=revision, token=token,
                         cache_folder=cache_folder, local_files_only=local_files_only, widen=widen)
        self.dimension = self.width   # the modules' output width, before truncate_dim

    @property
    def max_seq_length(self) -> int:
        """Tokens per text, special tokens included (longer texts are truncated)."""
        return self.tokenizer.max_length

    def get_embedding_dimension(self) -> int:
        """D, the length of one embedding (after truncate_dim)."""
        return min(self.dimension, self.pipeline.truncate_dim or self.dimension)

    def __repr__(self):
        p = self.pipeline
        return (f"SentenceEncoder({str(self.path)!r}, layers={self.config.num_hidden_layers}, "
                f"hidden={self.config.hidden_size}, pooling={'+'.join(p.pooling_modes)}, normalize={p.normalize}, "
                f"dimension={self.get_embedding_dimension()}, max_seq_length={self.max_seq_length}, "
                f"ops={self.ops.name})")

    def encode(self, texts, batch_size=32, normalize=False, show_progress_bar=False, *, prompt_name=None,
               prompt=None):
        """Embeddings of texts, in input order: float32 [n, D]; a single str gives [D].

        The pipeline's Normalize module (when modules.json lists one) always applies;
        normalize=True normalizes once more, at the end, as sentence-transformers'
        normalize_embeddings does (after truncate_dim). prompt / prompt_name: text put before each text,
        as sentence-transformers does: an explicit prompt, else one of the model's prompts by name, else
        its default prompt (config_sentence_transformers.json), if it has one.
        """
        self._check_encode_args(batch_size, normalize)
        prefix = self.pipeline.prompt(prompt_name, prompt)
        single = isinstance(texts, str)
        texts = [texts] if single else as_list(texts, "a str or a list of str")
        with Progress(show_progress_bar, "embedding", "texts", len(texts)) as progress:
            embeddings = self._embeddings(texts, 0, batch_size, normalize, prefix, progress)
        return embeddings[0] if single else embeddings

    def encode_iter(self, texts, batch_size=32, normalize=False, show_progress_bar=False, *, prompt_name=None,
                    prompt=None):
        """encode for an iterable of texts of any length: yields each text's embedding, float32 [D], in order.

        Reads the texts a window at a time (1024 texts, or fewer holding 16M characters) and
        embeds each window as encode would, so memory stays bounded whatever the number of texts.
        show_progress_bar counts the texts embedded (of len(texts) when it has a length).
        """
        self._check_encode_args(batch_size, normalize)
        prefix = self.pipeline.prompt(prompt_name, prompt)
        progress = Progress(show_progress_bar, "embedding", "texts", length_or_none(texts)) if show_progress_bar else None
        return stream(texts, lambda text: len(text) if isinstance(text, str) else 0,
                      lambda window, first, bar: self._embeddings(window, first, batch_size, normalize, prefix, bar),
                      "str", progress)

    def _check_encode_args(self, batch_size, normalize):
        check_batch_size(batch_size)
        if not isinstance(normalize, bool):
            raise ConfigError(f"normalize must be True or False, found {normalize!r}")

    def _embeddings(self, texts: list, first_index: int, batch_size: int, normalize: bool, prefix: str = "",
                    progress=None):
        """Embeddings [n, D] of a list of texts; first_index: the index of texts[0], for messages; prefix: the
        prompt, put before each text."""
        texts = [prefix + check_text(text, first_index + i) for i, text in enumerate(texts)]   # every text, first
        texts, where = distinct(texts)   # a repeated text is embedded once: duplicates get exactly the same embedding
        embeddings = self._embed(texts, batch_size, progress, where)[where]   # [n, dimension]
        # The order of sentence-transformers' encode: modules (Normalize among them), truncate, normalize.
        embeddings = embeddings[:, :self.get_embedding_dimension()]                      # [n, D]
        if normalize:
            embeddings = l2_normalize(embeddings)
        if not np.isfinite(embeddings).all():
            bad = first_index + np.flatnonzero(~np.isfinite(embeddings).all(axis=1))
            raise NumericalError(f"non-finite embeddings (NaN or infinity) for texts {listed(bad)}: the model's "
                                 "weights or the input overflow float32")
        return embeddings

    def similarity(self, a, b):
        """Cosine similarity of every row of a [n, D] with every row of b [m, D]: [n, m] float32."""
        return cos_sim(np.atleast_2d(a), np.atleast_2d(b))

    def rank(self, query, documents, top_k=None, return_documents=False, batch_size=32, show_progress_bar=False):
        """Documents by cosine similarity to the query, best first (ties by corpus_id).

        The same output as CrossEncoder.rank: [{"corpus_id", "score"[, "text"]}]. The query and the
        documents get the model's default prompt, if it has one (encode's).
        """
        documents = check_rank_args(query, documents, top_k)
        for index, document in enumerate(documents):
            check_text(document, index, "document")
        if not documents:
            return []
        # Each distinct document is scored once: the similarity product too, so that duplicates tie exactly.
        unique, where = distinct(documents)
        query_embedding = self.encode([query], batch_size=batch_size)                    # [1, D]
        document_embeddings = self.encode(documents, batch_size=batch_size,              # [n, D]
                                          show_progress_bar=show_progress_bar)           # (the bar counts all n)
        firsts = np.unique(where, return_index=True)[1]                                  # [m] first row of each
        scores = cos_sim(query_embedding, document_embeddings[firsts])[0][where]         # [n]
        return ranked(scores, documents, top_k, return_documents)

    def _embed(self, texts: list[str], batch_size: int, progress=None, where=None):
        """Distinct, checked texts -> the modules' embeddings [n, dimension] (the encoder, Pooling, ...)."""
        out = np.empty((len(texts), self.dimension), dtype=np.float32)

        def embed(batch, ops):
            return forward(self.params, self.config, batch, ops)                        # [B, dimension]

        for start, end, embedded in self.runner.run(texts, self.tokenizer.encode_texts, embed, batch_size,
                                                    progress, where):
            out[start:end] = embedded
        return out
