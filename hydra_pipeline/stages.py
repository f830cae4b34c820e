"""One plain function per pipeline stage, on stored frames and arrays.

The Dagster pipeline stores every intermediate result (corpus, embeddings, each teacher's
rankings, the fusion); these functions turn stored inputs into the next stored output, so a
stage can be rerun, inspected or tested on its own. They compute exactly what the in-memory
path does (``TeacherEnsemble``, ``baseline_table``): same teachers, depths and fusion, so the
pipeline's numbers equal ``hydra baselines``.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import polars as pl

from hydra_core.data.cards import TaskCard, find_card, generic_card
from hydra_core.data.fingerprints import array_digest, frame_digest, text_digest
from hydra_core.data.tasks import QUERIES_SCHEMA, RetrievalTask
from hydra_core.encoding.card_parts import card_part_embeddings
from hydra_core.encoding.embeddings import Embeddings
from hydra_core.encoding.encoder import FrozenEncoder
from hydra_core.errors import HydraInputError
from hydra_core.evaluation.method import HEADLINE_METRIC, Method, in_table_order
from hydra_core.evaluation.methods import (
    EVAL_SPLIT,
    card_retrievers,
    default_ensemble,
    hybrid_retriever,
    retriever_table,
    score_ranking,
    shuffled_card,
)
from hydra_core.evaluation.report import ResultsTable
from hydra_core.evaluation.significance import per_query_frame, table_from_per_query
from hydra_core.model.compiled_retriever import DENSE_ONLY, CompiledRetriever
from hydra_core.model.hypernet import Hypernet
from hydra_core.model.module import WEIGHTS_FILE
from hydra_core.model.retriever import ConditionedRetriever
from hydra_core.ranking.fusion import DEFAULT_RRF_K, reciprocal_rank_fusion
from hydra_core.ranking.rankings import exact_top_k, ranking_frame
from hydra_core.ranking.teacher_ensemble import FUSED_DEPTH, TEACHER_DEPTH
from hydra_core.ranking.teachers import BM25Teacher
from hydra_core.training.head_fitting import refine_retriever, supervised_reference
from hydra_core.training.preferences import PairConfig, preference_pairs
from hydra_core.training.trainer import TrainingTask
from hydra_core.training.training_data import LABELS_SUFFIX, label_split, label_training_task
from hydra_pipeline.artifacts import CheckpointRecord, task_from_frames

BASELINE_METHODS: tuple[str, ...] = (Method.BM25, Method.BASE, Method.TEACHER)

log = logging.getLogger(__name__)


def ranked_queries(task: RetrievalTask, training: pl.DataFrame) -> pl.DataFrame:
    """The queries every teacher ranks: the evaluation split's, then the training queries.

    Ranking both sets once serves the baselines (test) and the distillation (training).
    """
    evaluation = task.split_queries(EVAL_SPLIT) if EVAL_SPLIT in task.splits else None
    frames = [training.select(list(QUERIES_SCHEMA))]
    if evaluation is not None:
        frames.insert(0, evaluation)
    return pl.concat(frames).unique("query_id", keep="first", maintain_order=True)


def corpus_task(corpus: pl.DataFrame) -> RetrievalTask:
    """A task holding only a corpus, for stages that need only its documents."""
    return RetrievalTask(
        name="", source="", corpus=corpus, queries=pl.DataFrame(schema=QUERIES_SCHEMA), qrels={}
    )


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


def distillation_pairs(
    fused: pl.DataFrame, training: pl.DataFrame, config: PairConfig | None = None
) -> pl.DataFrame:
    """Preference pairs from the fused ranking of the training queries only (never test)."""
    rankings = fused.filter(pl.col("query_id").is_in(training["query_id"].implode()))
    return preference_pairs(rankings, config)


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
    table: ResultsTable = {
        name: score_ranking(_evaluation_only(frame, task, split), task, split)
        for name, frame in rankings.items()
    }
    table[Method.TEACHER] = score_ranking(_evaluation_only(fused, task, split), task, split)
    return table


def retriever_metrics(
    task: RetrievalTask,
    retrievers: Mapping[str, CompiledRetriever],
    documents: Embeddings,
    queries: Embeddings,
    split: str = EVAL_SPLIT,
) -> ResultsTable:
    """Each compiled retriever (hybrid, hydra and the rest) scored on ``split`` from stored
    embeddings, through the same :func:`retriever_table` as ``hydra eval``. The BM25 index
    is built here from the task's corpus (seconds), once for every row."""
    doc_ids, texts = task.corpus["doc_id"].to_list(), task.doc_texts()
    lexical = BM25Teacher().index(doc_ids, texts)
    vectors = documents.select(doc_ids)
    return retriever_table(task, retrievers, vectors, lexical, split, query_embeddings=queries)


