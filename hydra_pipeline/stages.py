"""The pipeline's side of the recipe: stored frames and artifacts turned into calls of the
step functions of ``hydra_core`` (teacher rankings, pairs, training, compile, evaluate), and
the step results turned back into frames the store keeps.

Nothing here computes a step: ``hydra baselines``, ``hydra train`` and ``hydra eval`` call
the same functions, so the pipeline's numbers equal the CLI's.
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
from hydra_core.data.fingerprints import array_digest, text_digest
from hydra_core.data.opened_task import OpenedTask
from hydra_core.encoding.embeddings import Embeddings
from hydra_core.encoding.encoder import FrozenEncoder
from hydra_core.errors import HydraInputError
from hydra_core.evaluation.method import HEADLINE_METRIC, Method, in_table_order
from hydra_core.evaluation.methods import (
    EVAL_SPLIT,
    card_rows,
    evaluation_table,
    oracle_row,
    retriever_table,
)
from hydra_core.evaluation.reference_heads import refine_retriever, supervised_reference
from hydra_core.evaluation.report import ResultsTable
from hydra_core.evaluation.significance import per_query_frame, table_from_per_query
from hydra_core.model.compiled_retriever import DENSE_ONLY, CompiledRetriever
from hydra_core.model.hypernet import Hypernet
from hydra_core.model.module import WEIGHTS_FILE
from hydra_core.model.retriever import ConditionedRetriever
from hydra_core.model.score_fusion import FusionParameters
from hydra_core.ranking.teacher_rankings import TeacherRankings
from hydra_core.training.trainer import TrainingTask
from hydra_core.training.training_data import LABELS_SUFFIX, label_split, label_training_task
from hydra_pipeline.artifacts import CheckpointRecord, task_from_frames

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=2)
def _load_hypernet(path: str, weights_mtime_ns: int) -> Hypernet:
    return Hypernet.load(path)


def load_hypernet(path: Path | str) -> Hypernet:
    """A checkpoint, loaded once per process (every task's head comes from the same one)."""
    weights = Path(path) / WEIGHTS_FILE
    return _load_hypernet(str(path), weights.stat().st_mtime_ns)


def compile_card(
    checkpoint: Path | str, card: TaskCard, opened: OpenedTask, encoder: FrozenEncoder
) -> CompiledRetriever:
    """Compile ``card`` into its whole retriever over ``opened``'s corpus with the hypernet
    at ``checkpoint``."""
    return ConditionedRetriever(load_hypernet(checkpoint), encoder).compile_task(card, opened)


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
    opened: OpenedTask,
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
        rows[Method.HYDRA_LABELS] = compile_card(labelled.path, card, opened, encoder)
    if unseen.path:
        rows[Method.HYDRA_UNSEEN] = compile_card(unseen.path, card, opened, encoder)
        rows[Method.HYDRA_UNSEEN_DENSE] = rows[Method.HYDRA_UNSEEN].dense_only()
        generic = ConditionedRetriever(load_hypernet(unseen.path), encoder).compile(generic_card())
        rows[Method.HYDRA_UNSEEN_GENERIC] = generic
        if refine_steps > 0:
            rows[Method.HYDRA_UNSEEN_REFINED] = refine_retriever(
                rows[Method.HYDRA_UNSEEN], opened, encoder, refine_steps
            )
    return rows


def supervised_metrics(
    opened: OpenedTask, card: TaskCard, encoder: FrozenEncoder, queries: Embeddings
) -> pl.DataFrame:
    """The ``supervised-head`` per-query rows: a head fitted on the card's labels alone,
    scored on the test split; no rows for a card that declares no labels. It depends on the
    task's data and card only, so a retrained hypernet does not refit it."""
    reference = supervised_reference(card, opened, encoder)
    if reference is None:
        return per_query_frame(opened.name, {}, EVAL_SPLIT)
    rows: dict[str, CompiledRetriever] = {
        Method.SUPERVISED_HEAD: CompiledRetriever(head=reference, fusion=DENSE_ONLY)
    }
    table = retriever_table(opened, rows, query_embeddings=queries)
    return per_query_frame(opened.name, table, EVAL_SPLIT)


ORACLE_POINT = ("lexical_weight", "feedback", "bm25_b")
"""The columns of the oracle's rows that carry the grid point they were scored at."""


def oracle_metrics(opened: OpenedTask, encoder: FrozenEncoder) -> pl.DataFrame:
    """The ``oracle`` ceiling's per-query rows on the test split, each carrying the grid
    point they were scored at (:data:`ORACLE_POINT`), so the fusion table sets it beside
    what the cards compiled to. It depends on the task's data only, so a retrained hypernet
    does not rescore it."""
    scores, fusion = oracle_row(opened, encoder)
    frame = per_query_frame(opened.name, {Method.ORACLE: scores}, EVAL_SPLIT)
    return frame.with_columns(pl.lit(getattr(fusion, name)).alias(name) for name in ORACLE_POINT)


def oracle_fusion(rows: pl.DataFrame) -> FusionParameters | None:
    """The grid point of :func:`oracle_metrics`'s rows (none for a task without test
    queries)."""
    if rows.is_empty():
        return None
    point = rows.row(0, named=True)
    return FusionParameters(
        lexical_weight=point["lexical_weight"], feedback=point["feedback"], bm25_b=point["bm25_b"]
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
            streams.append(label_training_task(card, OpenedTask(task, encoder), encoder))
    return streams


def retriever_digest(compiled: CompiledRetriever) -> str:
    """Content hash of a compiled retriever: its head's tensors and its fusion parameters."""
    tensors = {} if compiled.head is None else compiled.head.tensors()
    return text_digest(
        *(array_digest(tensor.numpy()) for tensor in tensors.values()),
        json.dumps(compiled.fusion.to_dict(), sort_keys=True),
    )


class TaskEvaluation(NamedTuple):
    """One task's evaluation: the mean rows, the per-query rows they average, and the
    fusion each card compiled to beside the oracle's (:data:`FUSION_ROWS`)."""

    metrics: pl.DataFrame
    per_query: pl.DataFrame
    fusion: dict[str, FusionParameters]


FUSION_ROWS = (
    Method.HYDRA,
    Method.HYDRA_GENERIC,
    Method.HYDRA_UNSEEN,
    Method.HYDRA_UNSEEN_GENERIC,
)
"""The rows whose fusion an evaluation records: the card's, the generic card's, and the
same for the hypernet that never saw the task."""


def evaluate_task(
    opened: OpenedTask,
    card: TaskCard,
    *,
    teachers: TeacherRankings,
    queries: Embeddings,
    compiled: CompiledRetriever,
    checkpoint: Path | str,
    other_cards: Sequence[TaskCard],
    encoder: FrozenEncoder,
    references: Mapping[str, CompiledRetriever] | None = None,
    scored: pl.DataFrame | None = None,
    oracle: pl.DataFrame | None = None,
) -> TaskEvaluation:
    """The whole results table of one task as long rows, in the store's method order:
    the table ``hydra eval`` builds (its ``hydra`` row the stored ``compiled`` retriever),
    the ``references`` (see :func:`reference_retrievers`), the per-query rows ``scored``
    elsewhere (see :func:`supervised_metrics`) and the ``oracle`` ceiling's (see
    :func:`oracle_metrics`)."""
    retriever = ConditionedRetriever(load_hypernet(checkpoint), encoder)
    rows = {
        **card_rows(retriever, card, opened, other_cards),
        Method.HYDRA: compiled,
        Method.HYDRA_DENSE: compiled.dense_only(),
        **(references or {}),
    }
    table = evaluation_table(opened, teachers, rows, query_embeddings=queries)
    if scored is not None:
        table.update(table_from_per_query(scored))
    fusion: dict[str, FusionParameters] = {
        method: rows[method].fusion for method in FUSION_ROWS if method in rows
    }
    if oracle is not None and (point := oracle_fusion(oracle)) is not None:
        table.update(table_from_per_query(oracle))
        fusion[Method.ORACLE] = point
    ordered = {method: table[method] for method in in_table_order(table)}
    return TaskEvaluation(
        metrics_frame(opened.name, ordered),
        per_query_frame(opened.name, ordered, EVAL_SPLIT),
        fusion,
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
