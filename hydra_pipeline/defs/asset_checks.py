"""Asset checks: the data is consistent, no test query leaks into training, and hydra keeps
up with the frozen base on every task. A failing check shows red in the Dagster UI; a
failing blocking check also fails its run, and no hypernet is registered past it (see the
``registered_model`` asset)."""

# No `from __future__ import annotations` here: Dagster reads these functions' annotations
# at definition time and needs real types (a string `context` annotation is refused).

import dagster as dg
import polars as pl

from hydra_pipeline.defs.partitions import TASK_PARTITIONS
from hydra_pipeline.defs.project import project

QUALITY_CHECK = dg.AssetCheckKey(dg.AssetKey("task_metrics"), "hydra_within_tolerance_of_base")
"""The check every task's metrics must pass before the hypernet is registered."""


def _no_problem_rows(problems: pl.DataFrame, what: str, checked: int) -> dg.AssetCheckResult:
    """Pass when ``problems`` is empty; otherwise show how many and a few of them."""
    metadata: dict[str, dg.RawMetadataValue] = {what: problems.height, "checked": checked}
    if problems.height:
        metadata["examples"] = dg.MetadataValue.md(f"```\n{problems.head(5)}\n```")
    return dg.AssetCheckResult(passed=problems.is_empty(), metadata=metadata)


@dg.asset_check(
    asset="qrels",
    partitions_def=TASK_PARTITIONS,
    additional_ins={"corpus": dg.AssetIn(), "queries": dg.AssetIn()},
    description="Every judgment names an existing document and query.",
)
def qrels_reference_existing_ids(
    qrels: pl.DataFrame, corpus: pl.DataFrame, queries: pl.DataFrame
) -> dg.AssetCheckResult:
    from hydra_pipeline.stages import dangling_qrels

    return _no_problem_rows(dangling_qrels(corpus, queries, qrels), "dangling", qrels.height)


@dg.asset_check(
    asset="training_queries",
    partitions_def=TASK_PARTITIONS,
    additional_ins={"queries": dg.AssetIn(), "qrels": dg.AssetIn()},
    description="No test query (by id or by text) is among the training queries.",
    blocking=True,
)
def no_test_queries_in_training(
    training_queries: pl.DataFrame, queries: pl.DataFrame, qrels: pl.DataFrame
) -> dg.AssetCheckResult:
    from hydra_pipeline.stages import leaked_test_queries

    leaked = leaked_test_queries(training_queries, queries, qrels)
    return _no_problem_rows(leaked, "leaked", training_queries.height)


@dg.definitions
def defs() -> dg.Definitions:
    """The quality check's tolerance is the project's."""
    tolerance = project().tolerance

    @dg.asset_check(
        asset=QUALITY_CHECK.asset_key,
        name=QUALITY_CHECK.name,
        partitions_def=TASK_PARTITIONS,
        description=f"Hydra's NDCG@10 minus the frozen base's is at least {-tolerance}; "
        "the hypernet is registered only when every task passes.",
        blocking=True,
    )
    def hydra_within_tolerance_of_base(task_metrics: pl.DataFrame) -> dg.AssetCheckResult:
        from hydra_pipeline.stages import hydra_margin, table_from_frame

        margin = hydra_margin(table_from_frame(task_metrics))
        return dg.AssetCheckResult(
            passed=margin >= -tolerance,
            metadata={"hydra_minus_base_ndcg@10": round(margin, 4), "tolerance": tolerance},
        )

    return dg.Definitions(
        asset_checks=[
            qrels_reference_existing_ids,
            no_test_queries_in_training,
            hydra_within_tolerance_of_base,
        ]
    )
