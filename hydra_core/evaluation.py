"""Results tables: every method scored on a task's test split with the same metrics.

A table maps method name to metric name to value, e.g.
``{"bm25": {"ndcg@10": 0.68, "mrr@10": ..., "recall@100": ...}, "base": {...}}``;
every evaluation command prints this shape, per task.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from hydra_core.cards import TaskCard, generic_card
from hydra_core.encoder import FrozenEncoder
from hydra_core.head import ProjectionHead
from hydra_core.metrics import METRIC_NAMES, evaluate_run
from hydra_core.rankings import ranking_to_run
from hydra_core.report import ResultsTable
from hydra_core.retriever import ConditionedRetriever, HeadIndex
from hydra_core.tasks import RetrievalTask, load_task
from hydra_core.teacher_ensemble import FUSED_DEPTH, TeacherEnsemble
from hydra_core.teachers import BM25Teacher, DenseTeacher

EVAL_SPLIT = "test"


def load_card_task(card: TaskCard) -> RetrievalTask:
    """The task a card describes; relative folder sources resolve against the card file."""
    base_dir = card.card_path.parent if card.card_path is not None else None
    return load_task(card.source, base_dir=base_dir, name=card.name)


def default_ensemble(task: RetrievalTask, encoder: FrozenEncoder) -> TeacherEnsemble:
    """BM25 plus the frozen base, unweighted RRF: the ``teacher`` baseline."""
    return TeacherEnsemble(
        task.corpus["doc_id"].to_list(),
        task.doc_texts(),
        dense=[DenseTeacher(encoder, name="base")],
        bm25=BM25Teacher(),
    )


def score_ranking(
    ranking: pl.DataFrame, task: RetrievalTask, split: str = EVAL_SPLIT
) -> dict[str, float]:
    """NDCG@10, MRR@10 and Recall@100 of a ranking frame against a split's qrels."""
    top = ranking.filter(pl.col("rank") <= FUSED_DEPTH)
    return evaluate_run(ranking_to_run(top), task.qrels_dict(split), METRIC_NAMES)


def baseline_table(
    task: RetrievalTask, ensemble: TeacherEnsemble, split: str = EVAL_SPLIT
) -> ResultsTable:
    """Each teacher alone and their RRF fusion (``teacher``) on ``split``."""
    queries = task.split_queries(split)
    rankings = ensemble.rank(queries["query_id"].to_list(), queries["text"].to_list())
    table = {name: score_ranking(frame, task, split) for name, frame in rankings.items()}
    table["teacher"] = score_ranking(ensemble.fuse(rankings), task, split)
    return table


def shuffled_card(card: TaskCard, cards: Sequence[TaskCard]) -> TaskCard:
    """Another task's card for the shuffled-card ablation: the next one by name."""
    others = sorted((c for c in cards if c.name != card.name), key=lambda c: c.name)
    if not others:
        raise ValueError(f"no other task card than {card.name!r} to shuffle with")
    later = [c for c in others if c.name > card.name]
    return (later or others)[0]


def hydra_table(
    task: RetrievalTask,
    card: TaskCard,
    retriever: ConditionedRetriever,
    *,
    shuffled: TaskCard | None,
    split: str = EVAL_SPLIT,
) -> ResultsTable:
    """Hydra with the task's card, with a generic card, and with another task's card
    (``shuffled``; no such row without one)."""
    cards = {"hydra": card, "hydra-generic": generic_card()}
    if shuffled is not None:
        cards["hydra-shuffled"] = shuffled
    doc_vectors = retriever.encoder.encode(task.doc_texts(), "document")
    return {
        method: score_head(
            task, retriever.compile(method_card), retriever.encoder, doc_vectors, split
        )
        for method, method_card in cards.items()
    }


def score_head(
    task: RetrievalTask,
    head: ProjectionHead,
    encoder: FrozenEncoder,
    doc_vectors: np.ndarray,
    split: str = EVAL_SPLIT,
) -> dict[str, float]:
    """Metrics of searching the task's corpus (its base ``doc_vectors``) through one head.

    Callers scoring several heads read the corpus' vectors from the cache once and pass them.
    """
    index = HeadIndex(head, encoder, task.corpus["doc_id"].to_list(), doc_vectors)
    queries = task.split_queries(split)
    ranking = index.search(queries["query_id"].to_list(), queries["text"].to_list(), FUSED_DEPTH)
    return score_ranking(ranking, task, split)
