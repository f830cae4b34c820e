"""The results report: a markdown table and a chart of per-task NDCG@10 by method.

It is built from the latest results table of the metrics store (one row per task and
method, one column per metric), so the report, ``hydra metrics`` and the MLflow run always
show the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import polars as pl

from hydra_core.artifacts import CheckpointRecord
from hydra_core.atomic import atomic_path, write_text_atomic
from hydra_core.metrics import METRIC_NAMES
from hydra_core.metrics_store import METHOD_RANK, latest_long, latest_results
from hydra_core.tracking import TrackingTarget, log_report, log_task_metrics

HEADLINE_METRIC = "ndcg@10"
BASE_METHOD = "base"
MARKDOWN_FILE = "results.md"
CHART_FILE = "ndcg_at_10.png"


def _methods(results: pl.DataFrame) -> list[str]:
    """Methods in the store's order (baselines, hydra, ablations, references), then others."""
    present = results["method"].unique(maintain_order=True).to_list()
    return sorted(present, key=lambda method: METHOD_RANK.get(method, len(METHOD_RANK)))


def headline_table(results: pl.DataFrame, metric: str = HEADLINE_METRIC) -> pl.DataFrame:
    """Tasks as rows, methods as columns, ``metric`` as values (methods in table order)."""
    wide = results.pivot(on="method", index="task", values=metric)
    return wide.select("task", *[m for m in _methods(results) if m in wide.columns])


def markdown_table(results: pl.DataFrame, metric: str = HEADLINE_METRIC) -> str:
    """``metric`` per task and method as a markdown table; each task's best value in bold.

    With a ``base`` column, two more rows give each method's mean and worst gain over the
    frozen base, over the tasks that have it: the figures the quality targets are set in.
    """
    table = headline_table(results, metric)
    methods = table.columns[1:]
    lines = [
        "| task | " + " | ".join(methods) + " |",
        "|---|" + "---:|" * len(methods),
    ]
    for row in table.iter_rows(named=True):
        values = [row[m] for m in methods]
        best = max((v for v in values if v is not None), default=None)
        cells = ["" if v is None else (f"**{v:.4f}**" if v == best else f"{v:.4f}") for v in values]
        lines.append(f"| {row['task']} | " + " | ".join(cells) + " |")
    if BASE_METHOD in methods:
        gains = table.select([(pl.col(m) - pl.col(BASE_METHOD)).alias(m) for m in methods])
        for label, summary in (("mean", gains.mean()), ("worst", gains.min())):
            # (+ 0.0 turns a rounded -0.0 into 0.0, so an exact tie never prints as a loss)
            cells = ["" if v is None else f"{round(v, 4) + 0.0:+.4f}" for v in summary.row(0)]
            lines.append(f"| {label} gain over base | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def full_markdown_table(results: pl.DataFrame) -> str:
    """Every metric, one row per task and method."""
    metrics = [m for m in METRIC_NAMES if m in results.columns]
    lines = [
        "| task | method | " + " | ".join(metrics) + " |",
        "|---|---|" + "---:|" * len(metrics),
    ]
    for row in results.iter_rows(named=True):
        cells = " | ".join(f"{row[m]:.4f}" for m in metrics)
        lines.append(f"| {row['task']} | {row['method']} | {cells} |")
    return "\n".join(lines)


def ndcg_chart(results: pl.DataFrame, path: Path, metric: str = HEADLINE_METRIC) -> Path:
    """Grouped bars: one group per task, one bar per method."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede pyplot's import
    import matplotlib.pyplot as plt

    table = headline_table(results, metric)
    methods = table.columns[1:]
    tasks = table["task"].to_list()
    width = 0.8 / max(len(methods), 1)
    figure, axes = plt.subplots(figsize=(max(6.0, 1.6 * len(tasks) + 2), 4.0), dpi=100)
    for i, method in enumerate(methods):
        values = [v if v is not None else 0.0 for v in table[method].to_list()]
        positions = [t + (i - (len(methods) - 1) / 2) * width for t in range(len(tasks))]
        axes.bar(positions, values, width, label=method)
    axes.set_xticks(range(len(tasks)), tasks)
    axes.set_ylabel(metric)
    axes.set_ylim(0, 1)
    axes.set_title(f"{metric} by task and method (test split)")
    axes.legend(ncols=min(len(methods), 3), fontsize="small", loc="upper right")
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)
    return path


def write_report(
    results: pl.DataFrame,
    folder: Path,
    *,
    checkpoint: str = "",
    run_id: str = "",
    missing: list[str] | None = None,
) -> list[Path]:
    """Write ``results.md`` and the NDCG@10 chart into ``folder``; returns both paths."""
    chart = ndcg_chart(results, folder / CHART_FILE)
    provenance = []
    if checkpoint:
        provenance.append(f"checkpoint `{checkpoint}`")
    if run_id:
        provenance.append(f"MLflow run `{run_id}`")
    text = "\n\n".join(
        [
            "# Hydra results",
            "Test split of every task; "
            + (", ".join(provenance) if provenance else "baselines only")
            + ".",
            f"## {HEADLINE_METRIC} by method",
            markdown_table(results),
            f"![{HEADLINE_METRIC} by task and method]({CHART_FILE})",
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
    return [markdown, chart]


def publish_report(
    database: str,
    tasks: Sequence[str],
    folder: Path,
    record: CheckpointRecord,
    target: TrackingTarget | None,
) -> tuple[list[Path], pl.DataFrame]:
    """Write the report for ``record``'s checkpoint and attach it to its MLflow run.

    Rows are each task's latest evaluation with this checkpoint; they are also logged on the
    training run as its final per-task metrics, so MLflow, DuckDB and the report agree.
    """
    results = latest_results(database, tasks).filter(pl.col("checkpoint") == record.checkpoint_id)
    if results.is_empty():
        raise ValueError(f"no task has been evaluated with checkpoint {record.checkpoint_id} yet")
    evaluated = set(results["task"].to_list())
    files = write_report(
        results,
        folder,
        checkpoint=record.checkpoint_id,
        run_id=record.mlflow_run_id,
        missing=[task for task in tasks if task not in evaluated],
    )
    if target is not None and record.mlflow_run_id:
        long = latest_long(database, tasks).filter(pl.col("checkpoint") == record.checkpoint_id)
        log_task_metrics(target, record.mlflow_run_id, long)
        log_report(target, record.mlflow_run_id, files)
    return files, results
