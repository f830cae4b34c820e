"""The results report: its answer in a sentence, a glossary of the methods, a markdown
table and a chart of per-task NDCG@10 gains of the rows that matter.

Every section lists the tasks in one order (alphabetical, as the store returns them). It is
built from the latest results table of the metrics store (one row per task and
method, one column per metric), so the report, ``hydra metrics`` and the MLflow run always
show the same numbers; its significance tests read the same evaluations' per-query rows.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from hydra_core.atomic import atomic_path, write_text_atomic
from hydra_core.evaluation.method import (
    DIGITS,
    GLOSSARY,
    HEADLINE_METRIC,
    METHOD_RANK,
    Method,
    in_table_order,
)
from hydra_core.evaluation.metrics import METRIC_NAMES
from hydra_core.evaluation.significance import (
    REFERENCES,
    RESAMPLES,
    SEED,
    PairedTest,
    paired_tests,
    table_from_per_query,
)
from hydra_pipeline.artifacts import CheckpointRecord
from hydra_pipeline.metrics_store import (
    latest_long,
    latest_per_query,
    latest_results,
    latest_robustness,
)
from hydra_pipeline.tracking import (
    TrackingTarget,
    log_headline_metrics,
    log_report,
    log_task_metrics,
)

GAIN_REFERENCES: tuple[str, ...] = (Method.BASE, Method.HYBRID)
"""Rows every method's mean and worst gain is given over, whichever the table has."""
GAIN_REFERENCE = Method.BASE
"""What the chart and the task metadata give gains over: the frozen encoder."""
REGISTERED_METHODS: tuple[str, ...] = (Method.HYDRA, Method.HYDRA_UNSEEN)
"""The rows whose mean gains a registered hypernet version is described by."""
CHART_COLOURS: dict[str, str] = {
    Method.HYBRID: "#7f7f7f",
    Method.TEACHER: "#bcbd22",
    Method.HYDRA: "#1f77b4",
    Method.HYDRA_GENERIC: "#aec7e8",
    Method.HYDRA_UNSEEN: "#d62728",
    Method.SUPERVISED_HEAD: "#2ca02c",
}
"""The chart's rows (gains over base) and their colours, one each: the references a reader
compares against, hydra, what its card adds (generic), unseen tasks and the supervised
ceiling. The other rows are in the tables."""
SAME_WITHIN = 0.005
"""Mean differences smaller than this are called "about the same" in the headline."""
MARKDOWN_FILE = "results.md"
CHART_FILE = "ndcg_at_10.png"


def _methods(results: pl.DataFrame) -> list[str]:
    """Methods in the store's order (baselines, hydra, ablations, references), then others."""
    present = results["method"].unique(maintain_order=True).to_list()
    return in_table_order(present)


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
    """The paired tests (see :mod:`hydra_core.evaluation.significance`) of every task's
    per-query rows."""
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


