"""The results report: a markdown table and a chart of per-task NDCG@10 by method.

It is built from the latest results table of the metrics store (one row per task and
method, one column per metric), so the report, ``hydra metrics`` and the MLflow run always
show the same numbers; its significance tests read the same evaluations' per-query rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import polars as pl

from hydra_core.artifacts import CheckpointRecord
from hydra_core.atomic import atomic_path, write_text_atomic
from hydra_core.metrics import METRIC_NAMES
from hydra_core.metrics_store import METHOD_RANK, latest_long, latest_per_query, latest_results
from hydra_core.significance import (
    REFERENCES,
    RESAMPLES,
    SEED,
    PairedTest,
    paired_tests,
    table_from_per_query,
)
from hydra_core.tracking import TrackingTarget, log_report, log_task_metrics

HEADLINE_METRIC = "ndcg@10"
GAIN_REFERENCES: tuple[str, ...] = ("base", "hybrid")
"""Rows every method's mean and worst gain is given over, whichever the table has."""
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

    For each of ``base`` (the frozen encoder) and ``hybrid`` the table has, two more rows
    give each method's mean and worst gain over it, over the tasks that have both: the
    figures the quality targets are set in.
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
    for reference in (r for r in GAIN_REFERENCES if r in methods):
        gains = table.select([(pl.col(m) - pl.col(reference)).alias(m) for m in methods])
        for label, summary in (("mean", gains.mean()), ("worst", gains.min())):
            cells = ["" if v is None else _signed(v) for v in summary.row(0)]
            lines.append(f"| {label} gain over {reference} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _signed(value: float) -> str:
    # (+ 0.0 turns a rounded -0.0 into 0.0, so an exact tie never prints as a loss)
    return f"{round(value, 4) + 0.0:+.4f}"


def significance_tests(per_query: pl.DataFrame) -> list[PairedTest]:
    """The paired tests (see :mod:`hydra_core.significance`) of every task's per-query rows."""
    tasks = per_query.partition_by("task", as_dict=True, maintain_order=True)
    return [
        test
        for (task,), rows in tasks.items()
        for test in paired_tests(str(task), table_from_per_query(rows), HEADLINE_METRIC)
    ]


def significance_markdown(tests: Sequence[PairedTest]) -> str:
    """One row per task and tested method, one column per reference: the difference in
    the metric (``*`` where significant) and its p-value; the test explained under it."""
    references = [r for r in REFERENCES if any(t.reference == r for t in tests)]
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for test in tests:
        mark = "*" if test.significant else ""
        cells.setdefault((test.task, test.method), {})[test.reference] = (
            f"{_signed(test.delta)}{mark} (p {test.p_value:.4f})"
        )
    lines = [
        "| task | method | " + " | ".join(f"vs {r}" for r in references) + " |",
        "|---|---|" + "---:|" * len(references),
        *(
            f"| {task} | {method} | " + " | ".join(row.get(r, "") for r in references) + " |"
            for (task, method), row in cells.items()
        ),
    ]
    first = tests[0]
    legend = (
        f"Each cell: the method's {first.metric} minus the reference's, averaged over the "
        f"task's test queries, and the two-sided p-value of a paired randomisation test "
        f"({RESAMPLES:,} random sign flips of the per-query differences, seed {SEED}). "
        f"`*` marks a difference with p < {first.alpha:g}: unlikely to be chance. "
        "Without it, a difference of that size is within the variation between queries."
    )
    return "\n".join(lines) + "\n\n" + legend


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
    per_query: pl.DataFrame | None = None,
) -> list[Path]:
    """Write ``results.md`` and the NDCG@10 chart into ``folder``; returns both paths.

    With ``per_query`` (the evaluations' per-query rows), a section gives the paired
    significance test of hydra (and hydra-unseen) against each reference on every task.
    """
    chart = ndcg_chart(results, folder / CHART_FILE)
    tests = significance_tests(per_query) if per_query is not None else []
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
            *(
                [f"## Significance of {HEADLINE_METRIC} differences", significance_markdown(tests)]
                if tests
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
    per_query = latest_per_query(database, tasks)
    files = write_report(
        results,
        folder,
        checkpoint=record.checkpoint_id,
        run_id=record.mlflow_run_id,
        missing=[task for task in tasks if task not in evaluated],
        per_query=per_query.filter(pl.col("checkpoint") == record.checkpoint_id),
    )
    if target is not None and record.mlflow_run_id:
        long = latest_long(database, tasks).filter(pl.col("checkpoint") == record.checkpoint_id)
        log_task_metrics(target, record.mlflow_run_id, long)
        log_report(target, record.mlflow_run_id, files)
    return files, results
