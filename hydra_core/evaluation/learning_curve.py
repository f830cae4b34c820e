"""The learning curve: what N judged queries buy, for each way of adapting a retriever.

For N = 5, 10, 30, 100, 300 and every judged query, :data:`DRAWS` random draws of N
queries from the task's labels (its card's ``labels`` split, else ``train``); each draw is
adapted three ways (:mod:`hydra_core.evaluation.adaptation`) and scored on the test split:

- ``adapt-from-compiled``: the card's compiled retriever, head and fusion fitted;
- ``adapt-from-base``: the same fitting from the frozen base with the fixed ``hybrid`` fusion;
- ``fusion-only``: the compiled retriever with only its fusion and ``b`` fitted;

beside the zero-shot ``hydra`` (the compiled retriever) as the N = 0 point. Every choice
an adaptation makes is made on its own draw's labels, never on the test split. A size at
or above the number of judged queries is left out (the ``all`` point covers it), and
``all`` takes one draw: every draw would hold the same queries.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import polars as pl

from hydra_core.data.cards import TaskCard
from hydra_core.data.opened_task import OpenedTask
from hydra_core.encoding.encoder import FrozenEncoder
from hydra_core.errors import HydraInputError
from hydra_core.evaluation.adaptation import adapt, judged_queries, sample_labels
from hydra_core.evaluation.method import HEADLINE_METRIC, Method
from hydra_core.evaluation.methods import EVAL_SPLIT, hybrid_retriever, retriever_table
from hydra_core.evaluation.metrics import Scores
from hydra_core.evaluation.significance import PairedTest, paired_test
from hydra_core.model.compiled_retriever import CompiledRetriever
from hydra_core.training.training_data import label_split

CURVE_SIZES = (5, 10, 30, 100, 300, None)
"""Judged queries per draw; ``None``: all of them (``"all"``)."""
DRAWS = 5
ADAPT_FROM_COMPILED = "adapt-from-compiled"
ADAPT_FROM_BASE = "adapt-from-base"
FUSION_ONLY = "fusion-only"
CURVE_METHODS = (Method.HYDRA.value, ADAPT_FROM_COMPILED, ADAPT_FROM_BASE, FUSION_ONLY)
ALL = "all"


@dataclass(frozen=True)
class CurvePoint:
    """One scored retriever of the curve: ``n`` judged queries ("0", a number, "all")."""

    task: str
    method: str
    n: str
    draw: int
    metrics: dict[str, float]
    per_query: dict[str, float]
    """The headline metric of each test query (for the paired tests)."""


def curve_labels(card: TaskCard, opened: OpenedTask) -> pl.DataFrame:
    """The judgments the curve draws from: the card's labels split, else ``train``."""
    split = label_split(card, opened.task) or ("train" if "train" in opened.task.splits else None)
    if split is None:
        raise HydraInputError(
            f"a learning curve needs labels: the card declares none and {card.name!r} has no "
            "train split",
            path=card.card_path,
            field="labels",
        )
    return opened.task.split_qrels(split)


def learning_curve(
    card: TaskCard,
    opened: OpenedTask,
    encoder: FrozenEncoder,
    compiled: CompiledRetriever,
    *,
    sizes: Sequence[int | None] = CURVE_SIZES,
    draws: int = DRAWS,
    on_point: Callable[[CurvePoint], None] | None = None,
) -> list[CurvePoint]:
    """Every point of the curve on ``opened``'s test split (``on_point`` sees each as it is
    scored: the curve takes minutes on a full task)."""
    labels = curve_labels(card, opened)
    available = len(judged_queries(labels))
    points: list[CurvePoint] = []

    def scored(rows: dict[str, CompiledRetriever], n: str, draw: int) -> None:
        table = retriever_table(opened, rows, EVAL_SPLIT, encoder=encoder)
        for method, metrics in table.items():
            scores = cast(Scores, metrics)  # every row of a retriever table is scored
            per_query = {query: row[HEADLINE_METRIC] for query, row in scores.per_query.items()}
            point = CurvePoint(card.name, method, n, draw, dict(metrics), per_query)
            points.append(point)
            if on_point is not None:
                on_point(point)

    scored({Method.HYDRA.value: compiled}, "0", 0)
    for size in sizes:
        if size is not None and size >= available:
            continue
        n = ALL if size is None else str(size)
        for draw in range(1 if size is None else draws):
            qrels = sample_labels(labels, size, seed=draw)
            rows = {
                ADAPT_FROM_COMPILED: adapt(compiled, card, opened, encoder, qrels, seed=draw),
                ADAPT_FROM_BASE: adapt(hybrid_retriever(), card, opened, encoder, qrels, seed=draw),
                FUSION_ONLY: adapt(
                    compiled, card, opened, encoder, qrels, fit_head_too=False, seed=draw
                ),
            }
            scored(rows, n, draw)
    return points


