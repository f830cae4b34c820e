"""The figures of the results report, computed from the metrics store's tables: gains over
the references, the headline numbers a run and a registered version are described by, and
per-task tables for Dagster's metadata.

Every figure is computed once here, so the report's markdown, its chart, the MLflow run,
the registered version's description and the Dagster asset pages show the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from hydra_core.evaluation.method import (
    DIGITS,
    HEADLINE_METRIC,
    METHOD_RANK,
    Method,
    in_table_order,
)
from hydra_core.evaluation.metrics import METRIC_NAMES
from hydra_core.evaluation.report import POOL_REFERENCES, pool_summary
from hydra_core.evaluation.significance import (
    PairedTest,
    paired_tests,
    table_from_per_query,
)
from hydra_pipeline.metrics_store import latest_results

GAIN_REFERENCES: tuple[str, ...] = (Method.BASE, Method.HYBRID)
"""Rows every method's mean and worst gain is given over, whichever the table has."""
GAIN_REFERENCE = Method.BASE
"""What the chart and the task metadata give gains over: the frozen encoder."""
REGISTERED_METHODS: tuple[str, ...] = (Method.HYDRA, Method.HYDRA_UNSEEN)
"""The rows whose mean gains a registered hypernet version is described by."""


def table_methods(results: pl.DataFrame) -> list[str]:
    """Methods in the store's order (baselines, hydra, ablations, references), then others."""
    present = results["method"].unique(maintain_order=True).to_list()
    return in_table_order(present)


def headline_table(results: pl.DataFrame, metric: str = HEADLINE_METRIC) -> pl.DataFrame:
    """Tasks as rows, methods as columns, ``metric`` as values (methods in table order)."""
    wide = results.pivot(on="method", index="task", values=metric)
    return wide.select("task", *[m for m in table_methods(results) if m in wide.columns])


def signed(value: float) -> str:
    # (+ 0.0 turns a rounded -0.0 into 0.0, so an exact tie never prints as a loss)
    return f"{round(value, 4) + 0.0:+.4f}"


def significance_tests(per_query: pl.DataFrame) -> list[PairedTest]:
    """The paired tests (see :mod:`hydra_core.evaluation.significance`) of every task's
    per-query rows."""
    tasks = per_query.partition_by("task", as_dict=True, maintain_order=True)
    return [
        test
        for (task,), rows in tasks.items()
        for test in paired_tests(str(task), table_from_per_query(rows), HEADLINE_METRIC)
    ]


def gain_table(
    results: pl.DataFrame,
    per_query: pl.DataFrame | None = None,
    metric: str = HEADLINE_METRIC,
    reference: str = GAIN_REFERENCE,
) -> pl.DataFrame:
    """Each method's gain in ``metric`` over ``reference`` per task, with a 95% half-width.

    Gains of a few thousandths are the result, and plotted against 0-1 they vanish; the
    half-width (1.96 sd / sqrt(n) of the per-query differences, null without per-query
    rows or with fewer than two shared queries) says how much of a gain is query noise.
    Columns: task, method, gain, half_width; ``reference`` itself and tasks without it
    are left out.
    """
    schema = {"task": pl.String(), "method": pl.String(), "gain": pl.Float64()}
    table = headline_table(results, metric) if not results.is_empty() else pl.DataFrame()
    if reference not in table.columns:
        return pl.DataFrame(schema={**schema, "half_width": pl.Float64()})
    methods = [m for m in table.columns[1:] if m != reference]
    gains = (
        table.select("task", *[(pl.col(m) - pl.col(reference)).alias(m) for m in methods])
        .unpivot(index="task", on=methods, variable_name="method", value_name="gain")
        .drop_nulls("gain")
        .cast(schema)  # type: ignore[arg-type]
    )
    if per_query is None or per_query.is_empty():
        return gains.with_columns(pl.lit(None, pl.Float64()).alias("half_width"))
    rows = per_query.filter(pl.col("metric") == metric).select(
        "task", "method", "query_id", "value"
    )
    reference_rows = rows.filter(pl.col("method") == reference).drop("method")
    intervals = (
        rows.filter(pl.col("method") != reference)
        .join(reference_rows, on=["task", "query_id"], suffix="_reference")
        .group_by("task", "method")
        .agg(
            ((pl.col("value") - pl.col("value_reference")).std(ddof=1) * 1.96)
            / pl.len().cast(pl.Float64).sqrt()
        )
        .rename({"value": "half_width"})
    )
    return gains.join(intervals, on=["task", "method"], how="left")


