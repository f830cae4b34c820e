"""Results tables: every method scored on a task's test split with the same metrics.

Teachers are scored from their rankings; every other row (``hybrid``, ``hydra``,
``hydra-dense``, the ablations and references) is a compiled retriever scored by
:func:`retriever_table`, the one path ``hydra eval``, ``hydra validate`` and the pipeline
share.

A table maps method name to metric name to value, e.g.
``{"bm25": {"ndcg@10": 0.68, "mrr@10": ..., "recall@100": ...}, "base": {...}}``;
every evaluation command prints this shape, per task.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import cast

import numpy as np
import polars as pl

from hydra_core.data.card_schema import EVALUATION_SPLIT
from hydra_core.data.cards import TaskCard, generic_card
from hydra_core.data.opened_task import OpenedTask
from hydra_core.data.retrieval_task import RetrievalTask
from hydra_core.encoding.embeddings import Embeddings
from hydra_core.encoding.encoder import FrozenEncoder
from hydra_core.evaluation.method import HEADLINE_METRIC, Method, in_table_order
from hydra_core.evaluation.metrics import METRIC_NAMES, Scores, evaluate_run, ranking_to_run
from hydra_core.evaluation.report import ResultsTable
from hydra_core.model.compiled_retriever import HYBRID_FUSION, CompiledRetriever
from hydra_core.model.fusion_gate import GATE_FEEDBACK, GATE_WEIGHTS
from hydra_core.model.retriever import ConditionedRetriever, RetrieverIndex
from hydra_core.model.score_fusion import FusionParameters
from hydra_core.ranking.teacher_rankings import FUSED_DEPTH, TeacherRankings
from hydra_core.ranking.teachers import BM25Params

BM25_B_GRID = (0.3, 0.75)
"""BM25 ``b`` values the fusion grids try, the oracle's and validation's (one index each,
built once per corpus)."""
FUSION_GRID_WEIGHTS = (0.2, 0.3, 0.4, 0.5, 0.6)
FUSION_GRID_FEEDBACK = (0.0, 0.5, 1.0)
"""The lexical weights and feedbacks around the prior that validation's fusion grid and
``hydra adapt`` try."""
EVAL_SPLIT = EVALUATION_SPLIT


def score_ranking(ranking: pl.DataFrame, task: RetrievalTask, split: str = EVAL_SPLIT) -> Scores:
    """NDCG@10, MRR@10 and Recall@100 of a ranking frame against a split's qrels.

    Every row of a results table comes from here, so each keeps its per-query values
    (``Scores.per_query``) for the paired significance tests and the ``per_query`` store.
    """
    top = ranking.filter(pl.col("rank") <= FUSED_DEPTH)
    return evaluate_run(ranking_to_run(top), task.qrels_dict(split), METRIC_NAMES)


def baseline_table(
    task: RetrievalTask, teachers: TeacherRankings, split: str = EVAL_SPLIT
) -> ResultsTable:
    """Each teacher alone and their RRF fusion (``teacher``), scored on ``split`` (the
    rankings may hold other queries too, e.g. the training queries ranked with them)."""
    query_ids = task.split_queries(split)["query_id"].implode()

    def scored(ranking: pl.DataFrame) -> Scores:
        return score_ranking(ranking.filter(pl.col("query_id").is_in(query_ids)), task, split)

    table: ResultsTable = {name: scored(frame) for name, frame in teachers.rankings.items()}
    table[Method.TEACHER] = scored(teachers.fused)
    return table


def shuffled_card(card: TaskCard, cards: Sequence[TaskCard]) -> TaskCard:
    """Another task's card for the shuffled-card ablation: the next one by name."""
    others = sorted((c for c in cards if c.name != card.name), key=lambda c: c.name)
    if not others:
        raise ValueError(f"no other task card than {card.name!r} to shuffle with")
    later = [c for c in others if c.name > card.name]
    return (later or others)[0]


def hybrid_retriever() -> CompiledRetriever:
    """The ``hybrid`` row: BM25 and the frozen base at the one fixed weight, no head."""
    return CompiledRetriever(head=None, fusion=HYBRID_FUSION, task=Method.HYBRID)


