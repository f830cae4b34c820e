"""Printing results tables for people (aligned text) and for scripts (JSON lines)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from hydra_core.evaluation.metrics import METRIC_NAMES

if TYPE_CHECKING:  # polars, which these need, costs seconds at `hydra --help`
    from hydra_core.evaluation.perturbations import Robustness
    from hydra_core.evaluation.significance import PairedTest

ResultsTable = dict[str, dict[str, float]]


def results_json(
    task: str,
    table: ResultsTable,
    significance: Sequence[PairedTest] | None = None,
    robustness: Robustness | None = None,
) -> str:
    """One line: ``{"task": ..., "methods": {method: {metric: value}}}``.

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
    return json.dumps(record)


def results_text(
    task: str,
    table: ResultsTable,
    significance: Sequence[PairedTest] | None = None,
    robustness: Robustness | None = None,
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
