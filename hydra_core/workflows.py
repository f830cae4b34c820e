"""End-to-end workflows behind the CLI: train on cards, evaluate a card, leave one out.

Each is plain library code over the modules it names, so the CLI and the Dagster
pipeline run the very same steps.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from hydra_core.data.cards import TaskCard
from hydra_core.data.tasks import RetrievalTask
from hydra_core.encoding.encoder import FrozenEncoder
from hydra_core.evaluation.method import Method
from hydra_core.evaluation.methods import (
    EVAL_SPLIT,
    baseline_table,
    card_retrievers,
    default_ensemble,
    hybrid_retriever,
    load_card_task,
    retriever_table,
    shuffled_card,
)
from hydra_core.evaluation.perturbations import Perturbation, Robustness, perturbed_task
from hydra_core.evaluation.report import ResultsTable
from hydra_core.model.compiled_retriever import DENSE_ONLY, CompiledRetriever
from hydra_core.model.hypernet import Hypernet
from hydra_core.model.retriever import ConditionedRetriever
from hydra_core.ranking.teacher_ensemble import TeacherEnsemble
from hydra_core.training.head_fitting import refine_retriever, supervised_reference
from hydra_core.training.trainer import TrainConfig, TrainingTask, train_hypernet
from hydra_core.training.training_data import (
    label_split,
    label_training_task,
    prepare_training_task,
)

log = logging.getLogger(__name__)

UNSEEN_NAMES: dict[str, str] = {
    Method.HYDRA: Method.HYDRA_UNSEEN,
    Method.HYDRA_DENSE: Method.HYDRA_UNSEEN_DENSE,
    Method.HYDRA_GENERIC: Method.HYDRA_UNSEEN_GENERIC,
    Method.HYDRA_SHUFFLED: Method.HYDRA_UNSEEN_SHUFFLED,
    Method.HYDRA_REFINED: Method.HYDRA_UNSEEN_REFINED,
}
"""Leave-one-out rows are named as in the pipeline's tables: the hypernet never saw the task."""


def prepare_cards(
    cards: Sequence[TaskCard], encoder: FrozenEncoder, *, use_labels: bool = False
) -> list[TrainingTask]:
    """Teacher rankings, fusion and preference pairs for each card's task.

    ``use_labels`` adds a labels stream for each card that declares ``labels``.
    """
    prepared = []
    for card in cards:
        task = load_card_task(card)
        log.info("preparing %s: %d documents", card.name, task.corpus.height)
        prepared += training_streams(card, task, encoder, use_labels=use_labels)
    return prepared


def training_streams(
    card: TaskCard, task: RetrievalTask, encoder: FrozenEncoder, *, use_labels: bool
) -> list[TrainingTask]:
    """What one card trains with on ``task`` (the whole task, or validation's training
    part): the teachers' stream, and with ``use_labels`` its labels stream if it declares
    labels."""
    streams = [prepare_training_task(card, task, encoder, default_ensemble(task, encoder))]
    if use_labels and label_split(card, task) is not None:
        streams.append(label_training_task(card, task, encoder))
    return streams


def train_on_cards(
    cards: Sequence[TaskCard],
    out_dir: Path,
    encoder: FrozenEncoder,
    config: TrainConfig | None = None,
    *,
    use_labels: bool = False,
    fresh: bool = False,
) -> Hypernet:
    """Train one hypernet on the given tasks and load the checkpoint it wrote.

    ``fresh`` trains from scratch in ``out_dir`` even if it holds another run's training.
    """
    prepared = prepare_cards(cards, encoder, use_labels=use_labels)
    return train_on_prepared(prepared, out_dir, encoder, config, fresh=fresh)


def train_on_prepared(
    tasks: Sequence[TrainingTask],
    out_dir: Path,
    encoder: FrozenEncoder,
    config: TrainConfig | None = None,
    *,
    fresh: bool = False,
) -> Hypernet:
    """Train on already-prepared tasks (so leave-one-out prepares each task once)."""
    config = config or TrainConfig()
    train_hypernet(tasks, config, out_dir, base_model=encoder.model_name, fresh=fresh)
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
    task = load_card_task(card)
    ensemble = default_ensemble(task, encoder)
    rows = _card_rows(
        card, task, hypernet, encoder, ensemble, other_cards, refine_steps, supervised
    )
    return _scored(task, ensemble, rows, encoder)