def oracle_row(
    opened: OpenedTask, encoder: FrozenEncoder, split: str = EVAL_SPLIT
) -> tuple[Scores, FusionParameters]:
    """The ``oracle`` row: of every fusion of the grid (lexical weight x feedback x BM25
    ``b``, frozen base as the dense channel), the one best on ``split`` itself (NDCG@10),
    and its parameters. A ceiling for what a card-chosen fusion could reach, never a result."""
    best: tuple[Scores, FusionParameters] | None = None
    for b in BM25_B_GRID:
        grid = {
            f"{w} {f}": CompiledRetriever(None, FusionParameters(w, feedback=f, bm25_b=b))
            for w in GATE_WEIGHTS
            for f in GATE_FEEDBACK
        }
        table = retriever_table(opened, grid, split, encoder=encoder)
        for name, scores in table.items():
            if best is None or scores[HEADLINE_METRIC] > best[0][HEADLINE_METRIC]:
                best = (cast(Scores, scores), grid[name].fusion)
    assert best is not None
    return best


def card_retrievers(
    retriever: ConditionedRetriever,
    card: TaskCard,
    opened: OpenedTask,
    *,
    shuffled: TaskCard | None,
) -> dict[str, CompiledRetriever]:
    """``hydra`` (the card's whole retriever over ``opened``'s corpus), ``hydra-dense`` (its
    head alone), and the generic-card and another-task's-card ablations. A card's fusion
    reads its profile over the corpus; the generic card says nothing of its task, so it
    gets none (the pool's mean profile)."""
    compiled = retriever.compile_task(card, opened)
    rows: dict[str, CompiledRetriever] = {
        Method.HYDRA: compiled,
        Method.HYDRA_DENSE: compiled.dense_only(),
        Method.HYDRA_GENERIC: retriever.compile(generic_card()),
    }
    if shuffled is not None:
        rows[Method.HYDRA_SHUFFLED] = retriever.compile_task(shuffled, opened)
    return rows


def card_rows(
    retriever: ConditionedRetriever,
    card: TaskCard,
    opened: OpenedTask,
    other_cards: Sequence[TaskCard],
) -> dict[str, CompiledRetriever]:
    """The retrievers of a card's table every caller has: ``hybrid``, then the card's
    (:func:`card_retrievers`; ``hydra-shuffled`` borrows one of ``other_cards``: none, no
    row). They depend on the corpus and the hypernet, never on test queries."""
    others = [other for other in other_cards if other.name != card.name]
    return {
        Method.HYBRID: hybrid_retriever(),
        **card_retrievers(
            retriever, card, opened, shuffled=shuffled_card(card, others) if others else None
        ),
    }


def retriever_table(
    opened: OpenedTask,
    retrievers: Mapping[str, CompiledRetriever],
    split: str = EVAL_SPLIT,
    *,
    encoder: FrozenEncoder | None = None,
    query_embeddings: Embeddings | None = None,
    bm25: BM25Params | None = None,
) -> ResultsTable:
    """Each compiled retriever searching the opened task's corpus (its BM25 index of
    ``bm25``, pinned by default), scored on ``split``. Query vectors come from
    ``query_embeddings`` (stored) or the ``encoder``; the queries' BM25 scores are computed
    once for every row."""
    task = opened.task
    queries = task.split_queries(split)
    query_ids, texts = queries["query_id"].to_list(), queries["text"].to_list()
    if query_embeddings is not None:
        query_vectors = query_embeddings.select(query_ids)
    elif encoder is not None:
        query_vectors = encoder.encode(texts, "query")
    else:
        raise ValueError("retriever_table needs query_embeddings or an encoder")
    lexical_scores: dict[int, np.ndarray] = {}
    table: ResultsTable = {}
    for method, compiled in retrievers.items():
        index = RetrieverIndex.of_task(compiled, opened, bm25=bm25)
        scores = None
        if compiled.fusion.lexical_weight > 0 or compiled.fusion.gate is not None:
            key = id(index.lexical)  # one BM25 index per parameter set, kept by the task
            if key not in lexical_scores:
                lexical_scores[key] = index.lexical_scores(texts)
            scores = lexical_scores[key]
        ranking = index.search(query_ids, texts, FUSED_DEPTH, query_vectors, scores)
        table[method] = score_ranking(ranking, task, split)
    return table


def evaluation_table(
    opened: OpenedTask,
    teachers: TeacherRankings,
    rows: Mapping[str, CompiledRetriever],
    split: str = EVAL_SPLIT,
    *,
    encoder: FrozenEncoder | None = None,
    query_embeddings: Embeddings | None = None,
) -> ResultsTable:
    """The evaluate step of the recipe: the teachers' rows and each retriever's on
    ``split``, in table order; the CLI and the pipeline build every table here."""
    table = baseline_table(opened.task, teachers, split)
    table.update(
        retriever_table(opened, rows, split, encoder=encoder, query_embeddings=query_embeddings)
    )
    return {method: table[method] for method in in_table_order(table)}
