"""The results report's markdown: its answer in a sentence, a glossary of the methods, and
the sections' tables (NDCG@10 by method, significance, robustness, every metric).

Each function renders figures of :mod:`hydra_pipeline.results_figures`; none computes its
own, so the markdown says what the metadata and the MLflow run say.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from hydra_core.evaluation.method import GLOSSARY, HEADLINE_METRIC, Method, in_table_order
from hydra_core.evaluation.metrics import METRIC_NAMES
from hydra_core.evaluation.significance import REFERENCES, RESAMPLES, SEED, PairedTest
from hydra_pipeline.results_figures import (
    GAIN_REFERENCES,
    REGISTERED_METHODS,
    gain_table,
    headline_table,
    mean_gain,
    signed,
)

SAME_WITHIN = 0.005
"""Mean differences smaller than this are called "about the same" in the headline."""


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
        card = mean_gain(results, Method.HYDRA, Method.HYDRA_GENERIC, metric) or 0.0
        sentences.append(
            f"A card that says nothing (`{Method.HYDRA_GENERIC}`) scores about the same as "
            f"`{Method.HYDRA}` ({signed(-card)}): the card's words add little."
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
            cells = ["" if v is None else signed(v) for v in summary.row(0)]
            lines.append(f"| {label} gain over {reference} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def significance_markdown(tests: Sequence[PairedTest]) -> str:
    """One row per task and tested method, one column per reference: the difference in
    the metric (``*`` where significant) and its p-value; the test explained under it."""
    references = [r for r in REFERENCES if any(t.reference == r for t in tests)]
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for test in tests:
        mark = "*" if test.significant else ""
        cells.setdefault((test.task, test.method), {})[test.reference] = (
            f"{signed(test.delta)}{mark} (p {test.p_value:.4f})"
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
            f"{by[p]['perturbed']:.4f} ({signed(by[p]['drop'])})" if p in by else ""
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
        f"Degrades least on average: `{best}` ({signed(drop)} {metric} over {cases} task "
        f"and perturbation pairs); most: `{worst}` ({signed(worst_drop)})."
    )
    return "\n".join(lines) + "\n\n" + legend + "\n\n" + summary


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


def pool_markdown(pool: pl.DataFrame, fusion: pl.DataFrame | None = None) -> str:
    """The leave-one-task-out section: ``hydra-unseen``'s mean and worst difference from
    each reference (:func:`~hydra_pipeline.results_figures.pool_frame`) and, with
    ``fusion`` (the store's ``latest_fusion`` rows), the fusion each card compiled to beside
    the oracle's grid point."""
    lines = [
        f"`{Method.HYDRA_UNSEEN}` (trained without the task) minus each reference; "
        "`better-channel` is the better of `bm25` and `base` on each task, `oracle` the best "
        "fusion grid point chosen on the test split itself (a ceiling, not a result).",
        "",
        "| reference | mean | worst | worst task |",
        "|---|---:|---:|---|",
    ]
    for row in pool.iter_rows(named=True):
        lines.append(
            f"| {row['reference']} | {signed(row['mean'])} | {signed(row['worst'])} "
            f"| {row['worst_task']} |"
        )
    if fusion is not None and not fusion.is_empty():
        lines += [
            "",
            "The fusion each card compiled to (gated: moved per query around it) beside the "
            "oracle's:",
            "",
            f"| task | method | lexical weight | feedback | BM25 b | gated | {HEADLINE_METRIC} |",
            "|---|---|---:|---:|---:|---|---:|",
        ]
        for row in fusion.iter_rows(named=True):
            value = row[HEADLINE_METRIC]
            lines.append(
                f"| {row['task']} | {row['method']} | {row['lexical_weight']:.2f} | "
                f"{row['feedback']:.2f} | {row['bm25_b']:g} | "
                f"{'yes' if row['query_gate'] else 'no'} | "
                f"{'' if value is None else f'{value:.4f}'} |"
            )
    return "\n".join(lines)


def in_pool_note(tasks: Sequence[str]) -> str:
    """What the rows of tasks whose test labels taught the fusion gate are, and are not."""
    return (
        f"In-pool: {', '.join(sorted(tasks))}. Their test labels taught this checkpoint's "
        "fusion gate, so their rows of this hypernet (`hydra`, its ablations, `hydra+labels`) "
        "are not test figures; their `hydra-unseen` rows are (trained without any of their "
        "labels)."
    )