@functools.lru_cache(maxsize=2)
def _load_hypernet(path: str, weights_mtime_ns: int) -> Hypernet:
    return Hypernet.load(path)


def load_hypernet(path: Path | str) -> Hypernet:
    """A checkpoint, loaded once per process (every task's head comes from the same one)."""
    weights = Path(path) / WEIGHTS_FILE
    return _load_hypernet(str(path), weights.stat().st_mtime_ns)


def compile_card(
    checkpoint: Path | str, card: TaskCard, encoder: FrozenEncoder
) -> CompiledRetriever:
    """Compile ``card`` into its whole retriever with the hypernet at ``checkpoint``."""
    return ConditionedRetriever(load_hypernet(checkpoint), encoder).compile(card)


def cards_named(names: Sequence[str]) -> list[TaskCard]:
    """The cards of these tasks from the cards folder (names that no longer load are
    skipped, with a warning: the shuffled-card ablation can borrow another)."""
    cards = []
    for name in names:
        try:
            cards.append(find_card(name))
        except HydraInputError as error:
            log.warning("skipping a card that does not load: %s", error)
    return cards


def reference_retrievers(
    task: RetrievalTask,
    card: TaskCard,
    encoder: FrozenEncoder,
    *,
    labelled: CheckpointRecord,
    unseen: CheckpointRecord,
    refine_steps: int,
) -> dict[str, CompiledRetriever]:
    """The hypernet-made rows that say what hydra's number means, beside it in its table.

    ``hydra+labels`` (the hypernet trained with the card's labels) when the card declares
    labels; the ``hydra-unseen`` rows from the hypernet trained without this task: its card
    (whole, and its head alone), the generic card, and its card refined for
    ``refine_steps`` on the task's own corpus.
    (``supervised-head`` needs no hypernet: see :func:`supervised_metrics`.)
    """
    rows: dict[str, CompiledRetriever] = {}
    if card.name + LABELS_SUFFIX in labelled.extra.get("label_streams", []):
        rows[Method.HYDRA_LABELS] = compile_card(labelled.path, card, encoder)
    if unseen.path:
        rows[Method.HYDRA_UNSEEN] = compile_card(unseen.path, card, encoder)
        rows[Method.HYDRA_UNSEEN_DENSE] = rows[Method.HYDRA_UNSEEN].dense_only()
        rows[Method.HYDRA_UNSEEN_GENERIC] = compile_card(unseen.path, generic_card(), encoder)
        if refine_steps > 0:
            ensemble = default_ensemble(task, encoder)
            rows[Method.HYDRA_UNSEEN_REFINED] = refine_retriever(
                rows[Method.HYDRA_UNSEEN], task, encoder, ensemble, refine_steps
            )
    return rows


def supervised_metrics(
    task: RetrievalTask,
    card: TaskCard,
    encoder: FrozenEncoder,
    documents: Embeddings,
    queries: Embeddings,
    split: str = EVAL_SPLIT,
) -> pl.DataFrame:
    """The ``supervised-head`` per-query rows: a head fitted on the card's labels alone,
    scored on ``split``; no rows for a card that declares no labels. It depends on the
    task's data and card only, so a retrained hypernet does not refit it."""
    reference = supervised_reference(card, task, encoder)
    if reference is None:
        return per_query_frame(task.name, {}, split)
    rows: dict[str, CompiledRetriever] = {
        Method.SUPERVISED_HEAD: CompiledRetriever(head=reference, fusion=DENSE_ONLY)
    }
    return per_query_frame(
        task.name, retriever_metrics(task, rows, documents, queries, split), split
    )


