"""Data assets per task: the card, its corpus, queries and qrels, and the training queries."""

# No `from __future__ import annotations` here: Dagster reads these functions' annotations
# at definition time and needs real types (a string `context` annotation is refused).

import json
from collections.abc import Iterator
from typing import Any

import dagster as dg
import polars as pl
from dagster import AssetExecutionContext

from hydra_core.data.cards import TaskCard, find_card
from hydra_core.data.fingerprints import frame_digest, text_digest
from hydra_core.settings import load_settings
from hydra_pipeline.artifacts import card_record, qrels_long, task_from_frames
from hydra_pipeline.defs.assets.sources import CARD_FILE, DATASET_FILES
from hydra_pipeline.defs.partitions import TASK_PARTITIONS
from hydra_pipeline.defs.project import project
from hydra_pipeline.defs.versions import code_version

GROUP = "data"
KINDS = {"polars", "parquet"}


def frame_output(
    frame: pl.DataFrame, output_name: str = "result", **metadata: Any
) -> dg.Output[pl.DataFrame]:
    """A frame with its content hash as data version (the IO manager adds its row count
    and columns)."""
    return dg.Output(
        frame,
        output_name=output_name,
        data_version=dg.DataVersion(frame_digest(frame)),
        metadata=metadata,
    )


@dg.asset(
    partitions_def=TASK_PARTITIONS,
    deps=[CARD_FILE],
    group_name=GROUP,
    kinds={"yaml"},
    code_version=code_version("hydra_core.data.cards"),
)
def task_card(context: AssetExecutionContext) -> dg.Output[TaskCard]:
    """The task card, validated; its version is its content (comments do not count)."""
    card = find_card(context.partition_key, load_settings().cards_dir)
    content = json.dumps(card_record(card)["card"], sort_keys=True)
    return dg.Output(
        card,
        data_version=dg.DataVersion(text_digest(content)),
        metadata={
            "card_path": dg.MetadataValue.path(str(card.card_path)),
            "source": card.source,
        },
    )


@dg.multi_asset(
    outs={
        "corpus": dg.AssetOut(
            group_name=GROUP, kinds=KINDS, description="Documents: doc_id, title, text."
        ),
        "queries": dg.AssetOut(
            group_name=GROUP, kinds=KINDS, description="All queries: query_id, text."
        ),
        "qrels": dg.AssetOut(
            group_name=GROUP,
            kinds=KINDS,
            description="Judgments of every split: split, query_id, ...",
        ),
    },
    partitions_def=TASK_PARTITIONS,
    deps=[DATASET_FILES],
    code_version=code_version("hydra_core.data.opened_task", "hydra_pipeline.artifacts"),
)
def task_data(task_card: TaskCard) -> Iterator[dg.Output[pl.DataFrame]]:
    """Load the card's dataset (BEIR folder or ir_datasets) once for all three frames."""
    from hydra_core.data.opened_task import load_card_task

    task = load_card_task(task_card)
    yield frame_output(task.corpus, "corpus")
    yield frame_output(task.queries, "queries")
    splits = {split: task.qrels[split].height for split in task.splits}
    yield frame_output(qrels_long(task), "qrels", splits=splits)


def training_queries_asset(query_settings: dict[str, Any]) -> dg.AssetsDefinition:
    """How many queries, and which kind, is the project's choice; its code version hashes it."""

    @dg.asset(
        partitions_def=TASK_PARTITIONS,
        group_name=GROUP,
        kinds=KINDS,
        code_version=code_version(
            "hydra_core.data.training_queries", "hydra_pipeline.artifacts", config=query_settings
        ),
    )
    def training_queries(
        context: AssetExecutionContext,
        corpus: pl.DataFrame,
        queries: pl.DataFrame,
        qrels: pl.DataFrame,
    ) -> dg.Output[pl.DataFrame]:
        """Queries the teachers rank for distillation: train split, or generated; never test."""
        from hydra_core.data.training_queries import training_queries as make_training_queries

        task = task_from_frames(context.partition_key, "", corpus, queries, qrels)
        frame = make_training_queries(task, **query_settings)
        origins = dict(frame.group_by("origin").len().sort("origin").iter_rows())
        return frame_output(frame, origins=origins)

    return training_queries


@dg.definitions
def defs() -> dg.Definitions:
    settings = project().training.training_queries
    return dg.Definitions(assets=[task_card, task_data, training_queries_asset(settings)])