def robustness_markdown(robustness: pl.DataFrame) -> str:
    """Per task and method: the metric on clean test queries, then per perturbation the
    metric on the perturbed ones with the drop in brackets; a line under it names the
    method that drops least on average.

    The average is over every (task, perturbation) the rows have, and only methods scored
    on all of them compete, so no method wins by missing the hardest task.
    """
    metric = robustness["metric"][0]
    labels = robustness.with_columns(
        pl.format("{}:{}", "kind", pl.col("rate").round(4).cast(pl.String)).alias("perturbation")
    )
    perturbations = labels["perturbation"].unique(maintain_order=True).to_list()
    lines = [
        "| task | method | clean | " + " | ".join(perturbations) + " |",
        "|---|---|---:|" + "---:|" * len(perturbations),
    ]
    for (task, method), rows in labels.partition_by(
        "task", "method", as_dict=True, maintain_order=True
    ).items():
        by = {row["perturbation"]: row for row in rows.iter_rows(named=True)}
        cells = [
            f"{by[p]['perturbed']:.4f} ({_signed(by[p]['drop'])})" if p in by else ""
            for p in perturbations
        ]
        clean = rows["clean"][0]
        lines.append(f"| {task} | {method} | {clean:.4f} | " + " | ".join(cells) + " |")
    cases = labels.select("task", "perturbation").n_unique()
    means = (
        labels.group_by("method")
        .agg(pl.col("drop").mean(), pl.len().alias("cases"))
        .filter(pl.col("cases") == cases)
        .sort("drop", "method", descending=[True, False])
    )
    legend = (
        f"Each cell: {metric} on the perturbed test queries (same ids and judgments; each "
        f"query perturbed with seed {robustness['seed'][0]}) and, in brackets, the drop: "
        "perturbed minus clean."
    )
    if means.is_empty():
        return "\n".join(lines) + "\n\n" + legend
    best, drop = means.row(0)[:2]
    worst, worst_drop = means.row(-1)[:2]
    summary = (
        f"Degrades least on average: `{best}` ({_signed(drop)} {metric} over {cases} task "
        f"and perturbation pairs); most: `{worst}` ({_signed(worst_drop)})."
    )
    return "\n".join(lines) + "\n\n" + legend + "\n\n" + summary


def headline(
    results: pl.DataFrame, tests: Sequence[PairedTest] = (), metric: str = HEADLINE_METRIC
) -> str:
    """The report's answer in one or two sentences, computed from its tables: how hydra
    (and hydra-unseen) compare with base and hybrid on average, on how many tasks the
    difference is significant, and what the card's words add over a generic card."""
    methods = set(results["method"].to_list())
    tasks = results["task"].n_unique()
    sentences = []
    for method in (m for m in REGISTERED_METHODS if m in methods):
        clauses = [
            _comparison(results, tests, method, reference, metric)
            for reference in GAIN_REFERENCES
            if reference in methods
        ]
        if clauses:
            sentences.append(
                f"Mean {metric} over {tasks} tasks: `{method}` " + " and ".join(clauses) + "."
            )
    if {Method.HYDRA, Method.HYDRA_GENERIC} <= methods:
        card = _mean_gain(results, Method.HYDRA, Method.HYDRA_GENERIC, metric) or 0.0
        sentences.append(
            f"A card that says nothing (`{Method.HYDRA_GENERIC}`) scores about the same as "
            f"`{Method.HYDRA}` ({_signed(-card)}): the card's words add little."
            if abs(card) < SAME_WITHIN
            else f"The card's words {'add' if card > 0 else 'cost'} {abs(card):.4f} against "
            f"a card that says nothing (`{Method.HYDRA_GENERIC}`)."
        )
    return " ".join(sentences) or "No hydra rows yet: baselines only."


def _comparison(
    results: pl.DataFrame,
    tests: Sequence[PairedTest],
    method: str,
    reference: str,
    metric: str,
) -> str:
    """``beats `base` by 0.0123 (significantly better on 3 of 5 tasks)``."""
    gains = gain_table(results, metric=metric, reference=reference).filter(
        pl.col("method") == method
    )
    mean = float(gains["gain"].mean() or 0.0)  # type: ignore[arg-type]
    if abs(mean) < 0.00005:  # zero at the report's four decimals
        text = f"matches `{reference}`"
    else:
        text = f"{'beats' if mean > 0 else 'trails'} `{reference}` by {abs(mean):.4f}"
    paired = [t for t in tests if t.method == method and t.reference == reference]
    if paired:
        better = sum(t.significant and t.delta > 0 for t in paired)
        worse = sum(t.significant and t.delta < 0 for t in paired)
        counts = [
            *([f"significantly better on {better}"] if better else []),
            *([f"significantly worse on {worse}"] if worse else []),
        ]
        text += (
            f" ({', '.join(counts)} of {len(paired)} tasks)"
            if counts
            else f" (significant on none of {len(paired)} tasks)"
        )
    return text


