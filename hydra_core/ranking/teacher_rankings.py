"""The teacher-rankings step of the recipe: BM25 and the frozen base rank a task's queries,
and RRF fuses them.

The CLI (:func:`teacher_rankings`) and the pipeline (one asset per function, on stored
embeddings) call these same functions, so ``hydra baselines``, ``hydra train`` and
``hydra run`` rank with the same teachers, depths and fusion.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import polars as pl

from hydra_core.data.card_schema import EVALUATION_SPLIT
from hydra_core.data.opened_task import OpenedTask
from hydra_core.data.retrieval_task import QUERIES_SCHEMA, RetrievalTask
from hydra_core.encoding.embeddings import Embeddings
from hydra_core.encoding.encoder import FrozenEncoder
from hydra_core.ranking.fusion import DEFAULT_RRF_K, reciprocal_rank_fusion
from hydra_core.ranking.rankings import exact_top_k, ranking_frame
from hydra_core.ranking.teachers import BM25Params, BM25Teacher, DenseTeacher

TEACHER_DEPTH = 200
"""How deep each teacher ranks before fusion, so RRF sees more than the final top 100."""

FUSED_DEPTH = 100
"""Depth of fused rankings: enough for Recall@100."""


class TeacherRankings(NamedTuple):
    """Each teacher's ranking by teacher name, and their RRF fusion (the ``teacher`` row)."""

    rankings: dict[str, pl.DataFrame]
    fused: pl.DataFrame


def ranked_queries(task: RetrievalTask, training: pl.DataFrame) -> pl.DataFrame:
    """The queries every teacher ranks: the evaluation split's, then the training queries.

    Ranking both sets once serves the baselines (test) and the distillation (training).
    """
    frames = [training.select(list(QUERIES_SCHEMA))]
    if EVALUATION_SPLIT in task.splits:
        frames.insert(0, task.split_queries(EVALUATION_SPLIT))
    return pl.concat(frames).unique("query_id", keep="first", maintain_order=True)


def query_embeddings(encoder: FrozenEncoder, queries: pl.DataFrame) -> Embeddings:
    """Base embeddings of a query frame's texts, by query id."""
    return Embeddings(
        ids=queries["query_id"].to_list(),
        vectors=encoder.encode(queries["text"].to_list(), "query"),
    )


def document_embeddings(opened: OpenedTask) -> Embeddings:
    """Base embeddings of the corpus, by document id."""
    return Embeddings(ids=opened.doc_ids, vectors=opened.doc_vectors)


def bm25_rankings(
    opened: OpenedTask,
    queries: pl.DataFrame,
    params: BM25Params | None = None,
    depth: int = TEACHER_DEPTH,
) -> pl.DataFrame:
    """BM25 (pinned parameters unless ``params``) top-``depth`` of every query."""
    index = opened.bm25(params or BM25Teacher().params)
    return index.search(queries["query_id"].to_list(), queries["text"].to_list(), depth)


def dense_rankings(
    documents: Embeddings, queries: Embeddings, depth: int = TEACHER_DEPTH
) -> pl.DataFrame:
    """Exact inner-product top-``depth`` of every query embedding over the documents."""
    indices, scores = exact_top_k(queries.vectors, documents.vectors, depth)
    return ranking_frame(queries.ids, documents.ids, indices, scores)


def fuse_teachers(
    rankings: Mapping[str, pl.DataFrame], *, rrf_k: int = DEFAULT_RRF_K, depth: int = FUSED_DEPTH
) -> pl.DataFrame:
    """Unweighted RRF of the teachers' rankings, as the ``teacher`` baseline fuses them."""
    return reciprocal_rank_fusion(rankings, k=rrf_k, depth=depth)


def teacher_rankings(
    opened: OpenedTask, queries: pl.DataFrame, encoder: FrozenEncoder
) -> TeacherRankings:
    """Both teachers' rankings of ``queries`` and their fusion: the three steps above."""
    rankings = {
        BM25Teacher.name: bm25_rankings(opened, queries),
        DenseTeacher(encoder).name: dense_rankings(
            document_embeddings(opened), query_embeddings(encoder, queries)
        ),
    }
    return TeacherRankings(rankings, fuse_teachers(rankings))
