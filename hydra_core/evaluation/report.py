"""Printing results tables for people (aligned text) and for scripts (JSON lines)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from hydra_core.evaluation.metrics import METRIC_NAMES

if TYPE_CHECKING:  # polars, which these need, costs seconds at `hydra --help`
    from hydra_core.evaluation.perturbations import Robustness
    from hydra_core.evaluation.significance import PairedTest
    from hydra_core.model.score_fusion import FusionParameters

ResultsTable = dict[str, dict[str, float]]


def results_json(
    task: str,
    table: ResultsTable,
    significance: Sequence[PairedTest] | None = None,
    robustness: Robustness | None = None,
    fusion: Mapping[str, FusionParameters] | None = None,
) -> str:
    """One line: ``{"task": ..., "methods": {method: {metric: value}}}``.

    With ``fusion`` (leave-one-out), also ``"fusion": {method: {"lexical_weight",
    "feedback", "bm25_b"}}``: the fusion each card compiled to beside the oracle's.

    With ``significance``, also ``"significance": {method: {reference: {"metric", "delta",
    "p_value", "queries", "significant"}}}``; with ``robustness``, ``"perturbation": {"kind",
    "rate", "seed", "metric", "methods": {method: {"clean", "perturbed", "drop"}}}``.
    """
    record: dict[str, object] = {"task": task, "methods": table}
    if significance is not None:
        tests: dict[str, dict[str, object]] = {}
        for test in significance:
            tests.setdefault(test.method, {})[test.reference] = test.as_json()
        record["significance"] = tests
    if robustness is not None:
        record["perturbation"] = robustness.as_json()
    if fusion is not None:
        record["fusion"] = {method: _fusion_json(params) for method, params in fusion.items()}
    return json.dumps(record)


def _fusion_json(params: FusionParameters) -> dict[str, float | bool]:
    return {
        "lexical_weight": round(params.lexical_weight, 4),
        "feedback": round(params.feedback, 4),
        "bm25_b": params.bm25_b,
        "query_gate": params.gate is not None,
    }


def results_text(
    task: str,
    table: ResultsTable,
    significance: Sequence[PairedTest] | None = None,
    robustness: Robustness | None = None,
    fusion: Mapping[str, FusionParameters] | None = None,
) -> str:
    """An aligned table, methods as rows and metrics as columns, values to 4 places.

    With ``significance``, a block under it: each method's difference from each reference,
    its p-value, and ``*`` where it is significant. With ``robustness``, a block of each
    method's NDCG@10 on the clean and the perturbed queries and the drop.
    """
    width = max([len("method"), *map(len, table)])
    lines = [f"{task}", f"  {'method':<{width}}  " + "  ".join(f"{m:>10}" for m in METRIC_NAMES)]
    for method, metrics in table.items():
        cells = "  ".join(f"{metrics.get(m, float('nan')):>10.4f}" for m in METRIC_NAMES)
        lines.append(f"  {method:<{width}}  {cells}")
    if significance:
        first = significance[0]
        lines.append(
            f"  {first.metric} difference, paired randomisation test "
            f"(* significant, p < {first.alpha:g}):"
        )
        pairs = [f"{test.method} vs {test.reference}" for test in significance]
        pair_width = max(map(len, pairs))
        for pair, test in zip(pairs, significance, strict=True):
            mark = "*" if test.significant else " "
            lines.append(
                f"    {pair:<{pair_width}}  {test.delta:+.4f}{mark}  p {test.p_value:.4f}  "
                f"{test.queries} queries"
            )
    if robustness is not None:
        lines.extend(_robustness_lines(robustness, width))
    if fusion is not None:
        lines.append("  fusion (lexical weight, feedback, BM25 b; gated: moved per query):")
        for method, params in fusion.items():
            gated = ", gated" if params.gate is not None else ""
            lines.append(
                f"    {method:<{width}}  {params.lexical_weight:.2f}, {params.feedback:.2f}, "
                f"{params.bm25_b:g}{gated}"
            )
    return "\n".join(lines)


POOL_REFERENCES = ("hybrid", "hydra-unseen-generic", "better-channel", "oracle")
"""What a pool summary compares ``hydra-unseen`` with (``better-channel``: the better of
``bm25`` and ``base`` on each task)."""


def pool_summary(tables: Mapping[str, ResultsTable], metric: str = "ndcg@10") -> dict[str, Any]:
    """Mean and worst difference of ``hydra-unseen`` from each of :data:`POOL_REFERENCES`
    over the leave-one-out tables, and the task where it is worst."""
    gains: dict[str, dict[str, float]] = {reference: {} for reference in POOL_REFERENCES}
    for task, table in tables.items():
        unseen = table["hydra-unseen"][metric]
        values = {name: row[metric] for name, row in table.items()}
        if "bm25" in values and "base" in values:
            values["better-channel"] = max(values["bm25"], values["base"])
        for reference in POOL_REFERENCES:
            if reference in values:
                gains[reference][task] = unseen - values[reference]
    summary: dict[str, Any] = {"metric": metric, "tasks": len(tables)}
    for reference, by_task in gains.items():
        if by_task:
            worst = min(by_task, key=by_task.__getitem__)
            summary[reference] = {
                "mean": round(sum(by_task.values()) / len(by_task), 4),
                "worst": round(by_task[worst], 4),
                "worst_task": worst,
            }
    return summary


def pool_summary_text(summary: Mapping[str, Any]) -> str:
    lines = [
        f"pool of {summary['tasks']} tasks: hydra-unseen minus each reference, {summary['metric']}"
    ]
    for reference in POOL_REFERENCES:
        if reference in summary:
            gain = summary[reference]
            lines.append(
                f"  {reference:<22}  mean {gain['mean']:+.4f}  worst {gain['worst']:+.4f} "
                f"({gain['worst_task']})"
            )
    return "\n".join(lines)


def _robustness_lines(robustness: Robustness, width: int) -> list[str]:
    perturbation = robustness.perturbation
    lines = [
        f"  ndcg@10 on perturbed test queries ({perturbation}, seed {perturbation.seed}):",
        f"    {'method':<{width}}  {'clean':>10}  {'perturbed':>10}  {'drop':>10}",
    ]
    for method, (clean, perturbed, drop) in robustness.rows().items():
        lines.append(f"    {method:<{width}}  {clean:>10.4f}  {perturbed:>10.4f}  {drop:>+10.4f}")
    return lines
