"""Validation: the labels every recipe choice is made on, so no choice ever sees a test split.

Which queries validate is :mod:`hydra_core.data.validation_split`'s to say; this module
measures on them.

:func:`validation_curves` (``hydra validate``) trains hypernets as ``hydra train`` and
``hydra eval --loo`` do, on the training parts, and after every epoch scores the validation
queries with the task's own card, another task's card and the generic card: the curve a
recipe change (steps, pairs, teachers, losses) is judged on.

:func:`fusion_grid` (``hydra validate --fusion-grid``) trains nothing: it scores the
retriever's form (lexical weight, feedback, BM25's ``b``) over a grid with the frozen base
as the dense channel, and so measures how far each task's best fusion lies above the prior
every card compiles to: the most a card-decided fusion could add there.
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hydra_core.data.cards import TaskCard
from hydra_core.data.opened_task import OpenedTask, load_card_task
from hydra_core.data.retrieval_task import RetrievalTask
from hydra_core.data.validation_split import DEV_SPLIT, VALIDATION, split_for_validation
from hydra_core.encoding.encoder import FrozenEncoder
from hydra_core.errors import HydraInputError
from hydra_core.evaluation.method import HEADLINE_METRIC, Method
from hydra_core.evaluation.methods import (
    BM25_B_GRID,
    FUSION_GRID_FEEDBACK,
    FUSION_GRID_WEIGHTS,
    card_retrievers,
    hybrid_retriever,
    retriever_table,
    shuffled_card,
)
from hydra_core.evaluation.report import ResultsTable
from hydra_core.model.compiled_retriever import DENSE_ONLY, CompiledRetriever
from hydra_core.model.fusion_gate import PRIOR_FUSION
from hydra_core.model.hypernet import Hypernet
from hydra_core.model.retriever import ConditionedRetriever
from hydra_core.model.score_fusion import FusionParameters
from hydra_core.ranking.teachers import BM25Params
from hydra_core.training.trainer import TrainConfig, TrainingTask, train_hypernet
from hydra_core.training.training_data import training_streams


def _split_tasks(
    cards: Sequence[TaskCard],
) -> dict[str, tuple[RetrievalTask, RetrievalTask | None]]:
    """Each card's task cut by :func:`split_for_validation`; refuses when none can validate."""
    tasks = {card.name: split_for_validation(load_card_task(card)) for card in cards}
    if all(held is None for _, held in tasks.values()):
        names = ", ".join(card.name for card in cards)
        raise HydraInputError(f"none of {names} has dev or train qrels to validate on")
    return tasks


@dataclass(frozen=True)
class ValidationRow:
    """One validation task's NDCG@10 after ``steps`` training steps of one hypernet."""

    hypernet: str
    """``all`` (trained on every task) or ``without-<task>`` (leave one out)."""
    steps: int
    task: str
    base: float
    gains: dict[str, float]
    """NDCG@10 change over the frozen base: ``hybrid``, ``hydra``, ``hydra-dense``,
    ``hydra-generic``, ``hydra-shuffled``."""


def validation_curves(
    cards: Sequence[TaskCard],
    encoder: FrozenEncoder,
    config: TrainConfig,
    *,
    leave_one_out: bool = False,
    use_labels: bool = False,
    on_row: Callable[[ValidationRow], None] | None = None,
) -> list[ValidationRow]:
    """Validation NDCG@10 after every epoch: one hypernet on all tasks, or one per left-out task.

    ``use_labels`` adds the labels streams of cards that declare labels (their held-out
    queries excluded), as ``hydra train --labels`` does.
    """
    tasks = _split_tasks(cards)
    held = {name: task for name, (_, task) in tasks.items() if task is not None}
    streams = {
        card.name: _streams(card, tasks[card.name][0], encoder, use_labels) for card in cards
    }
    references = {name: _References.of(task, encoder) for name, task in held.items()}
    validated = [card for card in cards if card.name in held]
    if leave_one_out:
        if len(cards) < 2:
            raise HydraInputError("leave-one-out validation needs at least two tasks")
        runs = [
            (f"without-{card.name}", [c for c in cards if c.name != card.name], [card])
            for card in validated
        ]
    else:
        runs = [("all", list(cards), validated)]
    rows: list[ValidationRow] = []
    for label, training_cards, evaluated in runs:
        with tempfile.TemporaryDirectory(prefix=f"hydra-validate-{label}-") as out:
            scorer = _EpochScorer(
                hypernet=label,
                checkpoint=Path(out),
                evaluated=evaluated,
                shuffle_pool=training_cards if leave_one_out else list(cards),
                held=held,
                references=references,
                encoder=encoder,
                steps_per_epoch=config.steps_per_epoch,
                on_row=on_row,
            )
            training = [stream for card in training_cards for stream in streams[card.name]]
            train_hypernet(training, config, out, base_model=encoder.model_name, on_epoch=scorer)
            rows.extend(scorer.rows)
    return rows


