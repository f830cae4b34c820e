"""The teacher ensemble: BM25 plus dense teachers over one corpus, fused by RRF.

It is both a baseline (``teacher`` in every results table) and the source of the
orderings Hydra distils. Each teacher indexes the corpus once; any query set is then
ranked by every teacher and fused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import polars as pl

from hydra_core.ranking.fusion import DEFAULT_RRF_K, reciprocal_rank_fusion
from hydra_core.ranking.teachers import BM25Index, BM25Teacher, DenseIndex, DenseTeacher

TEACHER_DEPTH = 200
"""How deep each teacher ranks before fusion, so RRF sees more than the final top 100."""

FUSED_DEPTH = 100
"""Depth of fused rankings: enough for Recall@100."""


class TeacherEnsemble:
    """Rank query sets with every teacher over one indexed corpus and fuse them."""

    def __init__(
        self,
        doc_ids: Sequence[str],
        doc_texts: Sequence[str],
        *,
        dense: Sequence[DenseTeacher],
        bm25: BM25Teacher | None = None,
        weights: Mapping[str, float] | None = None,
        rrf_k: int = DEFAULT_RRF_K,
    ) -> None:
        self.indexes: dict[str, BM25Index | DenseIndex] = {}
        if bm25 is not None:
            self.indexes[bm25.name] = bm25.index(doc_ids, doc_texts)
        for teacher in dense:
            self.indexes[teacher.name] = teacher.index(doc_ids, doc_texts)
        self.weights = dict(weights or {})
        self.rrf_k = rrf_k

    @property
    def lexical(self) -> BM25Index | None:
        """The BM25 teacher's index, which a compiled retriever's lexical channel reuses."""
        index = self.indexes.get(BM25Teacher.name)
        return index if isinstance(index, BM25Index) else None

    def rank(
        self, query_ids: Sequence[str], query_texts: Sequence[str], k: int = TEACHER_DEPTH
    ) -> dict[str, pl.DataFrame]:
        """Each teacher's top-k ranking frame, by teacher name."""
        return {
            name: index.search(query_ids, query_texts, k) for name, index in self.indexes.items()
        }

    def fuse(
        self,
        rankings: Mapping[str, pl.DataFrame],
        depth: int = FUSED_DEPTH,
    ) -> pl.DataFrame:
        """RRF of the given teacher rankings, with ``rank_<teacher>`` columns kept."""
        return reciprocal_rank_fusion(rankings, k=self.rrf_k, weights=self.weights, depth=depth)
