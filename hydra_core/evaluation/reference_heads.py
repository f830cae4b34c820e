"""Fitting one head directly, without the hypernet: refine mode and the supervised reference.

- **Refine** ("compile, then polish"): start from the head a card compiles to and take a
  few steps of teacher distillation on queries generated from the new task's own corpus.
- **Supervised head**: the reference a per-task fine-tune would reach with the task's
  training labels: pairs of a labelled document against the base's top non-relevant ones,
  each query weighing the same, trained for the number of steps that scores best on the
  task's validation labels (early stopping, as a careful per-task fine-tune would).

Both optimise the head's ~100K numbers with the hypernet's own losses; the base encoder
stays frozen and nothing is written back to the hypernet. The module sits in ``evaluation``
because the supervised head picks its length by validation scores.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from hydra_core.data.cards import TaskCard
from hydra_core.data.opened_task import OpenedTask
from hydra_core.data.retrieval_task import RetrievalTask
from hydra_core.data.training_queries import generated_queries
from hydra_core.data.validation_split import VALIDATION, split_for_validation
from hydra_core.encoding.encoder import FrozenEncoder
from hydra_core.evaluation.method import HEADLINE_METRIC
from hydra_core.evaluation.methods import score_ranking
from hydra_core.model.compiled_retriever import DENSE_ONLY, CompiledRetriever
from hydra_core.model.head import ProjectionHead
from hydra_core.model.head_generator import geometry_preserving_basis
from hydra_core.model.hypernet import DEFAULT_ARCHITECTURE
from hydra_core.model.retriever import RetrieverIndex
from hydra_core.model.score_fusion import FusionParameters
from hydra_core.ranking.teacher_rankings import teacher_rankings
from hydra_core.training.preferences import preference_pairs
from hydra_core.training.trainer import TrainConfig, TrainingTask, task_loss
from hydra_core.training.training_data import label_pairs, label_split

log = logging.getLogger(__name__)

SUPERVISED_CHECKPOINTS = (100, 200, 400, 800, 1200)
"""Steps after which the supervised head is scored on validation labels; the best is kept."""
SUPERVISED_LEARNING_RATE = 1e-4
"""Chosen on validation (SciFact train holdout, NFCorpus dev): 1e-3 and 3e-4 overfit NFCorpus."""
REFINE_QUERIES = 300
"""Generated queries a refine run distils on: enough for a few hundred steps, in seconds."""


def fit_head(
    initial: ProjectionHead,
    task: TrainingTask,
    steps: int,
    config: TrainConfig,
    fusion: FusionParameters | None = None,
) -> ProjectionHead:
    """``steps`` Adam steps on one task's pairs, starting from ``initial`` (which a task
    without pairs, too small for its teachers to yield any, leaves as it is); with
    ``fusion`` and pairs that carry fusion features, each pair is scored fused with BM25
    (see :func:`task_loss`)."""
    if task.num_pairs == 0:
        return initial
    params = [
        torch.nn.Parameter(t.detach().clone())
        for t in (initial.weight, initial.bias, initial.scale, initial.shift)
    ]
    optimizer = torch.optim.Adam(params, lr=config.learning_rate)
    generator = torch.Generator().manual_seed(config.seed)
    for _ in range(steps):
        batch = torch.randint(task.num_pairs, (config.pairs_per_task,), generator=generator)
        pairwise, infonce = task_loss(tuple(params), task, batch, config, fusion)
        optimizer.zero_grad()
        (pairwise + config.nce_weight * infonce).backward()
        optimizer.step()
    weight, bias, scale, shift = (p.detach() for p in params)
    return ProjectionHead(weight, bias, scale, shift, task=initial.task)


def base_head(
    reference_embeddings: np.ndarray, out_dim: int = DEFAULT_ARCHITECTURE.out_dim
) -> ProjectionHead:
    """The head an untrained hypernet compiles every card to."""
    weight = torch.from_numpy(geometry_preserving_basis(reference_embeddings, out_dim))
    return ProjectionHead(weight, torch.zeros(out_dim), torch.ones(out_dim), torch.zeros(out_dim))


def supervised_head(
    opened: OpenedTask,
    encoder: FrozenEncoder,
    config: TrainConfig,
    split: str = "train",
    checkpoints: tuple[int, ...] = SUPERVISED_CHECKPOINTS,
) -> ProjectionHead:
    """The ``supervised-head`` reference: one head fitted on the labels of ``split``.

    Validation labels pick how long it trains (:func:`split_for_validation`: the ``dev``
    split, else a fifth of ``split`` held out of training; never ``test``); with a held-out
    fifth it is then fitted again on all of ``split`` for that many steps, so it learns
    from the same labels as ``hydra train --labels``.
    """
    task = opened.task
    fitting, validation = split_for_validation(task, split)
    if validation is None:
        raise ValueError(f"task {task.name!r} has no {split!r} labels to fit a head on")
    doc_ids, doc_vectors = opened.doc_ids, opened.doc_vectors

    def training_task(labelled: RetrievalTask) -> TrainingTask:
        queries, pairs = label_pairs(
            OpenedTask(labelled, encoder, doc_vectors=doc_vectors), encoder, split
        )
        return TrainingTask.from_frames(
            task.name,
            torch.zeros(0),
            queries["query_id"].to_list(),
            encoder.encode(queries["text"].to_list(), "query"),
            doc_ids,
            doc_vectors,
            pairs,
        )

    held_out = validation.split_queries(VALIDATION)
    held_out_vectors = encoder.encode(held_out["text"].to_list(), "query")

    def validation_ndcg(head: ProjectionHead) -> float:
        index = RetrieverIndex(CompiledRetriever(head, DENSE_ONLY), doc_ids, doc_vectors, None)
        ranking = index.search(
            held_out["query_id"].to_list(), held_out["text"].to_list(), 10, held_out_vectors
        )
        return score_ranking(ranking, validation, VALIDATION)[HEADLINE_METRIC]

    split_texts = task.split_queries(split)["text"].to_list()
    initial = base_head(np.concatenate([doc_vectors, encoder.encode(split_texts, "query")]))
    best, best_steps, best_score = initial, 0, validation_ndcg(initial)
    for steps, head in head_fits(initial, training_task(fitting), checkpoints, config):
        score = validation_ndcg(head)
        log.info("supervised-head %s: %d steps, validation NDCG@10 %.4f", task.name, steps, score)
        if score > best_score:
            best, best_steps, best_score = head, steps, score
    if fitting is task or best_steps == 0:
        return best
    chosen = [steps for steps in checkpoints if steps <= best_steps]
    return list(head_fits(initial, training_task(task), chosen, config))[-1][1]


def head_fits(
    initial: ProjectionHead,
    task: TrainingTask,
    checkpoints: Sequence[int],
    config: TrainConfig,
    fusion: FusionParameters | None = None,
) -> Iterator[tuple[int, ProjectionHead]]:
    """The head after each checkpoint's number of steps, trained on in segments."""
    head, done = initial, 0
    for steps in checkpoints:
        head, done = fit_head(head, task, steps - done, config, fusion), steps
        yield steps, head


