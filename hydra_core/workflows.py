"""End-to-end workflows behind the CLI: train on cards, evaluate a card, leave one out.

Each is plain library code over the modules it names, so the CLI and the Dagster
pipeline run the very same steps.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from hydra_core.data.cards import TaskCard
from hydra_core.data.opened_task import OpenedTask
from hydra_core.encoding.encoder import FrozenEncoder
from hydra_core.evaluation.adaptation import adapt, load_labels, sample_labels
from hydra_core.evaluation.fusion_examples import card_fusion_examples
from hydra_core.evaluation.learning_curve import CurvePoint, learning_curve
from hydra_core.evaluation.method import Method
from hydra_core.evaluation.methods import (
    EVAL_SPLIT,
    baseline_table,
    card_rows,
    evaluation_table,
    oracle_row,
)
from hydra_core.evaluation.perturbations import Perturbation, Robustness, perturbed_task
from hydra_core.evaluation.reference_heads import refine_retriever, supervised_reference
from hydra_core.evaluation.report import ResultsTable
from hydra_core.model.compiled_retriever import DENSE_ONLY, CompiledRetriever
from hydra_core.model.fusion_gate import FusionExample
from hydra_core.model.hypernet import DEFAULT_ARCHITECTURE, Hypernet, HypernetConfig
from hydra_core.model.retriever import ConditionedRetriever
from hydra_core.model.score_fusion import FusionParameters
from hydra_core.ranking.teacher_rankings import TeacherRankings, teacher_rankings
from hydra_core.training.trainer import TrainConfig, TrainingTask, train_hypernet
from hydra_core.training.training_data import training_streams

log = logging.getLogger(__name__)

UNSEEN_NAMES: dict[str, str] = {
    Method.HYDRA: Method.HYDRA_UNSEEN,
    Method.HYDRA_DENSE: Method.HYDRA_UNSEEN_DENSE,
    Method.HYDRA_GENERIC: Method.HYDRA_UNSEEN_GENERIC,
    Method.HYDRA_SHUFFLED: Method.HYDRA_UNSEEN_SHUFFLED,
    Method.HYDRA_REFINED: Method.HYDRA_UNSEEN_REFINED,
}
"""Leave-one-out rows are named as in the pipeline's tables: the hypernet never saw the task."""


class PreparedCards(NamedTuple):
    """What training reads of each card's task, the task opened once for both."""

    streams: list[TrainingTask]
    fusion_examples: dict[str, list[FusionExample]]

    def pooled_examples(self) -> list[FusionExample]:
        """Every card's fusion examples, in one list."""
        return [example for examples in self.fusion_examples.values() for example in examples]


def prepare_cards(
    cards: Sequence[TaskCard], encoder: FrozenEncoder, *, use_labels: bool = False
) -> PreparedCards:
    """Teacher rankings, fusion and preference pairs for each card's task (``use_labels``
    adds a labels stream for each card that declares ``labels``), and its fusion examples:
    the task and its synthetic variants, on the labels it may teach with (none without)."""
    streams: list[TrainingTask] = []
    examples: dict[str, list[FusionExample]] = {}
    for card in cards:
        opened = OpenedTask.of_card(card, encoder)
        log.info("preparing %s: %d documents", card.name, opened.task.corpus.height)
        streams += training_streams(card, opened, encoder, use_labels=use_labels)
        log.info("scoring the fusion grid on %s and its variants", card.name)
        examples[card.name] = card_fusion_examples(card, opened, encoder)
    return PreparedCards(streams, examples)


def train_on_cards(
    cards: Sequence[TaskCard],
    out_dir: Path,
    encoder: FrozenEncoder,
    config: TrainConfig | None = None,
    *,
    use_labels: bool = False,
    fresh: bool = False,
    architecture: HypernetConfig = DEFAULT_ARCHITECTURE,
) -> Hypernet:
    """Train one hypernet on the given tasks (the head on their teachers' pairs, the fusion
    gate on the labels each may teach with) and load the checkpoint it wrote.

    ``fresh`` trains from scratch in ``out_dir`` even if it holds another run's training.
    """
    prepared = prepare_cards(cards, encoder, use_labels=use_labels)
    return train_on_prepared(
        prepared.streams,
        out_dir,
        encoder,
        config,
        fresh=fresh,
        architecture=architecture,
        fusion_examples=prepared.pooled_examples(),
    )


