"""Fitting one head directly, without the hypernet: refine mode and the supervised reference.

- **Refine** ("compile, then polish"): start from the head a card compiles to and take a
  few steps of teacher distillation on queries generated from the new task's own corpus.
- **Supervised head**: the reference a per-task fine-tune would reach with the task's
  training labels: pairs of a labelled document against the base's top non-relevant ones.

Both optimise the head's ~100K numbers with the hypernet's own losses; the base encoder
stays frozen and nothing is written back to the hypernet.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import torch

from hydra_core.encoder import FrozenEncoder
from hydra_core.head import ProjectionHead
from hydra_core.head_generator import geometry_preserving_basis
from hydra_core.preferences import preference_pairs
from hydra_core.rankings import exact_top_k
from hydra_core.tasks import RetrievalTask
from hydra_core.teacher_ensemble import TeacherEnsemble
from hydra_core.trainer import TrainConfig, TrainingTask, task_loss
from hydra_core.training_data import fused_training_rankings
from hydra_core.training_queries import generated_queries

SUPERVISED_NEGATIVE_DEPTH = 30
REFINE_QUERIES = 300
"""Generated queries a refine run distils on: enough for a few hundred steps, in seconds."""


def fit_head(
    initial: ProjectionHead, task: TrainingTask, steps: int, config: TrainConfig
) -> ProjectionHead:
    """``steps`` Adam steps on one task's pairs, starting from ``initial``."""
    params = [
        torch.nn.Parameter(t.detach().clone())
        for t in (initial.weight, initial.bias, initial.scale, initial.shift)
    ]
    optimizer = torch.optim.Adam(params, lr=config.learning_rate)
    generator = torch.Generator().manual_seed(config.seed)
    for _ in range(steps):
        batch = torch.randint(task.num_pairs, (config.pairs_per_task,), generator=generator)
        pairwise, infonce = task_loss(tuple(params), task, batch, config)
        optimizer.zero_grad()
        (pairwise + config.nce_weight * infonce).backward()
        optimizer.step()
    weight, bias, scale, shift = (p.detach() for p in params)
    return ProjectionHead(weight, bias, scale, shift, task=initial.task)


def base_head(reference_embeddings: np.ndarray, out_dim: int = 256) -> ProjectionHead:
    """The head an untrained hypernet compiles every card to."""
    weight = torch.from_numpy(geometry_preserving_basis(reference_embeddings, out_dim))
    return ProjectionHead(weight, torch.zeros(out_dim), torch.ones(out_dim), torch.zeros(out_dim))


def supervised_pairs(
    task: RetrievalTask, encoder: FrozenEncoder, split: str = "train"
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Training queries of ``split`` and their pairs: labelled doc vs. base top non-relevant.

    A pair's weight is the positive's graded label, so graded qrels count as graded.
    """
    queries = task.split_queries(split)
    relevant = task.split_qrels(split).filter(pl.col("score") > 0)
    doc_ids = task.corpus["doc_id"].to_list()
    indices, _ = exact_top_k(
        encoder.encode(queries["text"].to_list(), "query"),
        encoder.encode(task.doc_texts(), "document"),
        SUPERVISED_NEGATIVE_DEPTH,
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
        pl.col("score").cast(pl.Float64).alias("weight"),
    )
    return queries, pairs


def supervised_head(
    task: RetrievalTask,
    encoder: FrozenEncoder,
    config: TrainConfig,
    steps: int,
    split: str = "train",
) -> ProjectionHead:
    """The ``supervised-head`` reference: one head fitted on the task's training labels."""
    queries, pairs = supervised_pairs(task, encoder, split)
    doc_vectors = encoder.encode(task.doc_texts(), "document")
    query_vectors = encoder.encode(queries["text"].to_list(), "query")
    training_task = TrainingTask.from_frames(
        task.name,
        torch.zeros(0),
        queries["query_id"].to_list(),
        query_vectors,
        task.corpus["doc_id"].to_list(),
        doc_vectors,
        pairs,
    )
    reference = np.concatenate([doc_vectors, query_vectors])
    return fit_head(base_head(reference, config.out_dim), training_task, steps, config)


def refine_head(
    head: ProjectionHead,
    task: RetrievalTask,
    encoder: FrozenEncoder,
    ensemble: TeacherEnsemble,
    steps: int,
    config: TrainConfig | None = None,
) -> ProjectionHead:
    """Polish a compiled head on the task's own corpus: generated queries, no labels."""
    config = config or TrainConfig()
    queries = generated_queries(task, REFINE_QUERIES, seed=config.seed)
    _, fused = fused_training_rankings(queries, ensemble)
    training_task = TrainingTask.from_frames(
        task.name,
        torch.zeros(0),
        queries["query_id"].to_list(),
        encoder.encode(queries["text"].to_list(), "query"),
        task.corpus["doc_id"].to_list(),
        encoder.encode(task.doc_texts(), "document"),
        preference_pairs(fused),
    )
    return fit_head(head, training_task, steps, config)