def label_streams(
    cards: Mapping[str, TaskCard],
    corpus: Mapping[str, pl.DataFrame],
    queries: Mapping[str, pl.DataFrame],
    qrels: Mapping[str, pl.DataFrame],
    encoder: FrozenEncoder,
) -> list[TrainingTask]:
    """The labels streams of the cards that declare labels, from the stored task frames."""
    streams = []
    for name, card in sorted(cards.items()):
        task = task_from_frames(name, card.source, corpus[name], queries[name], qrels[name])
        if label_split(card, task) is not None:
            streams.append(label_training_task(card, task, encoder))
    return streams


def retriever_digest(compiled: CompiledRetriever) -> str:
    """Content hash of a compiled retriever: its head's tensors and its fusion parameters."""
    tensors = {} if compiled.head is None else compiled.head.tensors()
    return text_digest(
        *(array_digest(tensor.numpy()) for tensor in tensors.values()),
        json.dumps(compiled.fusion.to_dict(), sort_keys=True),
    )


def training_task(
    card: TaskCard,
    encoder: FrozenEncoder,
    documents: Embeddings,
    queries: Embeddings,
    pairs: pl.DataFrame,
) -> TrainingTask:
    """One task's contribution to hypernet training, from stored embeddings and pairs."""
    task = TrainingTask.from_frames(
        card.name,
        card_part_embeddings(card, encoder),
        queries.ids,
        queries.vectors,
        documents.ids,
        documents.vectors,
        pairs,
    )
    task.fingerprint = {
        "documents": documents.digest,
        "queries": queries.digest,
        "pairs": frame_digest(pairs),
    }
    return task


class TaskEvaluation(NamedTuple):
    """One task's evaluation: the mean rows and the per-query rows they average."""

    metrics: pl.DataFrame
    per_query: pl.DataFrame


def evaluate_task(
    task: RetrievalTask,
    card: TaskCard,
    *,
    teacher_rankings: Mapping[str, pl.DataFrame],
    fused: pl.DataFrame,
    documents: Embeddings,
    queries: Embeddings,
    compiled: CompiledRetriever,
    checkpoint: Path | str,
    other_cards: Sequence[TaskCard],
    encoder: FrozenEncoder,
    references: Mapping[str, CompiledRetriever] | None = None,
    scored: pl.DataFrame | None = None,
    split: str = EVAL_SPLIT,
) -> TaskEvaluation:
    """The whole results table of one task as long rows, in the store's method order:
    baselines, hybrid, hydra and its head alone, the ablations, the ``references`` (see
    :func:`reference_retrievers`) and the per-query rows ``scored`` elsewhere (see
    :func:`supervised_metrics`)."""
    table = baseline_metrics(task, teacher_rankings, fused, split)
    retriever = ConditionedRetriever(load_hypernet(checkpoint), encoder)
    others = [other for other in other_cards if other.name != card.name]
    rows = card_retrievers(
        retriever, card, shuffled=shuffled_card(card, others) if others else None
    )
    rows = {
        Method.HYBRID: hybrid_retriever(),
        **rows,
        Method.HYDRA: compiled,
        Method.HYDRA_DENSE: compiled.dense_only(),
        **(references or {}),
    }
    table.update(retriever_metrics(task, rows, documents, queries, split))
    if scored is not None:
        table.update(table_from_per_query(scored))
    ordered = {method: table[method] for method in in_table_order(table)}
    return TaskEvaluation(
        metrics_frame(task.name, ordered, split), per_query_frame(task.name, ordered, split)
    )


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


def hydra_margin(table: ResultsTable, metric: str = HEADLINE_METRIC) -> float:
    """Hydra minus the frozen base on ``metric``; negative means hydra is worse."""
    return table[Method.HYDRA][metric] - table[Method.BASE][metric]
