"""One plain function per pipeline stage, on stored frames and arrays.

The Dagster pipeline stores every intermediate result (corpus, embeddings, each teacher's
rankings, the fusion); these functions turn stored inputs into the next stored output, so a
stage can be rerun, inspected or tested on its own. They compute exactly what the in-memory
path does (``TeacherEnsemble``, ``baseline_table``): same teachers, depths and fusion, so the
pipeline's numbers equal ``hydra baselines``.
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from hydra_core.artifacts import Embeddings
from hydra_core.encoder import FrozenEncoder
from hydra_core.evaluation import EVAL_SPLIT, score_ranking
from hydra_core.fusion import DEFAULT_RRF_K, reciprocal_rank_fusion
from hydra_core.rankings import exact_top_k, ranking_frame
from hydra_core.report import ResultsTable
from hydra_core.tasks import QUERIES_SCHEMA, RetrievalTask
from hydra_core.teacher_ensemble import FUSED_DEPTH, TEACHER_DEPTH
from hydra_core.teachers import BM25Teacher

BM25 = "bm25"
BASE = "base"
TEACHER = "teacher"
HYDRA = "hydra"
BASELINE_METHODS: tuple[str, ...] = (BM25, BASE, TEACHER)


def ranked_queries(task: RetrievalTask, training: pl.DataFrame) -> pl.DataFrame:
    """The queries every teacher ranks: the evaluation split's, then the training queries.

    Ranking both sets once serves the baselines (test) and the distillation (training).
    """
    evaluation = task.split_queries(EVAL_SPLIT) if EVAL_SPLIT in task.splits else None
    frames = [training.select(list(QUERIES_SCHEMA))]
    if evaluation is not None:
        frames.insert(0, evaluation)
    return pl.concat(frames).unique("query_id", keep="first", maintain_order=True)


def encode_documents(encoder: FrozenEncoder, task: RetrievalTask) -> Embeddings:
    """Base embeddings of the corpus, with the same text convention as every other path."""
    return Embeddings(
        ids=task.corpus["doc_id"].to_list(), vectors=encoder.encode(task.doc_texts(), "document")
    )


def encode_queries(encoder: FrozenEncoder, queries: pl.DataFrame) -> Embeddings:
    return Embeddings(
        ids=queries["query_id"].to_list(),
        vectors=encoder.encode(queries["text"].to_list(), "query"),
    )


def bm25_rankings(
    task: RetrievalTask, queries: pl.DataFrame, depth: int = TEACHER_DEPTH
) -> pl.DataFrame:
    """BM25 (pinned parameters) top-``depth`` of every query over the task's corpus."""
    index = BM25Teacher().index(task.corpus["doc_id"].to_list(), task.doc_texts())
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


def _evaluation_only(ranking: pl.DataFrame, task: RetrievalTask, split: str) -> pl.DataFrame:
    query_ids = task.split_queries(split)["query_id"].implode()
    return ranking.filter(pl.col("query_id").is_in(query_ids))


def baseline_metrics(
    task: RetrievalTask,
    rankings: Mapping[str, pl.DataFrame],
    fused: pl.DataFrame,
    split: str = EVAL_SPLIT,
) -> ResultsTable:
    """Each teacher alone and the fused ``teacher``, scored on ``split``."""
    table = {
        name: score_ranking(_evaluation_only(frame, task, split), task, split)
        for name, frame in rankings.items()
    }
    table[TEACHER] = score_ranking(_evaluation_only(fused, task, split), task, split)
    return table


def metrics_frame(task: str, table: ResultsTable, split: str = EVAL_SPLIT) -> pl.DataFrame:
    """A results table as long rows: task, method, split, metric, value."""
    rows = [
        (task, method, split, metric, float(value))
        for method, metrics in table.items()
        for metric, value in metrics.items()
    ]
    return pl.DataFrame(
        rows,
        schema={
            "task": pl.String(),
            "method": pl.String(),
            "split": pl.String(),
            "metric": pl.String(),
            "value": pl.Float64(),
        },
        orient="row",
    )


def table_from_frame(frame: pl.DataFrame) -> ResultsTable:
    """Long metric rows back to ``{method: {metric: value}}``, methods in first-seen order."""
    table: ResultsTable = {}
    for method, metric, value in frame.select("method", "metric", "value").iter_rows():
        table.setdefault(method, {})[metric] = value
    return table


# ------------------------------------------------------------------------------ data checks


def dangling_qrels(
    corpus: pl.DataFrame, queries: pl.DataFrame, qrels: pl.DataFrame
) -> pl.DataFrame:
    """Judgments naming a document or query that does not exist (should be none)."""
    return qrels.filter(
        ~pl.col("doc_id").is_in(corpus["doc_id"].implode())
        | ~pl.col("query_id").is_in(queries["query_id"].implode())
    )


def leaked_test_queries(
    training: pl.DataFrame, queries: pl.DataFrame, qrels: pl.DataFrame
) -> pl.DataFrame:
    """Training queries that are test queries, by id or by text (should be none)."""
    test_ids = qrels.filter(pl.col("split") == EVAL_SPLIT)["query_id"].unique()
    test = queries.filter(pl.col("query_id").is_in(test_ids.implode()))
    normalized = pl.col("text").str.strip_chars().str.to_lowercase()
    test_texts = test.select(normalized)["text"].implode()
    return training.filter(
        pl.col("query_id").is_in(test["query_id"].implode()) | normalized.is_in(test_texts)
    )


def hydra_margin(table: ResultsTable, metric: str = "ndcg@10") -> float:
    """Hydra minus the frozen base on ``metric``; negative means hydra is worse."""
    return table[HYDRA][metric] - table[BASE][metric]