def supervised_reference(
    card: TaskCard, opened: OpenedTask, encoder: FrozenEncoder
) -> ProjectionHead | None:
    """The ``supervised-head`` row of a card that declares labels; ``None`` for the others."""
    split = label_split(card, opened.task)
    if split is None:
        return None
    config = TrainConfig(learning_rate=SUPERVISED_LEARNING_RATE)
    return supervised_head(opened, encoder, config, split)


def refine_head(
    head: ProjectionHead,
    opened: OpenedTask,
    encoder: FrozenEncoder,
    steps: int,
    config: TrainConfig | None = None,
) -> ProjectionHead:
    """Polish a compiled head on the task's own corpus: generated queries, no labels."""
    config = config or TrainConfig()
    queries = generated_queries(opened.task, REFINE_QUERIES, seed=config.seed)
    training_task = TrainingTask.from_frames(
        opened.name,
        torch.zeros(0),
        queries["query_id"].to_list(),
        encoder.encode(queries["text"].to_list(), "query"),
        opened.doc_ids,
        opened.doc_vectors,
        preference_pairs(teacher_rankings(opened, queries, encoder).fused),
    )
    if training_task.num_pairs == 0:
        log.warning(
            "%s: no preference pairs to refine on (%s); head left as compiled",
            opened.name,
            training_task.size,
        )
    return fit_head(head, training_task, steps, config)


def refine_retriever(
    compiled: CompiledRetriever,
    opened: OpenedTask,
    encoder: FrozenEncoder,
    steps: int,
) -> CompiledRetriever:
    """A compiled retriever whose head is refined (:func:`refine_head`); fusion unchanged."""
    if compiled.head is None:
        raise ValueError("only a retriever with a head can be refined")
    return compiled.with_head(refine_head(compiled.head, opened, encoder, steps))
