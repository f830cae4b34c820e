"""The results report across tasks: a markdown table and a chart of NDCG@10 gains."""

# No `from __future__ import annotations` here: Dagster reads these functions' annotations
# at definition time and needs real types (a string `context` annotation is refused).

import dagster as dg
from dagster import AssetExecutionContext

from hydra_core.data.fingerprints import file_fingerprint
from hydra_pipeline.artifacts import CheckpointRecord
from hydra_pipeline.defs.jobs import HYPERNET_ASSET
from hydra_pipeline.defs.metadata import table_value
from hydra_pipeline.defs.partitions import TASK_PARTITIONS
from hydra_pipeline.defs.resources import MetricsDbResource, TrackingResource, WorkspaceResource
from hydra_pipeline.defs.versions import code_version


@dg.asset(
    deps=["task_metrics", "task_robustness"],
    group_name="evaluation",
    kinds={"markdown", "matplotlib", "mlflow"},
    code_version=code_version("hydra_pipeline.results_report"),
    # Eager on the metrics, not the hypernet: a retrained one has no metrics to report yet.
    automation_condition=dg.AutomationCondition.eager().ignore(
        dg.AssetSelection.assets(HYPERNET_ASSET)
    ),
)
def results_report(
    context: AssetExecutionContext,
    workspace: WorkspaceResource,
    metrics_db: MetricsDbResource,
    tracking: TrackingResource,
    hypernet_checkpoint: CheckpointRecord,
) -> dg.MaterializeResult:
    """Per-task NDCG@10 by method for the current checkpoint, also on its MLflow run; its
    headline sentence and table lead the metadata.

    The chart is also inline in the metadata (a base64 data URI): Dagster's UI shows
    it on the asset page, where a file path would be only text.
    """
    from hydra_pipeline.report_chart import inline_image_markdown
    from hydra_pipeline.results_figures import headline_table
    from hydra_pipeline.results_report import publish_report
    from hydra_pipeline.tracking import run_url

    tasks = context.instance.get_dynamic_partitions(TASK_PARTITIONS.name or "task")
    report = publish_report(
        metrics_db.database, tasks, workspace.reports, hypernet_checkpoint, tracking.target()
    )
    markdown, chart = report.files
    url = run_url(hypernet_checkpoint.tracking_uri, hypernet_checkpoint.mlflow_run_id)
    return dg.MaterializeResult(
        data_version=dg.DataVersion(file_fingerprint(markdown)),
        metadata={
            "headline": dg.MetadataValue.text(report.headline),
            "ndcg@10": table_value(headline_table(report.results)),
            **({"mlflow_run": dg.MetadataValue.url(url)} if url is not None else {}),
            "report": dg.MetadataValue.path(str(markdown)),
            "chart": dg.MetadataValue.path(str(chart)),
            "chart_image": dg.MetadataValue.md(inline_image_markdown(chart, "ndcg@10 gains")),
            "tasks": report.results["task"].n_unique(),
        },
    )
