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
from hydra_core.trainer import TrainingTask
from hydra_core.training_queries import training_queries


def fused_training_rankings(
    queries: pl.DataFrame, ensemble: TeacherEnsemble
) -> tuple[dict[str, pl.DataFrame], pl.DataFrame]:
    """Each teacher's ranking of the training queries, and their RRF fusion."""
    rankings = ensemble.rank(queries["query_id"].to_list(), queries["text"].to_list())
    return rankings, ensemble.fuse(rankings)


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
    """The whole data path for one task: training queries to a TrainingTask."""
    queries = training_queries(task)
    _, fused = fused_training_rankings(queries, ensemble)
    pairs = preference_pairs(fused, pair_config)
    return build_training_task(card, task, encoder, queries, pairs)