def train_on_prepared(
    tasks: Sequence[TrainingTask],
    out_dir: Path,
    encoder: FrozenEncoder,
    config: TrainConfig | None = None,
    *,
    fresh: bool = False,
    architecture: HypernetConfig = DEFAULT_ARCHITECTURE,
    fusion_examples: Sequence[FusionExample] = (),
) -> Hypernet:
    """The training step on already-prepared tasks (so leave-one-out prepares each task
    once); the pipeline's hypernet assets reach the same ``train_hypernet`` with them.
    Without ``fusion_examples`` every card keeps the prior fusion."""
    config = config or TrainConfig()
    if not fusion_examples:
        log.warning("no task with labels to learn the fusion from: every card keeps the prior")
    train_hypernet(
        tasks,
        config,
        out_dir,
        base_model=encoder.model_name,
        architecture=architecture,
        fresh=fresh,
        fusion_examples=fusion_examples,
    )
    return Hypernet.load(out_dir)


def evaluate_card(
    card: TaskCard,
    hypernet: Hypernet,
    encoder: FrozenEncoder,
    *,
    other_cards: Sequence[TaskCard],
    refine_steps: int = 0,
    supervised: bool = True,
) -> ResultsTable:
    """The full table for one task: the teachers, ``hybrid``, and the card's retriever
    (``hydra``), its head alone (``hydra-dense``) and the card ablations
    (``hydra-shuffled`` borrows the card of one of ``other_cards``: none, no row).

    With ``refine_steps`` it adds ``hydra-refined`` (the compiled head polished on the
    task's own corpus); with ``supervised``, a card that declares ``labels`` also gets the
    ``supervised-head`` reference fitted on them.
    """
    opened = OpenedTask.of_card(card, encoder)
    rows = _card_rows(card, opened, hypernet, encoder, other_cards, refine_steps, supervised)
    return _scored(opened, rows, encoder)


def adapt_card(
    card: TaskCard,
    hypernet: Hypernet,
    encoder: FrozenEncoder,
    labels: str,
    *,
    queries: int | None = None,
    seed: int = 0,
) -> CompiledRetriever:
    """``hydra adapt``: the card's compiled retriever fitted to the judgments ``labels`` (a
    split of its task or a qrels file), on ``queries`` of them drawn with ``seed`` (all by
    default)."""
    opened = OpenedTask.of_card(card, encoder)
    qrels = sample_labels(load_labels(opened.task, labels), queries, seed)
    compiled = _compiled(card, opened, hypernet, encoder)
    return adapt(compiled, card, opened, encoder, qrels, seed=seed)


def card_learning_curve(
    card: TaskCard,
    hypernet: Hypernet,
    encoder: FrozenEncoder,
    on_point: Callable[[CurvePoint], None] | None = None,
) -> list[CurvePoint]:
    """``hydra eval --learning-curve``: the card's learning curve on its test split."""
    opened = OpenedTask.of_card(card, encoder)
    compiled = _compiled(card, opened, hypernet, encoder)
    return learning_curve(card, opened, encoder, compiled, on_point=on_point)


def _compiled(
    card: TaskCard, opened: OpenedTask, hypernet: Hypernet, encoder: FrozenEncoder
) -> CompiledRetriever:
    """The card's retriever over ``opened``, as every entry point compiles it."""
    return ConditionedRetriever(hypernet, encoder).compile_task(card, opened)


def _card_rows(
    card: TaskCard,
    opened: OpenedTask,
    hypernet: Hypernet,
    encoder: FrozenEncoder,
    other_cards: Sequence[TaskCard],
    refine_steps: int,
    supervised: bool,
) -> dict[str, CompiledRetriever]:
    """The retrievers of :func:`evaluate_card`'s table; they depend on the task's corpus and
    training data, never on its test queries."""
    if not [other for other in other_cards if other.name != card.name]:
        log.warning("no other task's card to shuffle with: no hydra-shuffled row for %s", card.name)
    rows = card_rows(ConditionedRetriever(hypernet, encoder), card, opened, other_cards)
    if refine_steps > 0:
        rows[Method.HYDRA_REFINED] = refine_retriever(
            rows[Method.HYDRA], opened, encoder, refine_steps
        )
    reference = supervised_reference(card, opened, encoder) if supervised else None
    if reference is not None:
        rows[Method.SUPERVISED_HEAD] = CompiledRetriever(head=reference, fusion=DENSE_ONLY)
    return rows


def _test_rankings(opened: OpenedTask, encoder: FrozenEncoder) -> TeacherRankings:
    return teacher_rankings(opened, opened.task.split_queries(EVAL_SPLIT), encoder)


def task_baselines(opened: OpenedTask, encoder: FrozenEncoder) -> ResultsTable:
    """``bm25``, ``base`` and ``teacher`` on the task's test split (``hydra baselines``)."""
    return baseline_table(opened.task, _test_rankings(opened, encoder))


def _scored(
    opened: OpenedTask, rows: Mapping[str, CompiledRetriever], encoder: FrozenEncoder
) -> ResultsTable:
    """The teachers' rows and each retriever's, on the task's test queries."""
    return evaluation_table(opened, _test_rankings(opened, encoder), rows, encoder=encoder)


