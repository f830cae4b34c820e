"""End-to-end workflows behind the CLI: train on cards, evaluate a card, leave one out.

Each is plain library code over the modules it names, so the CLI and the Dagster
pipeline run the very same steps.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from hydra_core.cards import TaskCard
from hydra_core.encoder import FrozenEncoder
from hydra_core.evaluation import (
    baseline_table,
    default_ensemble,
    hydra_table,
    load_card_task,
    shuffled_card,
)
from hydra_core.hypernet import Hypernet
from hydra_core.report import ResultsTable
from hydra_core.retriever import ConditionedRetriever
from hydra_core.trainer import TrainConfig, TrainingTask, train_hypernet
from hydra_core.training_data import prepare_training_task

log = logging.getLogger(__name__)


def prepare_cards(cards: Sequence[TaskCard], encoder: FrozenEncoder) -> list[TrainingTask]:
    """Teacher rankings, fusion and preference pairs for each card's task."""
    prepared = []
    for card in cards:
        task = load_card_task(card)
        log.info("preparing %s: %d documents", card.name, task.corpus.height)
        prepared.append(prepare_training_task(card, task, encoder, default_ensemble(task, encoder)))
    return prepared


def train_on_cards(
    cards: Sequence[TaskCard],
    out_dir: Path,
    encoder: FrozenEncoder,
    config: TrainConfig | None = None,
) -> Hypernet:
    """Train one hypernet on the given tasks and load the checkpoint it wrote."""
    return train_on_prepared(prepare_cards(cards, encoder), out_dir, encoder, config)


def train_on_prepared(
    tasks: Sequence[TrainingTask],
    out_dir: Path,
    encoder: FrozenEncoder,
    config: TrainConfig | None = None,
) -> Hypernet:
    """Train on already-prepared tasks (so leave-one-out prepares each task once)."""
    train_hypernet(tasks, config or TrainConfig(), out_dir, base_model=encoder.model_name)
    return Hypernet.load(out_dir)


def evaluate_card(
    card: TaskCard,
    hypernet: Hypernet,
    encoder: FrozenEncoder,
    *,
    other_cards: Sequence[TaskCard],
) -> ResultsTable:
    """The full table for one task: bm25, base, teacher and the three hydra variants."""
    task = load_card_task(card)
    table = baseline_table(task, default_ensemble(task, encoder))
    retriever = ConditionedRetriever(hypernet, encoder)
    table.update(hydra_table(task, card, retriever, shuffled=shuffled_card(card, other_cards)))
    return table


def leave_one_out(
    cards: Sequence[TaskCard],
    out_root: Path,
    encoder: FrozenEncoder,
    config: TrainConfig | None = None,
) -> dict[str, ResultsTable]:
    """For each task: train on all the others, evaluate on it as an unseen task."""
    prepared = dict(zip([card.name for card in cards], prepare_cards(cards, encoder), strict=True))
    tables: dict[str, ResultsTable] = {}
    for held_out in cards:
        seen = [card for card in cards if card.name != held_out.name]
        hypernet = train_on_prepared(
            [prepared[card.name] for card in seen],
            out_root / f"without-{held_out.name}",
            encoder,
            config,
        )
        tables[held_out.name] = evaluate_card(held_out, hypernet, encoder, other_cards=seen)
    return tables