@dataclass
class _EpochScorer:
    """Scores the validation tasks on the checkpoint training writes after each epoch."""

    hypernet: str
    checkpoint: Path
    evaluated: list[TaskCard]
    shuffle_pool: list[TaskCard]
    held: dict[str, RetrievalTask]
    references: dict[str, _References]
    encoder: FrozenEncoder
    steps_per_epoch: int
    on_row: Callable[[ValidationRow], None] | None
    rows: list[ValidationRow] = field(default_factory=list)

    def __call__(self, epoch: int, _: dict[str, float]) -> None:
        retriever = ConditionedRetriever(Hypernet.load(self.checkpoint), self.encoder)
        for card in self.evaluated:
            shuffled = shuffled_card(card, self.shuffle_pool)
            task, reference = self.held[card.name], self.references[card.name]
            rows = card_retrievers(retriever, card, reference.opened, shuffled=shuffled)
            table = reference.score(task, rows, self.encoder)
            row = ValidationRow(
                hypernet=self.hypernet,
                steps=epoch * self.steps_per_epoch,
                task=card.name,
                base=reference.base,
                gains={
                    Method.HYBRID: reference.hybrid - reference.base,
                    **{m: scores[HEADLINE_METRIC] - reference.base for m, scores in table.items()},
                },
            )
            self.rows.append(row)
            if self.on_row is not None:
                self.on_row(row)


def _streams(
    card: TaskCard, task: RetrievalTask, encoder: FrozenEncoder, use_labels: bool
) -> list[TrainingTask]:
    if use_labels and card.labels == DEV_SPLIT:
        raise HydraInputError(
            "labels: dev is the validation split; validation cannot also train on it",
            path=card.card_path,
            field="labels",
        )
    return training_streams(card, OpenedTask(task, encoder), encoder, use_labels=use_labels)


@dataclass(frozen=True)
class _References:
    """A validation task's corpus as retrievers search it, and the rows that do not train."""

    opened: OpenedTask
    base: float
    hybrid: float

    @classmethod
    def of(cls, task: RetrievalTask, encoder: FrozenEncoder) -> _References:
        opened = OpenedTask(task, encoder)
        fixed: dict[str, CompiledRetriever] = {
            Method.BASE: CompiledRetriever(None, DENSE_ONLY),
            Method.HYBRID: hybrid_retriever(),
        }
        table = retriever_table(opened, fixed, VALIDATION, encoder=encoder)
        base, hybrid = table[Method.BASE], table[Method.HYBRID]
        return cls(opened, base[HEADLINE_METRIC], hybrid[HEADLINE_METRIC])

    def score(
        self,
        task: RetrievalTask,
        retrievers: dict[str, CompiledRetriever],
        encoder: FrozenEncoder,
    ) -> ResultsTable:
        return retriever_table(self.opened.with_task(task), retrievers, VALIDATION, encoder=encoder)


_PRIOR_POINT = (PRIOR_FUSION.lexical_weight, PRIOR_FUSION.feedback, BM25Params().b)


@dataclass(frozen=True)
class FusionGridRow:
    """One fusion setting's validation NDCG@10 on one task (frozen base as the dense channel)."""

    task: str
    lexical_weight: float
    feedback: float
    bm25_b: float
    ndcg: float
    gain: float
    """Over the prior every card compiles to (``PRIOR_FUSION``, BM25's default ``b``)."""

    @property
    def is_prior(self) -> bool:
        return (self.lexical_weight, self.feedback, self.bm25_b) == _PRIOR_POINT


def fusion_grid(
    cards: Sequence[TaskCard],
    encoder: FrozenEncoder,
    on_row: Callable[[FusionGridRow], None] | None = None,
) -> list[FusionGridRow]:
    """Every grid point on every validation task, the prior among them."""
    rows: list[FusionGridRow] = []
    points = list(itertools.product(FUSION_GRID_WEIGHTS, FUSION_GRID_FEEDBACK))
    retrievers = {
        f"{w} {f}": CompiledRetriever(None, FusionParameters(w, feedback=f)) for w, f in points
    }
    for name, (_, task) in _split_tasks(cards).items():
        if task is None:
            continue
        opened = OpenedTask(task, encoder)
        scores: dict[tuple[float, float, float], float] = {}
        for b in BM25_B_GRID:
            table = retriever_table(
                opened, retrievers, VALIDATION, encoder=encoder, bm25=BM25Params(b=b)
            )
            for (w, f), label in zip(points, retrievers, strict=True):
                scores[(w, f, b)] = table[label][HEADLINE_METRIC]
        prior = scores[_PRIOR_POINT]
        for (w, f, b), ndcg in sorted(scores.items()):
            row = FusionGridRow(name, w, f, b, ndcg, ndcg - prior)
            rows.append(row)
            if on_row is not None:
                on_row(row)
    return rows
