"""From a task card to TrainingTasks: queries, teacher rankings, fusion, pairs; labels.

This is the distillation data path of one task, in the order the pipeline runs it;
each step is its own function so the pipeline can store every intermediate result.
A card that declares ``labels`` can add a second stream: pairs from those qrels.
"""

from __future__ import annotations

import hashlib

import numpy as np
import polars as pl

from hydra_core.data.cards import TaskCard
from hydra_core.data.tasks import RetrievalTask
from hydra_core.data.training_queries import training_queries
from hydra_core.encoding.card_parts import card_part_embeddings
from hydra_core.encoding.encoder import FrozenEncoder
from hydra_core.errors import HydraInputError
from hydra_core.model.fusion_gate import PRIOR_FUSION
from hydra_core.model.score_fusion import fusion_features
from hydra_core.ranking.rankings import exact_top_k
from hydra_core.ranking.teacher_ensemble import TeacherEnsemble
from hydra_core.ranking.teachers import BM25Teacher
from hydra_core.training.preferences import PairConfig, preference_pairs
from hydra_core.training.trainer import TrainingTask

LABELS_SUFFIX = "+labels"
"""Name suffix of the training stream a card's labels add (``scifact+labels``)."""
LABEL_NEGATIVE_DEPTH = 30


def fused_training_rankings(
    queries: pl.DataFrame, ensemble: TeacherEnsemble
) -> tuple[dict[str, pl.DataFrame], pl.DataFrame]:
    """Each teacher's ranking of the training queries, and their RRF fusion."""
    rankings = ensemble.rank(queries["query_id"].to_list(), queries["text"].to_list())
    return rankings, ensemble.fuse(rankings)


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
    task: RetrievalTask, encoder: FrozenEncoder, split: str
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Queries of ``split`` and their pairs: a labelled doc vs. the base's top non-relevant.

    A pair's weight is the positive's graded label divided by its query's number of pairs,
    so graded qrels count as graded and every query weighs the same: NFCorpus has queries
    with hundreds of labelled documents, which otherwise dominate (validation NDCG@10 -0.011
    against -0.003 after 300 steps).
    """
    queries = task.split_queries(split)
    relevant = task.split_qrels(split).filter(pl.col("score") > 0)
    doc_ids = task.corpus["doc_id"].to_list()
    indices, _ = exact_top_k(
        encoder.encode(queries["text"].to_list(), "query"),
        encoder.encode(task.doc_texts(), "document"),
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


def frame_fingerprint(frame: pl.DataFrame) -> str:
    """A short content hash, logged with training runs to say what data they saw."""
    return hashlib.sha256(frame.hash_rows(seed=0).to_numpy().tobytes()).hexdigest()[:16]


def build_training_task(
    card: TaskCard,
    task: RetrievalTask,
    encoder: FrozenEncoder,
    queries: pl.DataFrame,
    pairs: pl.DataFrame,
) -> TrainingTask:
    """Attach base embeddings (from the encoder cache) to a task's preference pairs."""
    training_task = TrainingTask.from_frames(
        card.name,
        card_part_embeddings(card, encoder),
        queries["query_id"].to_list(),
        encoder.encode(queries["text"].to_list(), "query"),
        task.corpus["doc_id"].to_list(),
        encoder.encode(task.doc_texts(), "document"),
        pairs,
    )
    training_task.fingerprint = {
        "corpus": frame_fingerprint(task.corpus),
        "queries": frame_fingerprint(queries),
        "pairs": frame_fingerprint(pairs),
    }
    return training_task


def prepare_training_task(
    card: TaskCard,
    task: RetrievalTask,
    encoder: FrozenEncoder,
    ensemble: TeacherEnsemble,
    pair_config: PairConfig | None = None,
) -> TrainingTask:
    """The whole teacher data path for one task: training queries to a TrainingTask."""
    queries = training_queries(task)
    _, fused = fused_training_rankings(queries, ensemble)
    pairs = preference_pairs(fused, pair_config)
    return build_training_task(card, task, encoder, queries, pairs)


def label_training_task(
    card: TaskCard, task: RetrievalTask, encoder: FrozenEncoder
) -> TrainingTask:
    """The card's labels as a training stream of their own, beside the teachers' pairs.

    Same card, so the labels shape the retriever the card compiles to; its own stream, so
    every step takes a full batch of labelled pairs whatever the number of teacher pairs.
    Its pairs are scored fused with BM25 (:class:`FusionFeatures`): labels are the signal
    stronger than the teachers that can teach a card its fusion, with the head. Chosen
    on validation over fusing the labels into the teachers' RRF as a gold teacher (weight 2):
    see ``LABELLED_TRAINING`` in workflows.
    """
    split = label_split(card, task)
    if split is None:
        raise ValueError(f"card {card.name!r} declares no labels")
    queries, pairs = label_pairs(task, encoder, split)
    labelled = build_training_task(card, task, encoder, queries, pairs)
    labelled.name = card.name + LABELS_SUFFIX
    doc_ids, texts = task.corpus["doc_id"].to_list(), task.doc_texts()
    lexical = BM25Teacher().index(doc_ids, texts).scores(queries["text"].to_list())
    base = labelled.query_vectors.numpy() @ labelled.doc_vectors.numpy().T
    rows = (labelled.query_index, labelled.pos_index, labelled.neg_index)
    labelled.fusion = fusion_features(lexical, base, rows, PRIOR_FUSION)
    return labelled