def curve_summary(
    points: Sequence[CurvePoint], metric: str = HEADLINE_METRIC
) -> dict[str, dict[str, dict[str, float]]]:
    """``{method: {n: {"mean", "std"}}}`` of ``metric`` over the draws (population std)."""
    values: dict[str, dict[str, list[float]]] = {}
    for point in points:
        values.setdefault(point.method, {}).setdefault(point.n, []).append(point.metrics[metric])
    return {
        method: {
            n: {"mean": statistics.fmean(draws), "std": statistics.pstdev(draws)}
            for n, draws in by_n.items()
        }
        for method, by_n in values.items()
    }


SIGNIFICANCE_SIZES = ("10", "30")
"""Where the curve's paired tests are reported: the few-label points the targets name."""


def curve_significance(points: Sequence[CurvePoint]) -> dict[str, dict[str, PairedTest]]:
    """``{n: {reference: test}}``: ``adapt-from-compiled`` against ``adapt-from-base`` and
    the zero-shot ``hydra`` at :data:`SIGNIFICANCE_SIZES`, on each test query's NDCG@10
    averaged over the draws (a paired randomisation test over the test queries)."""

    def per_query(method: str, n: str) -> dict[str, float]:
        draws = [p.per_query for p in points if p.method == method and p.n == n]
        return {query: statistics.fmean(d[query] for d in draws) for query in draws[0]}

    tests: dict[str, dict[str, PairedTest]] = {}
    task = points[0].task if points else ""
    for n in SIGNIFICANCE_SIZES:
        if not any(p.n == n for p in points):
            continue
        adapted = per_query(ADAPT_FROM_COMPILED, n)
        tests[n] = {
            reference: paired_test(
                task, ADAPT_FROM_COMPILED, reference, adapted, per_query(reference, reference_n)
            )
            for reference, reference_n in ((ADAPT_FROM_BASE, n), (Method.HYDRA.value, "0"))
        }
    return tests


def curve_text(
    summary: dict[str, dict[str, dict[str, float]]],
    tests: dict[str, dict[str, PairedTest]] | None = None,
    metric: str = HEADLINE_METRIC,
) -> str:
    """The summary as an aligned table (a row per method, a column per N: mean ± std), then
    the paired tests of :func:`curve_significance` (``*``: p < 0.05)."""
    sizes = list(dict.fromkeys(n for by_n in summary.values() for n in by_n))
    width = 18
    lines = [f"learning curve ({metric}, test split; mean ± std over draws)"]
    lines.append(f"{'method':<22}" + "".join(f"{'N=' + n:>{width}}" for n in sizes))
    for method, by_n in summary.items():
        cells = [
            f"{by_n[n]['mean']:.4f} ± {by_n[n]['std']:.4f}" if n in by_n else "–" for n in sizes
        ]
        lines.append(f"{method:<22}" + "".join(f"{cell:>{width}}" for cell in cells))
    for n, by_reference in (tests or {}).items():
        for reference, test in by_reference.items():
            mark = "*" if test.significant else ""
            lines.append(
                f"N={n}: {test.method} vs {reference} {test.delta:+.4f}{mark} "
                f"(p {test.p_value:.4f}, {test.queries} queries)"
            )
    return "\n".join(lines)
