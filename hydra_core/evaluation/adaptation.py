"""Adaptation: a compiled retriever fitted to the few judged queries a user brings.

A team that brings a task often has 10, 30 or 100 judged queries. Adapting starts from a
retriever (the card's compiled one, or the frozen base with the fixed ``hybrid`` fusion)
and fits it to them:

- the head, on pairs of a judged document against the base's top non-relevant ones, each
  pair scored fused with BM25 as the retriever fuses it (the labels stream of
  ``hydra train --labels``, fitted by :func:`~hydra_core.evaluation.reference_heads.fit_head`);
- the fusion: lexical weight, feedback and BM25's ``b``, over the validation fusion grid.

With :data:`MIN_VALIDATION_QUERIES` judged queries or more, a seeded fifth of them is held
out, and the number of head steps and the fusion are chosen together on it (the retriever
as it started is a candidate too, and only a strictly better one replaces it: a fit that
does not help does not hurt); the head is then fitted again on every judged query for the
chosen steps. With fewer, a fixed recipe: :data:`FIXED_STEPS` head steps, the fusion as it
was. The module sits in ``evaluation`` because it chooses by validation scores.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl

from hydra_core.data.beir_folder import read_qrels_file
from hydra_core.data.card_schema import EVALUATION_SPLIT
from hydra_core.data.cards import TaskCard
from hydra_core.data.opened_task import OpenedTask
from hydra_core.data.retrieval_task import RetrievalTask
from hydra_core.encoding.encoder import FrozenEncoder
from hydra_core.errors import HydraInputError
from hydra_core.evaluation.method import HEADLINE_METRIC
from hydra_core.evaluation.methods import (
    BM25_B_GRID,
    FUSION_GRID_FEEDBACK,
    FUSION_GRID_WEIGHTS,
    score_ranking,
)
from hydra_core.evaluation.reference_heads import (
    SUPERVISED_LEARNING_RATE,
    base_head,
    fit_head,
    head_fits,
)
from hydra_core.model.compiled_retriever import CompiledRetriever
from hydra_core.model.head import ProjectionHead, torch_threads
from hydra_core.model.retriever import RetrieverIndex
from hydra_core.model.score_fusion import FusionParameters
from hydra_core.ranking.teachers import BM25Params
from hydra_core.training.trainer import TrainConfig, TrainingTask
from hydra_core.training.training_data import label_training_task

log = logging.getLogger(__name__)

LABELS_SPLIT = "labels"
"""The one split of an adaptation's task: the judged queries it fits on."""
HELD_OUT_SPLIT = "held-out"
MIN_VALIDATION_QUERIES = 20
"""Judged queries from which a fifth is held out to choose on; fewer get the fixed recipe."""
HEAD_CHECKPOINTS = (25, 50, 100, 200)
"""Head steps after which the fit is scored on the held-out queries."""
FIXED_STEPS = 50
"""Head steps of the fixed recipe: a short fit, not chosen on validation (too few labels to
hold any out); the lower checkpoints of :data:`HEAD_CHECKPOINTS` in reach."""
ADAPT_CONFIG = TrainConfig(learning_rate=SUPERVISED_LEARNING_RATE)


def load_labels(task: RetrievalTask, labels: str) -> pl.DataFrame:
    """Judgments from ``labels``: a qrels TSV file of the task's queries and documents, or
    the name of one of its splits (never the test split, which scores the results)."""
    path = Path(labels)
    if path.is_file():
        return read_qrels_file(path, task)
    if labels == EVALUATION_SPLIT:
        raise HydraInputError(
            f"--labels {labels}: test labels are kept for evaluation; name a training split "
            "such as 'train' or a qrels file"
        )
    if labels not in task.splits:
        raise HydraInputError(
            f"--labels {labels!r}: no such file, and the task has no such split "
            f"(its splits are {', '.join(task.splits)})"
        )
    return task.split_qrels(labels)


def judged_queries(qrels: pl.DataFrame) -> list[str]:
    """Query ids with at least one relevant document, sorted (what adaptation can learn from)."""
    return sorted(qrels.filter(pl.col("score") > 0)["query_id"].unique().to_list())


def sample_labels(qrels: pl.DataFrame, queries: int | None, seed: int) -> pl.DataFrame:
    """The judgments of ``queries`` judged queries drawn at random with ``seed`` (all of
    them with ``None``); asking for more than there are is an error naming both numbers."""
    judged = judged_queries(qrels)
    if queries is None:
        return qrels.filter(pl.col("query_id").is_in(judged))
    if not 1 <= queries <= len(judged):
        raise HydraInputError(
            f"--queries {queries}: the labels have {len(judged)} queries with a relevant document"
        )
    chosen = np.random.default_rng(seed).choice(len(judged), queries, replace=False)
    return qrels.filter(pl.col("query_id").is_in([judged[i] for i in chosen]))


def _held_out(query_ids: Sequence[str], seed: int) -> set[str]:
    """A seeded fifth of the queries (at least one), by a hash of seed and id."""
    ranked = sorted(query_ids, key=lambda q: hashlib.md5(f"{seed}:{q}".encode()).hexdigest())
    return set(ranked[: max(1, math.ceil(len(ranked) / 5))])


