"""Teachers: the retrievers whose fused orderings Hydra distils.

- :class:`BM25Teacher`: lexical matching with bm25s (Lucene BM25, k1=1.5, b=0.75).
  Tokenisation: lower-case, words of two or more word characters (bm25s' default
  splitter), English stopwords removed, Snowball English stemming (PyStemmer).
- :class:`DenseTeacher`: any sentence-transformers bi-encoder, through the cached
  :class:`~hydra_core.encoding.encoder.FrozenEncoder`; the frozen base itself is one.

Each teacher indexes a corpus once and then ranks any number of query sets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import bm25s
import numpy as np
import polars as pl
import Stemmer

from hydra_core.encoding.encoder import FrozenEncoder
from hydra_core.ranking.rankings import empty_ranking, exact_top_k, ranking_frame


@dataclass(frozen=True)
class BM25Params:
    """Pinned BM25 settings: the ones behind bm25s' published BEIR figures."""

    k1: float = 1.5
    b: float = 0.75
    method: str = "lucene"
    stopwords: str = "en"
    stemmer: str = "english"

    def index(self, doc_ids: Sequence[str], doc_texts: Sequence[str]) -> BM25Index:
        """A corpus' index with these settings (see ``OpenedTask.bm25``, which keeps it)."""
        return BM25Index(doc_ids, doc_texts, self)


class BM25Index:
    """A bm25s index over one corpus."""

    def __init__(self, doc_ids: Sequence[str], doc_texts: Sequence[str], params: BM25Params):
        self.doc_ids = list(doc_ids)
        self.tokenizer = bm25s.tokenization.Tokenizer(
            stopwords=params.stopwords, stemmer=Stemmer.Stemmer(params.stemmer)
        )
        corpus_tokens = self.tokenizer.tokenize(
            list(doc_texts), return_as="tuple", show_progress=False
        )
        self.retriever = bm25s.BM25(k1=params.k1, b=params.b, method=params.method)
        self.retriever.index(corpus_tokens, show_progress=False)

    def search(self, query_ids: Sequence[str], query_texts: Sequence[str], k: int) -> pl.DataFrame:
        """Top-k ranking frame; a query with no known terms gets all-zero scores."""
        if not query_ids:  # bm25s cannot unpack the results of no queries
            return empty_ranking()
        k = min(k, len(self.doc_ids))
        tokens = self.tokenizer.tokenize(
            list(query_texts), update_vocab=False, return_as="string", show_progress=False
        )
        queries = cast(list[list[str]], tokens)
        indices, scores = self.retriever.retrieve(queries, k=k, show_progress=False)
        scores = np.array(scores)
        # bm25s gives a document without any indexable word the token "" and maps a query
        # without known terms to it, so such a query would match such documents.
        scores[[not any(query) for query in queries]] = 0.0
        return ranking_frame(query_ids, self.doc_ids, np.asarray(indices), scores)

    def scores(self, query_texts: Sequence[str]) -> np.ndarray:
        """(queries x docs) BM25 score of every document, for fusing with a dense channel;
        a query with no known terms scores every document 0, as in :meth:`search`."""
        tokens = self.tokenizer.tokenize(
            list(query_texts), update_vocab=False, return_as="string", show_progress=False
        )
        scores = np.zeros((len(query_texts), len(self.doc_ids)), dtype=np.float32)
        for row, query in enumerate(cast(list[list[str]], tokens)):
            # Without the token "" (see search), which only documents without words hold.
            known = self.retriever.get_tokens_ids([word for word in query if word])
            if known:
                scores[row] = self.retriever.get_scores_from_ids(known)
        return scores

    def coverage(self, query_texts: Sequence[str]) -> np.ndarray:
        """Per query, the share of its tokens the corpus' vocabulary knows (0 with none)."""
        tokens = self.tokenizer.tokenize(
            list(query_texts), update_vocab=False, return_as="string", show_progress=False
        )
        return np.array(
            [
                len(self.retriever.get_tokens_ids(query)) / len(query) if query else 0.0
                for query in cast(list[list[str]], tokens)
            ],
            dtype=np.float32,
        )


class BM25Teacher:
    """Builds :class:`BM25Index` objects with pinned parameters."""

    name = "bm25"

    def __init__(self, params: BM25Params | None = None) -> None:
        self.params = params or BM25Params()

    def index(self, doc_ids: Sequence[str], doc_texts: Sequence[str]) -> BM25Index:
        return self.params.index(doc_ids, doc_texts)


class DenseIndex:
    """Exact inner-product search over one corpus' normalised embeddings."""

    def __init__(self, encoder: FrozenEncoder, doc_ids: Sequence[str], doc_vectors: np.ndarray):
        self.encoder = encoder
        self.doc_ids = list(doc_ids)
        self.doc_vectors = doc_vectors

    def search(self, query_ids: Sequence[str], query_texts: Sequence[str], k: int) -> pl.DataFrame:
        query_vectors = self.encoder.encode(query_texts, "query")
        indices, scores = exact_top_k(query_vectors, self.doc_vectors, k)
        return ranking_frame(query_ids, self.doc_ids, indices, scores)


class DenseTeacher:
    """A bi-encoder teacher; with the default encoder it is the frozen base."""

    def __init__(self, encoder: FrozenEncoder, name: str = "base") -> None:
        self.encoder = encoder
        self.name = name

    def index(self, doc_ids: Sequence[str], doc_texts: Sequence[str]) -> DenseIndex:
        return DenseIndex(self.encoder, doc_ids, self.encoder.encode(doc_texts, "document"))
