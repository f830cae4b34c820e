"""What a card compiles into, and searching a corpus with it.

A :class:`CompiledRetriever` is a whole task retriever: a dense head over the frozen base
embeddings plus the fusion parameters that mix it with the task's BM25 channel (see
:mod:`hydra_core.model.score_fusion`). A :class:`RetrieverIndex` binds one to a corpus (its BM25
index and its base document vectors) and searches query texts, or stored query vectors,
alike. Every dense or fused row of a results table is one of these: ``base`` has no
head and no lexical weight, ``hybrid`` no head and the fixed weight, ``hydra-dense`` the
compiled head alone, ``hydra`` all of it.

Document embeddings come from the frozen encoder's cache, so a new task over an
already-encoded corpus costs one compile and one matrix product. Its dense channel is
searched exactly (the default) or through an HNSW graph (``index="hnsw"``, see
:mod:`hydra_core.ranking.ann_index`), which the fused search asks for the dense top
documents, then rescores the union with BM25's exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from hydra_core.data.cards import TaskCard
from hydra_core.data.opened_task import OpenedTask
from hydra_core.encoding.encoder import FrozenEncoder
from hydra_core.model.compiled_retriever import CompiledRetriever
from hydra_core.model.head import torch_threads
from hydra_core.model.hypernet import Hypernet
from hydra_core.model.score_fusion import fused_top_k, text_evidence
from hydra_core.model.task_profile import TaskProfile, card_task_profile
from hydra_core.ranking.ann_index import IndexKind, index_kind, load_or_build_hnsw
from hydra_core.ranking.rankings import exact_top_k, ranking_frame
from hydra_core.ranking.teachers import BM25Index, BM25Params
from hydra_core.settings import load_settings

log = logging.getLogger(__name__)


class RetrieverIndex:
    """A compiled retriever over one corpus: its BM25 index and projected documents."""

    def __init__(
        self,
        retriever: CompiledRetriever,
        doc_ids: Sequence[str],
        doc_vectors: np.ndarray,
        lexical: BM25Index | None,
        encoder: FrozenEncoder | None = None,
        index: IndexKind = "exact",
        cache_dir: Path | None = None,
    ) -> None:
        """``index="hnsw"`` searches the dense channel with an HNSW graph over the projected
        documents, built once and kept in ``cache_dir`` (default: the settings' cache). When
        the cache cannot take a new graph (read-only, full), the channel is searched
        exactly, with a warning, as a read-only embedding cache encodes without storing."""
        if retriever.fusion.lexical_weight > 0 and lexical is None:
            raise ValueError("a retriever with a lexical weight needs the corpus' BM25 index")
        self.retriever = retriever
        self.doc_ids = list(doc_ids)
        head = retriever.head
        self.doc_vectors = doc_vectors if head is None else head.apply(doc_vectors)
        self.lexical = lexical
        self.encoder = encoder
        self.approximate = None
        if index_kind(index) == "hnsw":
            folder = cache_dir if cache_dir is not None else load_settings().cache_dir
            try:
                self.approximate = load_or_build_hnsw(self.doc_vectors, folder)
            except OSError as error:
                log.warning(
                    "HNSW graph not stored in %s (%s): this task's dense channel is searched "
                    "exactly",
                    folder / "ann",
                    error.strerror,
                )

    @classmethod
    def of_task(
        cls,
        retriever: CompiledRetriever,
        opened: OpenedTask,
        encoder: FrozenEncoder | None = None,
        index: IndexKind = "exact",
        cache_dir: Path | None = None,
        *,
        bm25: BM25Params | None = None,
    ) -> RetrieverIndex:
        """``retriever`` over an opened task: its documents, base vectors and its BM25 index
        of ``bm25`` (the pinned parameters with the fusion's ``b`` by default), all kept by
        the task."""
        lexical = opened.bm25(bm25 or BM25Params(b=retriever.fusion.bm25_b))
        return cls(
            retriever, opened.doc_ids, opened.doc_vectors, lexical, encoder, index, cache_dir
        )

    def search(
        self,
        query_ids: Sequence[str],
        query_texts: Sequence[str],
        k: int,
        query_vectors: np.ndarray | None = None,
        lexical_scores: np.ndarray | None = None,
    ) -> pl.DataFrame:
        """Top-k ranking frame.

        Pass stored base ``query_vectors`` to skip encoding, and the queries' BM25
        ``lexical_scores`` (see :meth:`BM25Index.scores`) when several retrievers over one
        corpus search the same queries.
        """
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if query_vectors is None:
            if self.encoder is None:
                raise ValueError("search needs query_vectors or an encoder")
            query_vectors = self.encoder.encode(query_texts, "query")
        indices, scores = self.top_k(query_texts, k, query_vectors, lexical_scores)
        frame = ranking_frame(query_ids, self.doc_ids, indices, scores)
        return frame.filter(pl.col("score").is_finite())

    def top_k(
        self,
        query_texts: Sequence[str],
        k: int,
        query_vectors: np.ndarray,
        lexical_scores: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(queries x k) document rows and scores, best first (``-inf``: fewer candidates)."""
        head, fusion = self.retriever.head, self.retriever.fusion
        queries = query_vectors if head is None else head.apply(query_vectors)
        if fusion.lexical_weight == 0 and fusion.feedback == 0 and fusion.gate is None:
            if self.approximate is not None:
                return self.approximate.top_k(queries, k)
            return exact_top_k(queries, self.doc_vectors, k)
        if lexical_scores is None:
            lexical_scores = self.lexical_scores(query_texts)
        evidence = None if fusion.gate is None else text_evidence(query_texts, self.lexical)
        return fused_top_k(
            lexical_scores, queries, self.doc_vectors, fusion, k, self.approximate, evidence
        )

    def lexical_scores(self, query_texts: Sequence[str]) -> np.ndarray:
        if self.lexical is None:
            return np.zeros((len(query_texts), len(self.doc_ids)), dtype=np.float32)
        return self.lexical.scores(query_texts)


class ConditionedRetriever:
    """The frozen encoder plus a trained hypernet: one retriever for any task card."""

    def __init__(self, hypernet: Hypernet, encoder: FrozenEncoder) -> None:
        hypernet.check_encoder(encoder)
        self.hypernet = hypernet
        self.encoder = encoder

    def compile(self, card: TaskCard, profile: TaskProfile | None = None) -> CompiledRetriever:
        """Compile ``card`` (its task's ``profile`` decides the fusion) on one thread.

        Its matrices are small, so a second thread only adds synchronisation, and on a
        loaded machine far more: 47 ms a compile on two threads against 1.5 ms on one.
        """
        with torch_threads(1):
            return self.hypernet.compile_card(card, self.encoder, profile)

    @property
    def reads_profiles(self) -> bool:
        """Whether a task's profile changes what its card compiles to: only a gate fitted
        on labels reads one, so profiling (a probe of the corpus) is skipped otherwise."""
        return self.hypernet.gate.is_fitted

    def compile_task(self, card: TaskCard, opened: OpenedTask) -> CompiledRetriever:
        """Compile ``card`` for ``opened``'s corpus: with its profile when the gate reads it."""
        profile = card_task_profile(card, opened, self.encoder) if self.reads_profiles else None
        return self.compile(card, profile)
