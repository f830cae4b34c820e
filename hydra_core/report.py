"""Printing results tables for people (aligned text) and for scripts (JSON lines)."""

from __future__ import annotations

import json

from hydra_core.metrics import METRIC_NAMES

ResultsTable = dict[str, dict[str, float]]


def results_json(task: str, table: ResultsTable) -> str:
    """One line: ``{"task": ..., "methods": {method: {metric: value}}}``."""
    return json.dumps({"task": task, "methods": table})


def results_text(task: str, table: ResultsTable) -> str:
    """An aligned table, methods as rows and metrics as columns, values to 4 places."""
    width = max([len("method"), *map(len, table)])
    lines = [f"{task}", f"  {'method':<{width}}  " + "  ".join(f"{m:>10}" for m in METRIC_NAMES)]
    for method, metrics in table.items():
        cells = "  ".join(f"{metrics.get(m, float('nan')):>10.4f}" for m in METRIC_NAMES)
        lines.append(f"  {method:<{width}}  {cells}")
    return "\n".join(lines)