def _card_rows(
    card: TaskCard,
    task: RetrievalTask,
    hypernet: Hypernet,
    encoder: FrozenEncoder,
    ensemble: TeacherEnsemble,
    other_cards: Sequence[TaskCard],
    refine_steps: int,
    supervised: bool,
) -> dict[str, CompiledRetriever]:
    """The retrievers of :func:`evaluate_card`'s table; they depend on the task's corpus and
    training data, never on its test queries."""
    retriever = ConditionedRetriever(hypernet, encoder)
    others = [other for other in other_cards if other.name != card.name]
    shuffled = shuffled_card(card, others) if others else None
    if shuffled is None:
        log.warning("no other task's card to shuffle with: no hydra-shuffled row for %s", card.name)
    rows = {
        Method.HYBRID: hybrid_retriever(),
        **card_retrievers(retriever, card, shuffled=shuffled),
    }
    if refine_steps > 0:
        rows[Method.HYDRA_REFINED] = refine_retriever(
            rows[Method.HYDRA], task, encoder, ensemble, refine_steps
        )
    reference = supervised_reference(card, task, encoder) if supervised else None
    if reference is not None:
        rows[Method.SUPERVISED_HEAD] = CompiledRetriever(head=reference, fusion=DENSE_ONLY)
    return rows


def _scored(
    task: RetrievalTask,
    ensemble: TeacherEnsemble,
    rows: Mapping[str, CompiledRetriever],
    encoder: FrozenEncoder,
) -> ResultsTable:
    """The teachers' rows and each retriever's, on the task's test queries."""
    table = baseline_table(task, ensemble)
    doc_vectors = encoder.encode(task.doc_texts(), "document")
    table.update(retriever_table(task, rows, doc_vectors, ensemble.lexical, encoder=encoder))
    return table


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
        load_card_task(card),
        hypernet,
        encoder,
        [perturbation],
        other_cards=other_cards,
        refine_steps=refine_steps,
    )
    return robustness


def task_robustness(
    card: TaskCard,
    task: RetrievalTask,
    hypernet: Hypernet,
    encoder: FrozenEncoder,
    perturbations: Sequence[Perturbation],
    *,
    other_cards: Sequence[TaskCard],
    refine_steps: int = 0,
    supervised: bool = True,
) -> list[Robustness]:
    """:func:`evaluate_robustness` for each of ``perturbations`` on an already loaded task
    (the pipeline's stored one): the retrievers are built and the clean queries scored
    once for all of them. ``supervised=False`` leaves out the ``supervised-head`` reference,
    whose fitting costs more than everything else together."""
    ensemble = default_ensemble(task, encoder)
    rows = _card_rows(
        card, task, hypernet, encoder, ensemble, other_cards, refine_steps, supervised
    )
    clean = _scored(task, ensemble, rows, encoder)
    return [
        Robustness(
            perturbation,
            clean=clean,
            perturbed=_scored(
                perturbed_task(task, perturbation, EVAL_SPLIT), ensemble, rows, encoder
            ),
        )
        for perturbation in perturbations
    ]


def leave_one_out(
    cards: Sequence[TaskCard],
    out_root: Path,
    encoder: FrozenEncoder,
    config: TrainConfig | None = None,
    *,
    refine_steps: int = 0,
) -> dict[str, ResultsTable]:
    """For each task: train on all the others, evaluate on it as an unseen task.

    Teachers only, as for any new task; the ``supervised-head`` reference is left to the
    seen-task table, which fits the very same head.
    """
    prepared = {task.name: task for task in prepare_cards(cards, encoder)}
    tables: dict[str, ResultsTable] = {}
    for held_out in cards:
        seen = [card for card in cards if card.name != held_out.name]
        hypernet = train_on_prepared(
            [prepared[card.name] for card in seen],
            out_root / f"without-{held_out.name}",
            encoder,
            config,
        )
        table = evaluate_card(
            held_out,
            hypernet,
            encoder,
            other_cards=seen,
            refine_steps=refine_steps,
            supervised=False,
        )
        tables[held_out.name] = {UNSEEN_NAMES.get(m, m): row for m, row in table.items()}
    return tables
