"""The results report's chart: per-task gains over the frozen encoder of the few rows that
matter, in distinct colours, with 95% error bars where per-query rows exist."""

from __future__ import annotations

import base64
from pathlib import Path

import polars as pl

from hydra_core.atomic import atomic_path
from hydra_core.evaluation.method import HEADLINE_METRIC, Method
from hydra_pipeline.results_figures import GAIN_REFERENCE, gain_table, table_methods

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
    methods = [m for m in table_methods(results) if m in charted]
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
