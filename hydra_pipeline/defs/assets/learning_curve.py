"""The learning curve of a task whose card declares ``labels``: what N judged queries buy
(:mod:`hydra_core.evaluation.learning_curve`, the function ``hydra eval --learning-curve``
calls), stored in DuckDB (table ``learning_curve``), on the hypernet's MLflow run, and as
the asset's metadata.

It costs minutes a task (five draws of each N, three adaptations a draw), so it is in none
of ``hydra run``'s waves (:mod:`hydra_pipeline.defs.jobs`) and is not eager: materialize it
for a task from the Dagster UI, or with ``dagster asset materialize -m
hydra_pipeline.definitions --select learning_curve --partition scifact``. A card without
labels gets no rows (no model loaded).
"""

# No `from __future__ import annotations` here: Dagster reads these functions' annotations
# at definition time and needs real types (a string `context` annotation is refused).

from typing import TYPE_CHECKING, cast

import dagster as dg
import polars as pl
from dagster import AssetExecutionContext

from hydra_core.data.cards import TaskCard
from hydra_core.encoding.embeddings import Embeddings
from hydra_pipeline.artifacts import CheckpointRecord, stored_task, task_from_frames
from hydra_pipeline.defs.assets.data import frame_output
from hydra_pipeline.defs.metadata import table_value
from hydra_pipeline.defs.partitions import TASK_PARTITIONS
from hydra_pipeline.defs.resources import EncoderResource, MetricsDbResource, TrackingResource
from hydra_pipeline.defs.versions import code_version

if TYPE_CHECKING:
    from hydra_core.model.compiled_retriever import CompiledRetriever  # torch: body only


def curve_table(summary: dict[str, dict[str, dict[str, float]]]) -> pl.DataFrame:
    """``curve_summary`` as rows (method, N, mean, std): the metadata table and MLflow's."""
    rows = [
        (method, n, values["mean"], values["std"])
        for method, by_n in summary.items()
        for n, values in by_n.items()
    ]
    schema = {"method": pl.String, "n": pl.String, "mean": pl.Float64, "std": pl.Float64}
    return pl.DataFrame(rows, schema=schema, orient="row")


@dg.asset(
    partitions_def=TASK_PARTITIONS,
    group_name="evaluation",
    kinds={"pytorch", "duckdb", "mlflow"},
    code_version=code_version(
        "hydra_core.evaluation.learning_curve",
        "hydra_pipeline.artifacts",
        "hydra_pipeline.metrics_store",
    ),
)
def learning_curve(
    context: AssetExecutionContext,
    encoder: EncoderResource,
    metrics_db: MetricsDbResource,
    tracking: TrackingResource,
    task_card: TaskCard,
    corpus: pl.DataFrame,
    queries: pl.DataFrame,
    qrels: pl.DataFrame,
    doc_embeddings: Embeddings,
    compiled_retriever: object,
    hypernet_checkpoint: CheckpointRecord,
) -> dg.Output[pl.DataFrame]:
    """NDCG@10 and the other metrics of every point of the task's learning curve on its
    test split (rows of DuckDB's ``learning_curve``); metadata ``curve``: NDCG@10's mean
    and spread over the draws by method and N, and ``curve_text``, the same as aligned
    text. Each mean is logged on the hypernet's MLflow run as
    ``learning_curve/<task>/<method>/n_<n>``."""
    from hydra_core.evaluation.learning_curve import curve_summary, curve_text
    from hydra_core.evaluation.learning_curve import learning_curve as curve
    from hydra_pipeline.metrics_store import (
        LEARNING_CURVE_SCHEMA,
        learning_curve_frame,
        record_learning_curve,
    )
    from hydra_pipeline.tracking import log_metrics

    if task_card.labels is None:
        return frame_output(pl.DataFrame(schema=LEARNING_CURVE_SCHEMA))
    task = task_from_frames(context.partition_key, task_card.source, corpus, queries, qrels)
    opened = stored_task(task, encoder.get(), doc_embeddings)
    start = cast("CompiledRetriever", compiled_retriever)
    points = curve(task_card, opened, encoder.get(), start)
    rows = learning_curve_frame(points)
    run, checkpoint = hypernet_checkpoint.mlflow_run_id, hypernet_checkpoint.checkpoint_id
    dagster_run = context.op_execution_context.run_id
    record_learning_curve(
        metrics_db.database, rows, run_id=run, checkpoint=checkpoint, dagster_run_id=dagster_run
    )
    summary = curve_summary(points)
    table = curve_table(summary)
    if run:
        values = {
            f"learning_curve/{task.name}/{method}/n_{n}": mean
            for method, n, mean in table.select("method", "n", "mean").iter_rows()
        }
        log_metrics(tracking.target().client(), run, values)
    text = dg.MetadataValue.md(f"```\n{curve_text(summary)}\n```")
    return frame_output(rows, curve=table_value(table), curve_text=text)
