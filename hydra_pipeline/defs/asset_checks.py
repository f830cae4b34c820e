"""Asset checks: the data is consistent, no test query leaks into training, and hydra keeps
up with the frozen base on every task. A failing check shows red in the Dagster UI; a
failing blocking check also fails its run, and no hypernet is registered past it (see the
``registered_model`` asset)."""

# No `from __future__ import annotations` here: Dagster reads these functions' annotations
# at definition time and needs real types (a string `context` annotation is refused).

import dagster as dg
import polars as pl

from hydra_core.evaluation.method import DIGITS, HEADLINE_METRIC, Method
from hydra_pipeline.defs.metadata import table_value
from hydra_pipeline.defs.partitions import TASK_PARTITIONS
from hydra_pipeline.defs.project import project
from hydra_pipeline.defs.resources import MetricsDbResource

QUALITY_CHECK = dg.AssetCheckKey(dg.AssetKey("task_metrics"), "hydra_within_tolerance_of_base")
"""The check every task's metrics must pass before the hypernet is registered."""


def _no_problem_rows(problems: pl.DataFrame, what: str, checked: int) -> dg.AssetCheckResult:
    """Pass when ``problems`` is empty; otherwise show how many and a few of them."""
    metadata: dict[str, dg.RawMetadataValue] = {what: problems.height, "checked": checked}
    if problems.height:
        metadata["examples"] = table_value(problems.head(5))
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
        additional_ins={"queries": dg.AssetIn()},
        description=f"Hydra's NDCG@10 minus the frozen base's is at least {-tolerance}; "
        "the hypernet is registered only when every task passes.",
        blocking=True,
    )
    def hydra_within_tolerance_of_base(
        metrics_db: MetricsDbResource, task_metrics: pl.DataFrame, queries: pl.DataFrame
    ) -> dg.AssetCheckResult:
        """Shows both NDCG@10 values, the margin and the queries hydra loses most on (from
        the evaluation's per-query rows in DuckDB): what a failure needs looked at."""
        from hydra_pipeline.metrics_store import latest_per_query
        from hydra_pipeline.results_figures import worst_queries
        from hydra_pipeline.stages import hydra_margin, table_from_frame

        table = table_from_frame(task_metrics)
        margin = hydra_margin(table)
        per_query = latest_per_query(metrics_db.database, task_metrics["task"].unique().to_list())
        return dg.AssetCheckResult(
            passed=margin >= -tolerance,
            metadata={
                f"hydra_{HEADLINE_METRIC}": round(table[Method.HYDRA][HEADLINE_METRIC], DIGITS),
                f"base_{HEADLINE_METRIC}": round(table[Method.BASE][HEADLINE_METRIC], DIGITS),
                f"hydra_minus_base_{HEADLINE_METRIC}": round(margin, DIGITS),
                "tolerance": tolerance,
                "worst_queries": table_value(worst_queries(per_query, queries)),
            },
        )

    return dg.Definitions(
        asset_checks=[
            qrels_reference_existing_ids,
            no_test_queries_in_training,
            hydra_within_tolerance_of_base,
        ]
    )
