"""Per-query values and paired significance tests: is a gain over a reference more than noise?

A results table says hydra beats the base by a few thousandths of NDCG@10; over a few
hundred queries that can be chance. Every row of a table keeps its per-query values
(:class:`~hydra_core.evaluation.metrics.Scores`); they are stored as long rows (task, method, split,
query_id, metric, value: the metrics store's ``per_query`` table) and a paired test over
the queries both methods answered says whether the difference is more than the variation
between queries.

The test is a paired randomisation test (sign flips of the per-query differences), not a
paired t-test: per-query NDCG differences are bounded, skewed and often exactly zero, so
the t-test's normal approximation is doubtful on the small test splits here (52 queries on
CACM), while the randomisation test assumes only that, under no difference, each query's
difference is as likely to have either sign; it is the test IR evaluation recommends
(Smucker, Allan & Carterette, CIKM 2007). A fixed seed makes the p-values reproducible;
with at most 13 queries every sign pattern is enumerated and the test is exact.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import polars as pl

from hydra_core.evaluation.method import HEADLINE_METRIC, Method
from hydra_core.evaluation.metrics import Scores
from hydra_core.evaluation.report import ResultsTable

TARGETS: tuple[str, ...] = (Method.HYDRA, Method.HYDRA_UNSEEN)
"""The methods tested: the served hypernet, and the one that never saw the task."""
REFERENCES: tuple[str, ...] = (Method.BASE, Method.TEACHER, Method.HYBRID)
"""What each target is tested against, whichever of them the table has."""
ALPHA = 0.05
RESAMPLES = 10_000
SEED = 0
_BATCH = 1_000  # resamples at once: bounds memory (1,000 x queries), and is faster than all

PER_QUERY_SCHEMA: dict[str, pl.DataType] = {
    "task": pl.String(),
    "method": pl.String(),
    "split": pl.String(),
    "query_id": pl.String(),
    "metric": pl.String(),
    "value": pl.Float64(),
}


@dataclass(frozen=True)
class PairedTest:
    """One method against one reference on one task: mean per-query difference, p-value."""

    task: str
    method: str
    reference: str
    metric: str
    delta: float
    p_value: float
    queries: int
    alpha: float = ALPHA

    @property
    def significant(self) -> bool:
        return self.p_value < self.alpha

    def as_json(self) -> dict[str, str | float | int | bool]:
        return {
            "metric": self.metric,
            "delta": self.delta,
            "p_value": self.p_value,
            "queries": self.queries,
            "significant": self.significant,
        }


def _mean(values: np.ndarray, axis: int) -> np.ndarray:
    return np.mean(values, axis=axis)


def randomisation_p_value(differences: np.ndarray) -> float:
    """Two-sided p-value of a zero mean difference: signs flipped at random (seeded).

    One query has two sign patterns, each as extreme as the observed one: p is 1 (scipy
    refuses fewer than two observations).
    """
    from scipy.stats import permutation_test  # scipy costs a second: only when testing

    if len(differences) < 2:
        return 1.0

    result = permutation_test(
        (np.asarray(differences, dtype=np.float64),),
        _mean,
        permutation_type="samples",
        vectorized=True,
        n_resamples=RESAMPLES,
        alternative="two-sided",
        batch=_BATCH,
        rng=np.random.default_rng(SEED),
    )
    return float(result.pvalue)


def paired_test(
    task: str,
    method: str,
    reference: str,
    method_values: Mapping[str, float],
    reference_values: Mapping[str, float],
    metric: str = HEADLINE_METRIC,
) -> PairedTest:
    """``method`` against ``reference`` over the queries both were scored on.

    Raises ValueError when they share no query: their ids cannot both be of one split.
    """
    common = [query_id for query_id in method_values if query_id in reference_values]
    if not common:
        raise ValueError(f"{task}: {method} and {reference} share no scored query")
    differences = np.asarray([method_values[q] - reference_values[q] for q in common])
    return PairedTest(
        task=task,
        method=method,
        reference=reference,
        metric=metric,
        delta=float(differences.mean()),
        p_value=randomisation_p_value(differences),
        queries=len(common),
    )


def paired_tests(
    task: str, table: Mapping[str, Mapping[str, float]], metric: str = HEADLINE_METRIC
) -> list[PairedTest]:
    """Each target in ``table`` against each reference in it (rows with per-query values)."""
    values = {
        method: {query_id: row[metric] for query_id, row in scores.per_query.items()}
        for method, scores in table.items()
        if isinstance(scores, Scores)
    }
    return [
        paired_test(task, method, reference, values[method], values[reference], metric)
        for method in TARGETS
        if method in values
        for reference in REFERENCES
        if reference in values
    ]


def per_query_frame(
    task: str, table: Mapping[str, Mapping[str, float]], split: str
) -> pl.DataFrame:
    """A table's per-query values as long rows: task, method, split, query_id, metric, value.

    Rows without per-query values (a table read back from mean rows) have none.
    """
    rows = [
        (task, method, split, query_id, metric, float(value))
        for method, scores in table.items()
        if isinstance(scores, Scores)
        for query_id, metrics in scores.per_query.items()
        for metric, value in metrics.items()
    ]
    return pl.DataFrame(rows, schema=PER_QUERY_SCHEMA, orient="row")


def table_from_per_query(frame: pl.DataFrame) -> ResultsTable:
    """Per-query rows (one task and split) back to a table of :class:`Scores`.

    Means are summed in the rows' order, as when they were first computed, so they equal
    the original figures exactly. Methods and metrics keep their first-seen order.
    """
    per_method: dict[str, dict[str, dict[str, float]]] = {}
    for method, query_id, metric, value in frame.select(
        "method", "query_id", "metric", "value"
    ).iter_rows():
        per_method.setdefault(method, {}).setdefault(query_id, {})[metric] = value
    return {
        method: Scores(per_query, list(next(iter(per_query.values()))))
        for method, per_query in per_method.items()
    }