def mean_gain(results: pl.DataFrame, method: str, reference: str, metric: str) -> float | None:
    gains = gain_table(results, metric=metric, reference=reference)
    mean = gains.filter(pl.col("method") == method)["gain"].mean()
    return float(mean) if isinstance(mean, int | float) else None


def pool_frame(results: pl.DataFrame, metric: str = HEADLINE_METRIC) -> pl.DataFrame:
    """The leave-one-task-out summary (:func:`~hydra_core.evaluation.report.pool_summary`)
    of the tasks with a ``hydra-unseen`` row: its mean and worst difference from each
    reference, and the task where it is worst. Columns: reference, mean, worst, worst_task;
    no rows when no task has one."""
    schema = {"reference": pl.String(), "mean": pl.Float64(), "worst": pl.Float64()}
    unseen = results.filter(pl.col("method") == Method.HYDRA_UNSEEN)["task"].to_list()
    tables = {
        task: {
            row["method"]: {metric: row[metric]}
            for row in results.filter(pl.col("task") == task).iter_rows(named=True)
        }
        for task in unseen
    }
    if not tables:
        return pl.DataFrame(schema={**schema, "worst_task": pl.String()})
    summary = pool_summary(tables, metric)
    rows = [
        (
            reference,
            summary[reference]["mean"],
            summary[reference]["worst"],
            summary[reference]["worst_task"],
        )
        for reference in POOL_REFERENCES
        if reference in summary
    ]
    return pl.DataFrame(rows, schema={**schema, "worst_task": pl.String()}, orient="row")


def headline_metrics(results: pl.DataFrame, metric: str = HEADLINE_METRIC) -> dict[str, float]:
    """The few numbers a training run is judged by: the mean ``metric`` gain of hydra (and
    hydra-unseen) over base and hybrid, and of the card over a generic one (``hydra`` over
    ``hydra-generic``), e.g. ``hydra_gain_over_base``; those the table has rows for."""
    pairs = [(m, r) for m in REGISTERED_METHODS for r in GAIN_REFERENCES]
    pairs.append((Method.HYDRA, Method.HYDRA_GENERIC))
    names: dict[str, str] = {Method.HYDRA_GENERIC: "card_vs_generic"}
    values = {}
    for method, reference in pairs:
        mean = mean_gain(results, method, reference, metric)
        if mean is not None:
            name = names.get(reference, f"{method}_gain_over_{reference}")
            values[name.replace("-", "_")] = mean
    return values


def gains_description(results: pl.DataFrame, metric: str = HEADLINE_METRIC) -> str:
    """The mean ``metric`` gains of hydra (and hydra-unseen) over base and hybrid, over the
    tasks of ``results`` (a latest results table): the line a registered version carries."""
    clauses = []
    for method in (m for m in REGISTERED_METHODS if m in set(results["method"].to_list())):
        gains = [
            f"over {reference} {signed(mean)}"
            for reference in GAIN_REFERENCES
            if (mean := mean_gain(results, method, reference, metric)) is not None
        ]
        if gains:
            clauses.append(f"{method} " + ", ".join(gains))
    tasks = results["task"].unique(maintain_order=True).to_list()
    return (
        f"Mean {metric} gain on the test split of {len(tasks)} tasks ({', '.join(tasks)}): "
        + ("; ".join(clauses) or "no hydra rows")
        + "."
    )