class _Validation:
    """Scores retrievers on held-out judged queries: each head projects the corpus once,
    each BM25 ``b`` scores the queries once."""

    def __init__(self, opened: OpenedTask, encoder: FrozenEncoder) -> None:
        self.opened = opened
        queries = opened.task.split_queries(HELD_OUT_SPLIT)
        self.ids, self.texts = queries["query_id"].to_list(), queries["text"].to_list()
        self.vectors = encoder.encode(self.texts, "query")
        self.lexical: dict[float, np.ndarray] = {}

    def ndcg(self, head: ProjectionHead | None, fusions: Sequence[FusionParameters]) -> list[float]:
        """NDCG@10 on the held-out queries of ``head`` with each of ``fusions``."""
        docs, queries = self.opened.doc_vectors, self.vectors
        if head is not None:
            docs, queries = head.apply(docs), head.apply(queries)
        scores = []
        for fusion in fusions:
            bm25 = self.opened.bm25(BM25Params(b=fusion.bm25_b))
            if fusion.bm25_b not in self.lexical:
                self.lexical[fusion.bm25_b] = bm25.scores(self.texts)
            index = RetrieverIndex(CompiledRetriever(None, fusion), self.opened.doc_ids, docs, bm25)
            ranking = index.search(self.ids, self.texts, 10, queries, self.lexical[fusion.bm25_b])
            scores.append(score_ranking(ranking, self.opened.task, HELD_OUT_SPLIT)[HEADLINE_METRIC])
        return scores


def fusion_grid(start: FusionParameters) -> list[FusionParameters]:
    """The start's fusion first, then every point of the validation grid (its query gate
    kept): lexical weight x feedback x BM25 ``b``."""
    points = [
        replace(start, lexical_weight=w, feedback=f, bm25_b=b)
        for b in BM25_B_GRID
        for w in FUSION_GRID_WEIGHTS
        for f in FUSION_GRID_FEEDBACK
    ]
    return [start, *(point for point in points if point != start)]


def adapt(
    start: CompiledRetriever,
    card: TaskCard,
    opened: OpenedTask,
    encoder: FrozenEncoder,
    qrels: pl.DataFrame,
    *,
    fit_head_too: bool = True,
    seed: int = 0,
) -> CompiledRetriever:
    """``start`` fitted to the judgments ``qrels`` of ``opened``'s queries (see the module
    docstring); ``fit_head_too=False`` fits only the fusion and ``b``. The result records
    how many judged queries it saw.

    On one torch thread: the fit's matrices are small, and on a busy two-core machine 50
    head steps took 1.9 s on one thread against 21 s on two.
    """
    with torch_threads(1):
        return _adapt(start, card, opened, encoder, qrels, fit_head_too=fit_head_too, seed=seed)


def _adapt(
    start: CompiledRetriever,
    card: TaskCard,
    opened: OpenedTask,
    encoder: FrozenEncoder,
    qrels: pl.DataFrame,
    *,
    fit_head_too: bool,
    seed: int,
) -> CompiledRetriever:
    judged = judged_queries(qrels)
    if not judged:
        raise HydraInputError("the labels have no query with a relevant document")
    qrels = qrels.filter(pl.col("query_id").is_in(judged))
    config = replace(ADAPT_CONFIG, seed=seed)
    initial = start.head or _base_head(opened, encoder, qrels)
    task = opened.task

    def head_task(labels: pl.DataFrame) -> TrainingTask:
        labelled = opened.with_task(task.with_qrels({LABELS_SPLIT: labels}))
        fusion = replace(start.fusion, gate=None)
        return label_training_task(card, labelled, encoder, split=LABELS_SPLIT, fusion=fusion)

    if len(judged) < MIN_VALIDATION_QUERIES:
        log.info("adapting %s on %d queries: fixed recipe", card.name, len(judged))
        if not fit_head_too:
            return replace(start, labelled_queries=len(judged))
        head = fit_head(initial, head_task(qrels), FIXED_STEPS, config, start.fusion)
        return replace(start, head=head, labelled_queries=len(judged))

    held = _held_out(judged, seed)
    fitting = qrels.filter(~pl.col("query_id").is_in(held))
    validation = _Validation(
        opened.with_task(
            task.with_qrels({HELD_OUT_SPLIT: qrels.filter(pl.col("query_id").is_in(held))})
        ),
        encoder,
    )
    fusions = fusion_grid(start.fusion)
    scores = validation.ndcg(start.head, fusions)
    best_score, best_fusion, best_steps = scores[0], start.fusion, 0
    for fusion, score in zip(fusions, scores, strict=True):
        if score > best_score:
            best_score, best_fusion = score, fusion
    if fit_head_too:
        for steps, head in head_fits(
            initial, head_task(fitting), HEAD_CHECKPOINTS, config, start.fusion
        ):
            for fusion, score in zip(fusions, validation.ndcg(head, fusions), strict=True):
                if score > best_score:
                    best_score, best_fusion, best_steps = score, fusion, steps
    log.info(
        "adapting %s on %d queries (%d held out): %d head steps, lexical weight %.2f, "
        "feedback %.2f, b %.2f; held-out NDCG@10 %.4f (start %.4f)",
        card.name,
        len(judged),
        len(held),
        best_steps,
        best_fusion.lexical_weight,
        best_fusion.feedback,
        best_fusion.bm25_b,
        best_score,
        scores[0],
    )
    head = start.head
    if best_steps > 0:
        head = fit_head(initial, head_task(qrels), best_steps, config, start.fusion)
    return replace(start, head=head, fusion=best_fusion, labelled_queries=len(judged))


def _base_head(opened: OpenedTask, encoder: FrozenEncoder, qrels: pl.DataFrame) -> ProjectionHead:
    """The head the frozen base starts from (an untrained hypernet's), for a start without one."""
    queries = opened.task.queries.filter(pl.col("query_id").is_in(judged_queries(qrels)))
    vectors = encoder.encode(queries["text"].to_list(), "query")
    return base_head(np.concatenate([opened.doc_vectors, vectors]))
