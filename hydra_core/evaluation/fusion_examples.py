"""Fusion examples: a labelled task scored at every point of the gate's grid, per query.

The labels are the ones the task may teach with (its card's ``labels`` split, else ``train``,
else, for a collection judged only on ``test``, those test labels: such a task may train the
gate judged on *other* tasks, never one judged on itself; leave-one-task-out keeps that).
The dense channel is the frozen base, so an example does not depend on any hypernet and is
computed once per task.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import polars as pl
import torch

from hydra_core.data.cards import TaskCard
from hydra_core.data.opened_task import OpenedTask
from hydra_core.data.retrieval_task import RetrievalTask
from hydra_core.data.synthetic_tasks import synthetic_variant, variant_names
from hydra_core.encoding.encoder import FrozenEncoder
from hydra_core.evaluation.metrics import evaluate_run, ranking_to_run
from hydra_core.model.fusion_gate import GATE_FEEDBACK, GATE_WEIGHTS, FusionExample
from hydra_core.model.score_fusion import (
    QUERY_EVIDENCE,
    DenseChannel,
    FusionParameters,
    fused_top_k,
    score_evidence,
    text_evidence,
    top_rows,
)
from hydra_core.model.task_profile import PROFILE_FEATURES, TaskProfile, card_task_profile
from hydra_core.ranking.rankings import ranking_frame
from hydra_core.ranking.teachers import BM25Index, BM25Params

MAX_QUERIES = 300
"""Labelled queries an example keeps (a seeded sample): the grid is 33 searches of them."""
_DEPTH = 100
_GRID_SHAPE = (len(GATE_WEIGHTS), len(GATE_FEEDBACK))


def teaching_split(card: TaskCard, task: RetrievalTask) -> str | None:
    """The split whose labels may teach the fusion: the card's, else train, else test."""
    for split in (card.labels, "train", "test"):
        if split is not None and split in task.qrels:
            return split
    return None


def fusion_example(
    card: TaskCard, opened: OpenedTask, split: str, encoder: FrozenEncoder
) -> FusionExample:
    """``opened``'s queries of ``split`` scored over the grid with the base and its BM25."""
    task, doc_vectors = opened.task, opened.doc_vectors
    lexical = opened.bm25(BM25Params())
    queries = task.split_queries(split)
    if queries.height > MAX_QUERIES:
        queries = queries.sample(MAX_QUERIES, seed=0)
    query_ids, texts = queries["query_id"].to_list(), queries["text"].to_list()
    query_vectors = encoder.encode(texts, "query")
    lexical_scores = lexical.scores(texts)
    doc_ids = task.corpus["doc_id"].to_list()
    qrels = task.qrels_dict(split)
    ndcg = np.zeros((len(query_ids), len(GATE_WEIGHTS), len(GATE_FEEDBACK)))
    grid = itertools.product(enumerate(GATE_WEIGHTS), enumerate(GATE_FEEDBACK))
    for (i, weight), (j, feedback) in grid:
        params = FusionParameters(lexical_weight=weight, feedback=feedback)
        rows, scores = fused_top_k(lexical_scores, query_vectors, doc_vectors, params, _DEPTH)
        run = ranking_to_run(ranking_frame(query_ids, doc_ids, rows, scores))
        per_query = evaluate_run(run, qrels, ["ndcg@10"]).per_query
        ndcg[:, i, j] = [per_query.get(query, {}).get("ndcg@10", 0.0) for query in query_ids]
    return FusionExample(
        task=task.name,
        split=split,
        profile=card_task_profile(card, opened, encoder),
        evidence=query_evidence(texts, lexical_scores, query_vectors, doc_vectors, lexical),
        ndcg=ndcg,
    )


def card_fusion_examples(
    card: TaskCard, opened: OpenedTask, encoder: FrozenEncoder
) -> list[FusionExample]:
    """The examples ``card``'s task teaches the gate with: the task itself and each of its
    synthetic variants (:mod:`hydra_core.data.synthetic_tasks`), all on its teaching
    split; none for a task without labels."""
    split = teaching_split(card, opened.task)
    if split is None:
        return []
    examples = []
    for kind in (None, *variant_names(opened.task)):
        task, variant_card = (
            (opened.task, card) if kind is None else synthetic_variant(opened.task, card, kind)
        )
        variant = opened if kind is None else OpenedTask(task, encoder)
        examples.append(fusion_example(variant_card, variant, split, encoder))
    return examples


def query_evidence(
    texts: Sequence[str],
    lexical_scores: np.ndarray,
    query_vectors: np.ndarray,
    doc_vectors: np.ndarray,
    lexical: BM25Index,
) -> np.ndarray:
    """Each query's :data:`~hydra_core.model.score_fusion.QUERY_EVIDENCE`, as a gated
    search computes it on its first pass."""
    scores = torch.as_tensor(lexical_scores, dtype=torch.float32)
    dense = DenseChannel.of_scores(
        torch.as_tensor(query_vectors @ doc_vectors.T, dtype=torch.float32), _DEPTH
    )
    measured = score_evidence(scores, top_rows(scores, _DEPTH), dense).numpy()
    return np.concatenate([text_evidence(texts, lexical), measured], 1).astype(np.float64)


_FRAME_SCHEMA = {
    "task": pl.String,
    "split": pl.String,
    **dict.fromkeys((*PROFILE_FEATURES, *QUERY_EVIDENCE), pl.Float64),
    "ndcg": pl.Array(pl.Float64, len(GATE_WEIGHTS) * len(GATE_FEEDBACK)),
}


def examples_frame(examples: Sequence[FusionExample]) -> pl.DataFrame:
    """The examples as one table, a row a query (so the pipeline stores them as parquet):
    task, split, the profile's and the evidence's columns, and the query's grid, flat."""
    frames = [pl.DataFrame(schema=_FRAME_SCHEMA)]
    for example in examples:
        n = len(example.ndcg)
        columns = {
            "task": [example.task] * n,
            "split": [example.split] * n,
            **{name: [value] * n for name, value in example.profile.to_dict().items()},
            **{name: example.evidence[:, i] for i, name in enumerate(QUERY_EVIDENCE)},
            "ndcg": example.ndcg.reshape(n, -1),
        }
        frames.append(pl.DataFrame(columns, schema=_FRAME_SCHEMA))
    return pl.concat(frames)


def examples_from_frame(frame: pl.DataFrame) -> list[FusionExample]:
    """:func:`examples_frame` read back, the examples in their stored order."""
    examples = []
    for (task, split), rows in frame.group_by("task", "split", maintain_order=True):
        first = rows.row(0, named=True)
        examples.append(
            FusionExample(
                task=str(task),
                split=str(split),
                profile=TaskProfile.from_dict({name: first[name] for name in PROFILE_FEATURES}),
                evidence=rows.select(QUERY_EVIDENCE).to_numpy().astype(np.float64),
                ndcg=rows["ndcg"].to_numpy().reshape(rows.height, *_GRID_SHAPE),
            )
        )
    return examples