def headline_metadata(
    metrics: pl.DataFrame, metric: str = HEADLINE_METRIC, reference: str = GAIN_REFERENCE
) -> dict[str, float]:
    """One task's evaluation (long rows: method, metric, value) as flat numeric entries,
    ``<metric>/<method>`` and ``gain_over_<reference>/<method>``: numbers an asset
    catalogue can plot across materializations, unlike a text table. Rounded to the
    report's four decimals."""
    values = {
        method: float(value)
        for method, value in metrics.filter(pl.col("metric") == metric)
        .select("method", "value")
        .iter_rows()
    }
    ordered = in_table_order(values)
    entries = {f"{metric}/{method}": round(values[method], DIGITS) for method in ordered}
    if reference in values:
        entries |= {
            f"gain_over_{reference}/{method}": round(values[method] - values[reference], DIGITS)
            for method in ordered
            if method != reference
        }
    return entries


def method_table(
    metrics: pl.DataFrame, metric: str = HEADLINE_METRIC, reference: str = GAIN_REFERENCE
) -> pl.DataFrame:
    """One task's evaluation (long rows: method, metric, value) as one row per method in
    table order, a column per metric, and the ``metric`` gain over ``reference`` when the
    task has it."""
    wide = metrics.pivot(on="metric", index="method", values="value")
    wide = wide.select("method", *[m for m in METRIC_NAMES if m in wide.columns]).sort(
        pl.col("method").replace_strict(METHOD_RANK, default=len(METHOD_RANK))
    )
    if reference not in set(wide["method"].to_list()) or metric not in wide.columns:
        return wide
    base = wide.filter(pl.col("method") == reference)[metric].item()
    return wide.with_columns((pl.col(metric) - base).alias(f"gain_over_{reference}"))


def significance_frame(tests: Sequence[PairedTest]) -> pl.DataFrame:
    """The paired tests as rows: task, method, reference, metric, delta, p_value, queries,
    significant."""
    return pl.DataFrame(
        [
            {"task": t.task, "method": t.method, "reference": t.reference} | t.as_json()
            for t in tests
        ],
        schema={
            "task": pl.String(),
            "method": pl.String(),
            "reference": pl.String(),
            "metric": pl.String(),
            "delta": pl.Float64(),
            "p_value": pl.Float64(),
            "queries": pl.Int64(),
            "significant": pl.Boolean(),
        },
    )


def worst_queries(
    per_query: pl.DataFrame,
    queries: pl.DataFrame,
    method: str = Method.HYDRA,
    reference: str = GAIN_REFERENCE,
    metric: str = HEADLINE_METRIC,
    count: int = 5,
) -> pl.DataFrame:
    """The ``count`` queries where ``method`` loses most to ``reference`` (per-query rows of
    one task), with their text: query_id, query, method, reference, difference."""
    rows = per_query.filter(pl.col("metric") == metric)
    pairs = (
        rows.filter(pl.col("method") == method)
        .select("query_id", pl.col("value").alias(method))
        .join(
            rows.filter(pl.col("method") == reference).select(
                "query_id", pl.col("value").alias(reference)
            ),
            on="query_id",
        )
        .with_columns((pl.col(method) - pl.col(reference)).alias("difference"))
    )
    text = queries.select("query_id", pl.col("text").alias("query"))
    return (
        pairs.join(text, on="query_id", how="left")
        .sort("difference", "query_id")
        .head(count)
        .select("query_id", "query", method, reference, "difference")
    )


def checkpoint_results(database: str, tasks: Sequence[str], checkpoint_id: str) -> pl.DataFrame:
    """The latest results table of the tasks evaluated with checkpoint ``checkpoint_id``."""
    results = latest_results(database, tasks).filter(pl.col("checkpoint") == checkpoint_id)
    if results.is_empty():
        raise ValueError(f"no task has been evaluated with checkpoint {checkpoint_id} yet")
    return results
