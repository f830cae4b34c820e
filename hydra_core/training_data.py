"""From a task card to a TrainingTask: queries, teacher rankings, fusion, pairs.

This is the distillation data path of one task, in the order the pipeline runs it;
each step is its own function so the pipeline can store every intermediate result.
"""

from __future__ import annotations

import hashlib

import polars as pl

from hydra_core.card_encoder import card_part_embeddings
from hydra_core.cards import TaskCard
from hydra_core.encoder import FrozenEncoder
from hydra_core.preferences import PairConfig, preference_pairs
from hydra_core.tasks import RetrievalTask
from hydra_core.teacher_ensemble import TeacherEnsemble
from hydra_core.teachers import GOLD, gold_ranking
from hydra_core.trainer import TrainingTask
from hydra_core.training_queries import training_queries

LABEL_SPLIT = "train"


def fused_training_rankings(
    queries: pl.DataFrame,
    ensemble: TeacherEnsemble,
    *,
    labels: pl.DataFrame | None = None,
    label_weight: float = 2.0,
) -> tuple[dict[str, pl.DataFrame], pl.DataFrame]:
    """Each teacher's ranking of the training queries, and their RRF fusion.

    With ``labels`` (the task's training qrels) a gold teacher joins the fusion with
    ``label_weight``, so labelled documents lead the fused orderings that pairs come from.
    """
    query_ids = queries["query_id"].to_list()
    rankings = ensemble.rank(query_ids, queries["text"].to_list())
    if labels is None:
        return rankings, ensemble.fuse(rankings)
    rankings[GOLD] = gold_ranking(labels, query_ids)
    return rankings, ensemble.fuse(rankings, extra_weights={GOLD: label_weight})


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
    *,
    use_labels: bool = False,
) -> TrainingTask:
    """The whole data path for one task: training queries to a TrainingTask.

    ``use_labels`` adds the task's ``train`` qrels as a gold teacher, when it has them.
    """
    queries = training_queries(task)
    labels = task.split_qrels(LABEL_SPLIT) if use_labels and LABEL_SPLIT in task.splits else None
    _, fused = fused_training_rankings(queries, ensemble, labels=labels)
    pairs = preference_pairs(fused, pair_config)
    return build_training_task(card, task, encoder, queries, pairs)
