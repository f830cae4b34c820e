"""From a task card to TrainingTasks: queries, teacher rankings, fusion, pairs; labels.

This is the distillation data path of one task, in the order the pipeline runs it;
each step is its own function so the pipeline can store every intermediate result.
A card that declares ``labels`` can add a second stream: pairs from those qrels.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from hydra_core.data.cards import TaskCard
from hydra_core.data.fingerprints import frame_digest
from hydra_core.data.opened_task import OpenedTask
from hydra_core.data.retrieval_task import RetrievalTask
from hydra_core.data.training_queries import training_queries
from hydra_core.encoding.card_parts import card_part_embeddings
from hydra_core.encoding.embeddings import Embeddings
from hydra_core.encoding.encoder import FrozenEncoder
from hydra_core.errors import HydraInputError
from hydra_core.model.fusion_gate import PRIOR_FUSION
from hydra_core.model.score_fusion import FusionParameters, fusion_features
from hydra_core.ranking.rankings import exact_top_k
from hydra_core.ranking.teacher_rankings import (
    document_embeddings,
    query_embeddings,
    ranked_queries,
    teacher_rankings,
)
from hydra_core.ranking.teachers import BM25Params
from hydra_core.training.preferences import PairConfig, distillation_pairs
from hydra_core.training.trainer import TrainingTask

LABELS_SUFFIX = "+labels"
"""Name suffix of the training stream a card's labels add (``scifact+labels``)."""
LABEL_NEGATIVE_DEPTH = 30


def label_split(card: TaskCard, task: RetrievalTask) -> str | None:
    """The split whose qrels the card lets teach, checked against the task's data."""
    if card.labels is None:
        return None
    if card.labels not in task.splits:
        raise HydraInputError(
            f"labels: the task has no {card.labels!r} qrels; its splits are "
            f"{', '.join(task.splits)}",
            path=card.card_path,
            field="labels",
        )
    return card.labels


def label_pairs(
    opened: OpenedTask, encoder: FrozenEncoder, split: str
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Queries of ``split`` and their pairs: a labelled doc vs. the base's top non-relevant.

    A pair's weight is the positive's graded label divided by its query's number of pairs,
    so graded qrels count as graded and every query weighs the same: NFCorpus has queries
    with hundreds of labelled documents, which otherwise dominate (validation NDCG@10 -0.011
    against -0.003 after 300 steps).
    """
    task = opened.task
    queries = task.split_queries(split)
    relevant = task.split_qrels(split).filter(pl.col("score") > 0)
    doc_ids = opened.doc_ids
    indices, _ = exact_top_k(
        encoder.encode(queries["text"].to_list(), "query"),
        opened.doc_vectors,
        LABEL_NEGATIVE_DEPTH,
    )
    retrieved = pl.DataFrame(
        {
            "query_id": np.repeat(queries["query_id"].to_numpy(), indices.shape[1]),
            "neg_doc_id": np.asarray(doc_ids, dtype=object)[indices.reshape(-1)],
        },
        schema_overrides={"query_id": pl.Utf8, "neg_doc_id": pl.Utf8},
    )
    negatives = retrieved.join(
        relevant.select("query_id", pl.col("doc_id").alias("neg_doc_id")),
        on=["query_id", "neg_doc_id"],
        how="anti",
    )
    pairs = relevant.join(negatives, on="query_id").select(
        "query_id",
        pl.col("doc_id").alias("pos_doc_id"),
        "neg_doc_id",
        (pl.col("score").cast(pl.Float64) / pl.len().over("query_id")).alias("weight"),
    )
    return queries, pairs


def training_task(
    card: TaskCard,
    encoder: FrozenEncoder,
    documents: Embeddings,
    queries: Embeddings,
    training: pl.DataFrame,
    pairs: pl.DataFrame,
) -> TrainingTask:
    """The training step's input of one task: its card, base embeddings and pairs, with the
    fingerprint its checkpoint records (the same keys whoever calls it).

    ``queries`` may embed the test queries too (the teachers rank both in one pass); only
    the ``training`` queries are kept, so no test query's text reaches training, not even
    the sample that initialises the base head.
    """
    queries = queries.subset(training["query_id"].to_list())
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


def prepare_training_task(
    card: TaskCard,
    opened: OpenedTask,
    encoder: FrozenEncoder,
    pair_config: PairConfig | None = None,
) -> TrainingTask:
    """The whole teacher data path for one task, the steps the pipeline stores one by one:
    training queries, teacher rankings of them and the test queries (as the pipeline ranks
    and embeds them together), pairs from the training queries, the training task."""
    training = training_queries(opened.task)
    queries = ranked_queries(opened.task, training)
    ranked = teacher_rankings(opened, queries, encoder)
    pairs = distillation_pairs(ranked.fused, training, pair_config)
    return training_task(
        card,
        encoder,
        document_embeddings(opened),
        query_embeddings(encoder, queries),
        training,
        pairs,
    )


def training_streams(
    card: TaskCard, opened: OpenedTask, encoder: FrozenEncoder, *, use_labels: bool
) -> list[TrainingTask]:
    """What one card trains with on ``opened`` (the whole task, or validation's training
    part): the teachers' stream, and with ``use_labels`` its labels stream if it declares
    labels."""
    streams = [prepare_training_task(card, opened, encoder)]
    if use_labels and label_split(card, opened.task) is not None:
        streams.append(label_training_task(card, opened, encoder))
    return streams


def label_training_task(
    card: TaskCard,
    opened: OpenedTask,
    encoder: FrozenEncoder,
    *,
    split: str | None = None,
    fusion: FusionParameters = PRIOR_FUSION,
) -> TrainingTask:
    """The card's labels as a training stream of their own, beside the teachers' pairs.

    Same card, so the labels shape the retriever the card compiles to; its own stream, so
    every step takes a full batch of labelled pairs whatever the number of teacher pairs.
    Its pairs are scored fused with BM25 (:class:`FusionFeatures`): labels are the signal
    stronger than the teachers that can teach a card its fusion, with the head. Chosen
    on validation over fusing the labels into the teachers' RRF as a gold teacher (weight 2):
    see ``LABELLED_TRAINING`` in the trainer.

    ``split`` (default: the card's labels) and ``fusion`` (default: the prior) let
    adaptation fit a head on a user's own judgments, fused as its retriever fuses.
    """
    split = split or label_split(card, opened.task)
    if split is None:
        raise ValueError(f"card {card.name!r} declares no labels")
    queries, pairs = label_pairs(opened, encoder, split)
    labelled = training_task(
        card,
        encoder,
        document_embeddings(opened),
        query_embeddings(encoder, queries),
        queries,
        pairs,
    )
    labelled.name = card.name + LABELS_SUFFIX
    lexical = opened.bm25(BM25Params(b=fusion.bm25_b)).scores(queries["text"].to_list())
    base = labelled.query_vectors.numpy() @ labelled.doc_vectors.numpy().T
    rows = (labelled.query_index, labelled.pos_index, labelled.neg_index)
    labelled.fusion = fusion_features(lexical, base, rows, fusion)
    return labelled
