"""ConditionedRetriever: compile a card into a head, then search a corpus through it.

Document embeddings come from the frozen encoder's cache, so a new task over an
already-encoded corpus costs one head generation and one matrix product.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from hydra_core.cards import TaskCard
from hydra_core.encoder import FrozenEncoder
from hydra_core.head import ProjectionHead, torch_threads
from hydra_core.hypernet import Hypernet
from hydra_core.rankings import exact_top_k, ranking_frame


class HeadIndex:
    """A corpus projected through one head; searchable like a teacher's index."""

    def __init__(
        self,
        head: ProjectionHead,
        encoder: FrozenEncoder,
        doc_ids: Sequence[str],
        doc_vectors: np.ndarray,
    ) -> None:
        self.head = head
        self.encoder = encoder
        self.doc_ids = list(doc_ids)
        self.doc_vectors = head.apply(doc_vectors)

    def search(self, query_ids: Sequence[str], query_texts: Sequence[str], k: int) -> pl.DataFrame:
        query_vectors = self.head.apply(self.encoder.encode(query_texts, "query"))
        indices, scores = exact_top_k(query_vectors, self.doc_vectors, k)
        return ranking_frame(query_ids, self.doc_ids, indices, scores)


class ConditionedRetriever:
    """The frozen encoder plus a trained hypernet: one retriever for any task card."""

    def __init__(self, hypernet: Hypernet, encoder: FrozenEncoder) -> None:
        hypernet.check_encoder(encoder)
        self.hypernet = hypernet
        self.encoder = encoder

    def compile(self, card: TaskCard) -> ProjectionHead:
        """Generate ``card``'s head on one thread.

        Its matrices are small, so a second thread only adds synchronisation, and on a
        loaded machine far more: 47 ms a compile on two threads against 1.5 ms on one.
        """
        with torch_threads(1):
            return self.hypernet.generate_head(card, self.encoder)

    def index(
        self,
        head: ProjectionHead,
        doc_ids: Sequence[str],
        doc_texts: Sequence[str] | None = None,
        *,
        doc_vectors: np.ndarray | None = None,
    ) -> HeadIndex:
        """Project a corpus through ``head``; pass cached ``doc_vectors`` to skip lookup."""
        if doc_vectors is None:
            if doc_texts is None:
                raise ValueError("index needs doc_texts or doc_vectors")
            doc_vectors = self.encoder.encode(doc_texts, "document")
        return HeadIndex(head, self.encoder, doc_ids, doc_vectors)