def evaluate_robustness(
    card: TaskCard,
    hypernet: Hypernet,
    encoder: FrozenEncoder,
    perturbation: Perturbation,
    *,
    other_cards: Sequence[TaskCard],
    refine_steps: int = 0,
) -> Robustness:
    """The card's full table on its test queries as they are and as ``perturbation`` leaves
    them: the same retrievers (built once: they never see test queries) scored on both."""
    (robustness,) = task_robustness(
        card,
        OpenedTask.of_card(card, encoder),
        hypernet,
        encoder,
        [perturbation],
        other_cards=other_cards,
        refine_steps=refine_steps,
    )
    return robustness


def task_robustness(
    card: TaskCard,
    opened: OpenedTask,
    hypernet: Hypernet,
    encoder: FrozenEncoder,
    perturbations: Sequence[Perturbation],
    *,
    other_cards: Sequence[TaskCard],
    refine_steps: int = 0,
    supervised: bool = True,
) -> list[Robustness]:
    """:func:`evaluate_robustness` for each of ``perturbations`` on an already opened task
    (the pipeline's stored one): the retrievers are built and the clean queries scored
    once for all of them. ``supervised=False`` leaves out the ``supervised-head`` reference,
    whose fitting costs more than everything else together."""
    rows = _card_rows(card, opened, hypernet, encoder, other_cards, refine_steps, supervised)
    clean = _scored(opened, rows, encoder)
    return [
        Robustness(
            perturbation,
            clean=clean,
            perturbed=_scored(
                opened.with_task(perturbed_task(opened.task, perturbation, EVAL_SPLIT)),
                rows,
                encoder,
            ),
        )
        for perturbation in perturbations
    ]


@dataclass(frozen=True)
class HeldOut:
    """A task evaluated as unseen: its table (with the ``oracle`` ceiling) and the fusion
    its card compiled to, the generic card's, and the oracle's."""

    table: ResultsTable
    fusion: dict[str, FusionParameters]


def held_out_table(
    training: Sequence[TrainingTask],
    held_out: TaskCard,
    out_dir: Path,
    encoder: FrozenEncoder,
    config: TrainConfig | None = None,
    *,
    other_cards: Sequence[TaskCard],
    refine_steps: int = 0,
    fusion_examples: Mapping[str, Sequence[FusionExample]] | None = None,
) -> HeldOut:
    """Train on ``training`` (the head) and on ``fusion_examples`` of the other tasks (the
    gate), and evaluate ``held_out`` as an unseen task, in one call: the rows named as
    leave-one-out tables name them (:data:`UNSEEN_NAMES`). No label of ``held_out``, of any
    split, reaches either; the ``supervised-head`` reference is left to the seen-task
    table."""
    others = [
        example
        for name, examples in (fusion_examples or {}).items()
        if name != held_out.name
        for example in examples
    ]
    hypernet = train_on_prepared(training, out_dir, encoder, config, fusion_examples=others)
    opened = OpenedTask.of_card(held_out, encoder)
    rows = _card_rows(held_out, opened, hypernet, encoder, other_cards, refine_steps, False)
    table = {UNSEEN_NAMES.get(m, m): row for m, row in _scored(opened, rows, encoder).items()}
    oracle, oracle_fusion = oracle_row(opened, encoder)
    table[Method.ORACLE] = oracle
    fusion: dict[str, FusionParameters] = {
        Method.HYDRA_UNSEEN: rows[Method.HYDRA].fusion,
        Method.HYDRA_UNSEEN_GENERIC: rows[Method.HYDRA_GENERIC].fusion,
        Method.ORACLE: oracle_fusion,
    }
    return HeldOut(table, fusion)


def leave_one_out(
    cards: Sequence[TaskCard],
    out_root: Path,
    encoder: FrozenEncoder,
    config: TrainConfig | None = None,
    *,
    refine_steps: int = 0,
) -> dict[str, HeldOut]:
    """For each task: train on all the others (head and gate), evaluate on it as an unseen
    task (each task's training data and fusion examples prepared once for all the folds)."""
    prepared = prepare_cards(cards, encoder)
    streams = {task.name: task for task in prepared.streams}
    tables: dict[str, HeldOut] = {}
    for held_out in cards:
        seen = [card for card in cards if card.name != held_out.name]
        tables[held_out.name] = held_out_table(
            [streams[card.name] for card in seen],
            held_out,
            out_root / f"without-{held_out.name}",
            encoder,
            config,
            other_cards=seen,
            refine_steps=refine_steps,
            fusion_examples=prepared.fusion_examples,
        )
    return tables
