"""Source assets: the card files and dataset folders the pipeline starts from.

Dagster cannot see a file change by itself, so these two observable sources record a
content fingerprint per task (the card sensor and ``hydra run`` observe them; the UI's
"Observe sources" button does too). A changed fingerprint is what makes the task's
downstream assets out of date; an unchanged one is why a second run rebuilds nothing.
"""

# No `from __future__ import annotations` here: Dagster reads these functions' annotations
# at definition time and needs real types (a string `context` annotation is refused).

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from dagster import OpExecutionContext

from hydra_core.data.cards import TaskCard, find_card
from hydra_core.data.fingerprints import card_source_fingerprint, file_fingerprint
from hydra_core.errors import HydraInputError
from hydra_core.settings import load_settings
from hydra_pipeline.defs.partitions import TASK_PARTITIONS

log = logging.getLogger(__name__)

CARD_FILE = dg.AssetKey("card_file")
DATASET_FILES = dg.AssetKey("dataset_files")
DATA_VERSION_TAG = "dagster/data_version"


@dataclass(frozen=True)
class CardState:
    """A task card file as the pipeline last saw it."""

    name: str
    path: Path
    card_version: str
    data_version: str

    def versions(self) -> dict[dg.AssetKey, str]:
        return {CARD_FILE: self.card_version, DATASET_FILES: self.data_version}


def card_state(card: TaskCard) -> CardState:
    if card.card_path is None:
        raise ValueError(f"card {card.name!r} has no file")
    return CardState(
        name=card.name,
        path=card.card_path,
        card_version=file_fingerprint(card.card_path),
        data_version=card_source_fingerprint(card),
    )


def task_states(
    names: Iterable[str], cards_dir: Path
) -> tuple[dict[str, CardState], dict[str, str]]:
    """The card of each named task, and the problem of each one that does not load.

    A broken card (half-saved, invalid) must not stop the others: the sensor reports it and
    looks at it again on its next tick.
    """
    states: dict[str, CardState] = {}
    problems: dict[str, str] = {}
    for name in names:
        try:
            card = find_card(name, cards_dir)
        except HydraInputError as exc:
            problems[name] = str(exc)
            continue
        if card.name != name:
            problems[name] = f"task {name!r} resolves to a card named {card.name!r}"
            continue
        states[name] = card_state(card)
    return states, problems


def latest_versions(
    instance: dg.DagsterInstance, key: dg.AssetKey, partitions: Iterable[str]
) -> dict[str, str]:
    """The last observed fingerprint of ``key`` per partition (absent if never observed)."""
    found: dict[str, str] = {}
    for partition in partitions:
        records = instance.fetch_observations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1
        ).records
        observation = records[0].asset_observation if records else None
        if observation is not None and DATA_VERSION_TAG in observation.tags:
            found[partition] = observation.tags[DATA_VERSION_TAG]
    return found


def changed_observations(
    instance: dg.DagsterInstance, states: dict[str, CardState]
) -> list[dg.AssetObservation]:
    """Observations for the fingerprints that differ from the last ones recorded."""
    events: list[dg.AssetObservation] = []
    for key in (CARD_FILE, DATASET_FILES):
        known = latest_versions(instance, key, states)
        for name, state in states.items():
            version = state.versions()[key]
            if known.get(name) != version:
                events.append(
                    dg.AssetObservation(
                        asset_key=key,
                        partition=name,
                        tags={DATA_VERSION_TAG: version},
                        metadata={"path": dg.MetadataValue.path(str(state.path))},
                    )
                )
    return events


def _observe(context: OpExecutionContext, key: dg.AssetKey) -> dg.DataVersionsByPartition:
    """The current fingerprint of ``key`` for every task partition (the UI's Observe)."""
    partitions = context.instance.get_dynamic_partitions(TASK_PARTITIONS.name or "task")
    states, problems = task_states(partitions, load_settings().cards_dir)
    for problem in problems.values():
        context.log.warning(problem)
    versions = {name: state.versions()[key] for name, state in states.items()}
    return dg.DataVersionsByPartition({name: dg.DataVersion(v) for name, v in versions.items()})


@dg.observable_source_asset(
    key=CARD_FILE,
    partitions_def=TASK_PARTITIONS,
    group_name="sources",
    tags={"dagster/kind/file": ""},  # kinds, as a source asset takes them
    description="A task card YAML file; its version is the file's content hash.",
)
def card_file(context: OpExecutionContext) -> dg.DataVersionsByPartition:
    return _observe(context, CARD_FILE)


@dg.observable_source_asset(
    key=DATASET_FILES,
    partitions_def=TASK_PARTITIONS,
    group_name="sources",
    tags={"dagster/kind/file": ""},  # kinds, as a source asset takes them
    description="The dataset a card points at (BEIR folder files, or an ir_datasets id).",
)
def dataset_files(context: OpExecutionContext) -> dg.DataVersionsByPartition:
    return _observe(context, DATASET_FILES)
