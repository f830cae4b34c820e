"""The results report: written to the workspace and attached to the checkpoint's MLflow run.

Its markdown (:mod:`hydra_pipeline.report_markdown`) opens with its answer in a sentence
and a glossary of the methods; its chart (:mod:`hydra_pipeline.report_chart`) shows per-task
NDCG@10 gains of the rows that matter; both render the figures of
:mod:`hydra_pipeline.results_figures`. Every section lists the tasks in one order
(alphabetical, as the store returns them). It is built from the latest results table of the
metrics store (one row per task and method, one column per metric), so the report,
``hydra metrics`` and the MLflow run always show the same numbers; its significance tests
read the same evaluations' per-query rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from hydra_core.atomic import write_text_atomic
from hydra_core.evaluation.method import HEADLINE_METRIC
from hydra_core.evaluation.metrics import METRIC_NAMES
from hydra_pipeline.artifacts import CheckpointRecord
from hydra_pipeline.metrics_store import (
    latest_fusion,
    latest_long,
    latest_per_query,
    latest_robustness,
)
from hydra_pipeline.report_chart import ndcg_chart
from hydra_pipeline.report_markdown import (
    full_markdown_table,
    glossary_markdown,
    headline,
    in_pool_note,
    markdown_table,
    pool_markdown,
    robustness_markdown,
    significance_markdown,
)
from hydra_pipeline.results_figures import (
    GAIN_REFERENCE,
    checkpoint_results,
    headline_metrics,
    pool_frame,
    significance_tests,
    table_methods,
)
from hydra_pipeline.tracking import (
    TrackingTarget,
    log_headline_metrics,
    log_report,
    log_task_metrics,
)

MARKDOWN_FILE = "results.md"
CHART_FILE = "ndcg_at_10.png"


@dataclass(frozen=True)
class Report:
    """A written report: its files, its headline sentence and the results it shows."""

    markdown: Path
    chart: Path
    headline: str
    results: pl.DataFrame

    @property
    def files(self) -> list[Path]:
        return [self.markdown, self.chart]


def write_report(
    results: pl.DataFrame,
    folder: Path,
    *,
    checkpoint: str = "",
    run_id: str = "",
    missing: list[str] | None = None,
    per_query: pl.DataFrame | None = None,
    robustness: pl.DataFrame | None = None,
    in_pool: Sequence[str] = (),
    fusion: pl.DataFrame | None = None,
) -> Report:
    """Write ``results.md`` and the NDCG@10 gain chart into ``folder``.

    The report opens with its :func:`headline` and a glossary of the methods it shows.

    With ``per_query`` (the evaluations' per-query rows), a section gives the paired
    significance test of hydra (and hydra-unseen) against each reference on every task;
    with ``robustness`` rows, a section gives each method's drop on perturbed queries.
    ``in_pool`` names the tasks whose test labels taught the checkpoint's fusion gate.
    Tasks with a ``hydra-unseen`` row get a leave-one-task-out section, with ``fusion``
    (the store's ``latest_fusion`` rows) the fusion each card compiled to beside the
    oracle's.
    """
    results = results.sort("task", maintain_order=True)  # one task order in every section
    if per_query is not None:
        per_query = per_query.sort("task", maintain_order=True)
    if robustness is not None:
        robustness = robustness.sort("task", maintain_order=True)
    chart = ndcg_chart(results, folder / CHART_FILE, per_query=per_query)
    tests = significance_tests(per_query) if per_query is not None else []
    provenance = []
    if checkpoint:
        provenance.append(f"checkpoint `{checkpoint}`")
    if run_id:
        provenance.append(f"MLflow run `{run_id}`")
    answer = headline(results, tests)
    pool = pool_frame(results)
    text = "\n\n".join(
        [
            "# Hydra results",
            f"**{answer}**",
            "Test split of every task; "
            + (", ".join(provenance) if provenance else "baselines only")
            + ".",
            "## Methods",
            glossary_markdown(table_methods(results)),
            f"## {HEADLINE_METRIC} by method",
            markdown_table(results),
            *([in_pool_note(in_pool)] if in_pool else []),
            f"![{HEADLINE_METRIC} gain over {GAIN_REFERENCE} by task]({CHART_FILE})",
            *(
                [f"## Significance of {HEADLINE_METRIC} differences", significance_markdown(tests)]
                if tests
                else []
            ),
            *(
                [
                    "## Tasks known only by their card (leave one task out)",
                    pool_markdown(pool, fusion),
                ]
                if not pool.is_empty()
                else []
            ),
            *(
                [
                    f"## Robustness: {HEADLINE_METRIC} on perturbed test queries",
                    robustness_markdown(robustness),
                ]
                if robustness is not None and not robustness.is_empty()
                else []
            ),
            "## All metrics",
            full_markdown_table(results),
            *(
                [f"Not yet evaluated with this checkpoint: {', '.join(sorted(missing))}."]
                if missing
                else []
            ),
        ]
    )
    markdown = folder / MARKDOWN_FILE
    write_text_atomic(markdown, text + "\n")
    return Report(markdown, chart, answer, results)


def publish_report(
    database: str,
    tasks: Sequence[str],
    folder: Path,
    record: CheckpointRecord,
    target: TrackingTarget | None,
) -> Report:
    """Write the report for ``record``'s checkpoint and attach it to its MLflow run.

    Rows are each task's latest evaluation with this checkpoint (and its latest robustness
    evaluation); they are also logged on the training run as its final per-task metrics,
    its headline metrics and a results table, so MLflow, DuckDB and the report agree.
    """
    from hydra_core.model.fusion_gate import taught_on_test  # torch: not for every import

    results = checkpoint_results(database, tasks, record.checkpoint_id)
    evaluated = set(results["task"].to_list())
    per_query = latest_per_query(database, tasks)
    report = write_report(
        results,
        folder,
        checkpoint=record.checkpoint_id,
        run_id=record.mlflow_run_id,
        missing=[task for task in tasks if task not in evaluated],
        per_query=per_query.filter(pl.col("checkpoint") == record.checkpoint_id),
        robustness=latest_robustness(database, tasks).filter(
            pl.col("checkpoint") == record.checkpoint_id
        ),
        in_pool=sorted(taught_on_test(record.extra.get("fusion_labels", {})) & evaluated),
        fusion=latest_fusion(database, tasks).filter(pl.col("checkpoint") == record.checkpoint_id),
    )
    if target is not None and record.mlflow_run_id:
        long = latest_long(database, tasks).filter(pl.col("checkpoint") == record.checkpoint_id)
        log_task_metrics(target, record.mlflow_run_id, long)
        log_headline_metrics(target, record.mlflow_run_id, headline_metrics(results))
        metrics = [m for m in METRIC_NAMES if m in results.columns]
        table = report.results.select("task", "method", *metrics)
        log_report(target, record.mlflow_run_id, report.files, table)
    return report