def glossary_markdown(methods: Sequence[str]) -> str:
    """One line per method of the report (from :data:`GLOSSARY`), in table order."""
    return "\n".join(
        f"- `{method}`: {GLOSSARY[Method(method)]}"
        for method in in_table_order(methods)
        if method in GLOSSARY
    )


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


def gain_limits(gains: pl.DataFrame) -> tuple[float, float]:
    """A y-range fitted to the gains and their error bars, always showing the zero line.

    Padded by a tenth of the span (at least 0.005), so ±0.01 differences fill the plot
    instead of disappearing on a 0-1 axis.
    """
    spread = gains.select(pl.col("half_width").fill_null(0.0), "gain")
    low = min([0.0, *(spread["gain"] - spread["half_width"]).to_list()])
    high = max([0.0, *(spread["gain"] + spread["half_width"]).to_list()])
    pad = max((high - low) * 0.1, 0.005)
    return low - pad, high + pad


def ndcg_chart(
    results: pl.DataFrame,
    path: Path,
    metric: str = HEADLINE_METRIC,
    per_query: pl.DataFrame | None = None,
    reference: str = GAIN_REFERENCE,
) -> Path:
    """Grouped bars of the gain over ``reference`` of the rows of :data:`CHART_COLOURS`
    (one group per task), with 95% error bars where ``per_query`` has the rows: the
    question a reader has is whether a method beats the frozen encoder, and by more than
    the noise between queries."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede pyplot's import
    import matplotlib.pyplot as plt

    gains = gain_table(results, per_query, metric, reference).filter(
        pl.col("method").is_in(list(CHART_COLOURS))
    )
    tasks = gains["task"].unique(maintain_order=True).to_list()
    charted = set(gains["method"].to_list())
    methods = [m for m in _methods(results) if m in charted]
    width = 0.8 / max(len(methods), 1)
    columns = min(max(len(methods), 1), 4)
    legend_rows = -(-len(methods) // columns)
    figure, axes = plt.subplots(
        figsize=(max(6.0, 1.6 * len(tasks) + 2), 4.0 + 0.25 * legend_rows),
        dpi=100,
        layout="constrained",  # room for the legend under the axes, whatever its size
    )
    for i, method in enumerate(methods):
        rows = gains.filter(pl.col("method") == method)
        offset = (i - (len(methods) - 1) / 2) * width
        positions = [tasks.index(task) + offset for task in rows["task"].to_list()]
        has_errors = rows["half_width"].drop_nulls().len() > 0
        axes.bar(
            positions,
            rows["gain"].to_list(),
            width,
            label=method,
            color=CHART_COLOURS[method],
            yerr=rows["half_width"].fill_null(0.0).to_list() if has_errors else None,
            capsize=2 if has_errors else 0,
            error_kw={"elinewidth": 0.8},
        )
    axes.axhline(0.0, color="black", linewidth=0.8)
    axes.set_xticks(range(len(tasks)), tasks)
    axes.set_ylabel(f"{metric} gain over {reference}")
    axes.set_ylim(*gain_limits(gains))
    title = f"{metric} gain over {reference} by task (test split)"
    if per_query is not None:
        title += "\nerror bars: 95% interval of the mean per-query difference"
    axes.set_title(title, fontsize="medium")
    if methods:
        figure.legend(loc="outside lower center", ncols=columns, fontsize="small")
    axes.grid(axis="y", alpha=0.3)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)
    return path


def inline_image_markdown(path: Path, alt: str = "chart") -> str:
    """The PNG at ``path`` as a markdown image with a base64 data URI: a UI that renders
    markdown (Dagster's asset page) shows it without serving the file."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"![{alt}](data:image/png;base64,{data})"


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


def gains_description(results: pl.DataFrame, metric: str = HEADLINE_METRIC) -> str:
    """The mean ``metric`` gains of hydra (and hydra-unseen) over base and hybrid, over the
    tasks of ``results`` (a latest results table): the line a registered version carries."""
    clauses = []
    for method in (m for m in REGISTERED_METHODS if m in set(results["method"].to_list())):
        gains = [
            f"over {reference} {_signed(mean)}"
            for reference in GAIN_REFERENCES
            if (mean := _mean_gain(results, method, reference, metric)) is not None
        ]
        if gains:
            clauses.append(f"{method} " + ", ".join(gains))
    tasks = results["task"].unique(maintain_order=True).to_list()
    return (
        f"Mean {metric} gain on the test split of {len(tasks)} tasks ({', '.join(tasks)}): "
        + ("; ".join(clauses) or "no hydra rows")
        + "."
    )


def headline_metrics(results: pl.DataFrame, metric: str = HEADLINE_METRIC) -> dict[str, float]:
    """The few numbers a training run is judged by: the mean ``metric`` gain of hydra (and
    hydra-unseen) over base and hybrid, and of the card over a generic one (``hydra`` over
    ``hydra-generic``), e.g. ``hydra_gain_over_base``; those the table has rows for."""
    pairs = [(m, r) for m in REGISTERED_METHODS for r in GAIN_REFERENCES]
    pairs.append((Method.HYDRA, Method.HYDRA_GENERIC))
    names: dict[str, str] = {Method.HYDRA_GENERIC: "card_vs_generic"}
    values = {}
    for method, reference in pairs:
        mean = _mean_gain(results, method, reference, metric)
        if mean is not None:
            name = names.get(reference, f"{method}_gain_over_{reference}")
            values[name.replace("-", "_")] = mean
    return values


def _mean_gain(results: pl.DataFrame, method: str, reference: str, metric: str) -> float | None:
    gains = gain_table(results, metric=metric, reference=reference)
    mean = gains.filter(pl.col("method") == method)["gain"].mean()
    return float(mean) if isinstance(mean, int | float) else None


def checkpoint_results(database: str, tasks: Sequence[str], checkpoint_id: str) -> pl.DataFrame:
    """The latest results table of the tasks evaluated with checkpoint ``checkpoint_id``."""
    results = latest_results(database, tasks).filter(pl.col("checkpoint") == checkpoint_id)
    if results.is_empty():
        raise ValueError(f"no task has been evaluated with checkpoint {checkpoint_id} yet")
    return results


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
) -> Report:
    """Write ``results.md`` and the NDCG@10 gain chart into ``folder``.

    The report opens with its :func:`headline` and a glossary of the methods it shows.

    With ``per_query`` (the evaluations' per-query rows), a section gives the paired
    significance test of hydra (and hydra-unseen) against each reference on every task;
    with ``robustness`` rows, a section gives each method's drop on perturbed queries.
    ``in_pool`` names the tasks whose test labels taught the checkpoint's fusion gate.
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
    text = "\n\n".join(
        [
            "# Hydra results",
            f"**{answer}**",
            "Test split of every task; "
            + (", ".join(provenance) if provenance else "baselines only")
            + ".",
            "## Methods",
            glossary_markdown(_methods(results)),
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


def in_pool_note(tasks: Sequence[str]) -> str:
    """What the rows of tasks whose test labels taught the fusion gate are, and are not."""
    return (
        f"In-pool: {', '.join(sorted(tasks))}. Their test labels taught this checkpoint's "
        "fusion gate, so their rows of this hypernet (`hydra`, its ablations, `hydra+labels`) "
        "are not test figures; their `hydra-unseen` rows are (trained without any of their "
        "labels)."
    )


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
    so MLflow, DuckDB and the report agree.
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
    )
    if target is not None and record.mlflow_run_id:
        long = latest_long(database, tasks).filter(pl.col("checkpoint") == record.checkpoint_id)
        log_task_metrics(target, record.mlflow_run_id, long)
        log_headline_metrics(target, record.mlflow_run_id, headline_metrics(results))
        log_report(target, record.mlflow_run_id, report.files)
    return report
