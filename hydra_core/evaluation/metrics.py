"""Retrieval metrics with exactly the BEIR/MTEB conventions (pytrec_eval, i.e. trec_eval 9.x).

Numbers reported by Hydra must be comparable with published BEIR/MTEB tables, so every detail
mirrors trec_eval rather than a textbook definition:

- Ranking: scores are compared as C ``float`` (float32, trec_eval's storage type), descending;
  ties are broken by doc id *descending* (``strcmp``, equal to Python's order for UTF-8 ids).
- NDCG@k: linear gain = the graded label as given, discount ``1 / log2(rank + 1)``; labels <= 0
  give zero gain; the ideal DCG uses the query's positive labels sorted descending, cut at k.
- Recall@k: relevant docs (label >= 1) in the top k / all relevant docs of the query.
- MRR@k: ``1 / rank`` of the first relevant doc (label >= 1) in the top k, else 0. This equals
  pytrec_eval ``recip_rank`` on the run cut to its top k (BEIR's own MRR breaks ties differently).

Which queries count (as pytrec_eval ``RelevanceEvaluator.evaluate`` does, averaged as in BEIR):

- a query is evaluated iff it is a key of the run *and* has at least one qrels row (any label,
  so a query whose rows are all 0 is evaluated and scores 0 on every metric);
- a query in the run with an empty ranking but with qrels is evaluated and scores 0;
- queries in the run without qrels, and queries in the qrels missing from the run, are skipped
  (they are not counted as 0 in the mean).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

import numpy as np
import polars as pl

Run = dict[str, dict[str, float]]
Qrels = dict[str, dict[str, int]]
METRIC_NAMES: tuple[str, ...] = ("ndcg@10", "mrr@10", "recall@100")

_METRIC_PATTERN = re.compile(r"(ndcg|mrr|recall)@([1-9][0-9]*)")


def ranked_doc_ids(scores: dict[str, float], k: int | None = None) -> list[str]:
    """Doc ids best first, in trec_eval's order (float32 scores desc, then doc id desc)."""
    if k is not None and k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    ids = list(scores)
    sims = np.asarray([scores[d] for d in ids], dtype=np.float32)
    if np.isnan(sims).any():
        raise ValueError("scores contain NaN; a NaN score has no rank")
    ranked = sorted(zip(sims.tolist(), ids, strict=True), reverse=True)
    return [doc_id for _, doc_id in ranked[:k]]


def ndcg_at_k(ranked: Sequence[str], judged: dict[str, int], k: int) -> float:
    """NDCG@k with linear gain; 0 when the query has no positive label (as trec_eval)."""
    dcg = sum(max(judged.get(d, 0), 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted((label for label in judged.values() if label > 0), reverse=True)[:k]
    idcg = sum(label / math.log2(i + 2) for i, label in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def mrr_at_k(ranked: Sequence[str], judged: dict[str, int], k: int) -> float:
    """Reciprocal rank of the first relevant doc (label >= 1) within the top k, else 0."""
    for i, doc_id in enumerate(ranked[:k]):
        if judged.get(doc_id, 0) >= 1:
            return 1.0 / (i + 1)
    return 0.0


def recall_at_k(ranked: Sequence[str], judged: dict[str, int], k: int) -> float:
    """Share of the query's relevant docs (label >= 1) found in the top k; 0 if it has none."""
    n_relevant = sum(1 for label in judged.values() if label >= 1)
    if n_relevant == 0:
        return 0.0
    return sum(1 for d in ranked[:k] if judged.get(d, 0) >= 1) / n_relevant


_METRICS: dict[str, Callable[[Sequence[str], dict[str, int], int], float]] = {
    "ndcg": ndcg_at_k,
    "mrr": mrr_at_k,
    "recall": recall_at_k,
}


def _parse_metric(name: str) -> tuple[str, int]:
    match = _METRIC_PATTERN.fullmatch(name)
    if match is None:
        raise ValueError(
            f"unknown metric {name!r}: expected '<ndcg|mrr|recall>@<k>' with k >= 1, e.g. 'ndcg@10'"
        )
    return match.group(1), int(match.group(2))


def per_query_metrics(
    run: Run, qrels: Qrels, metrics: Sequence[str] = METRIC_NAMES
) -> dict[str, dict[str, float]]:
    """Metric values per evaluated query (see the module docstring for which queries count)."""
    parsed = [_parse_metric(name) for name in metrics]
    depth = max((k for _, k in parsed), default=0)
    results: dict[str, dict[str, float]] = {}
    for query_id, scores in run.items():
        judged = qrels.get(query_id)
        if not judged:
            continue
        ranked = ranked_doc_ids(scores, depth)
        results[query_id] = {
            name: _METRICS[kind](ranked, judged, k)
            for name, (kind, k) in zip(metrics, parsed, strict=True)
        }
    return results


class Scores(dict[str, float]):
    """One method's mean of each metric (a row of a results table) that also keeps the
    per-query values it averages, ``per_query[query_id][metric]``.

    It is a plain ``{metric: mean}`` dict to every reader of results tables; a paired
    significance test reads ``per_query`` instead of scoring the ranking again.
    """

    def __init__(self, per_query: dict[str, dict[str, float]], metrics: Sequence[str]) -> None:
        super().__init__(
            {name: sum(v[name] for v in per_query.values()) / len(per_query) for name in metrics}
        )
        self.per_query = per_query


def evaluate_run(run: Run, qrels: Qrels, metrics: Sequence[str] = METRIC_NAMES) -> Scores:
    """Mean of each metric over the evaluated queries, with the per-query values.

    Raises ValueError when no query is evaluated: that means run and qrels ids do not match,
    and a silent 0.0 would hide it.
    """
    per_query = per_query_metrics(run, qrels, metrics)
    if not per_query:
        raise ValueError(
            f"no query of the run ({len(run)} queries) has qrels ({len(qrels)} queries); "
            "check that the query ids match"
        )
    return Scores(per_query, metrics)


def run_from_topk(
    query_ids: Sequence[str], doc_ids: Sequence[str], indices: np.ndarray, scores: np.ndarray
) -> Run:
    """Turn top-k search output (``n_queries x k`` doc indices and scores) into a Run.

    Negative indices are padding (fewer than k hits, as FAISS returns) and are dropped.
    """
    indices = np.asarray(indices)
    scores = np.asarray(scores)
    if indices.ndim != 2 or indices.shape != scores.shape or len(indices) != len(query_ids):
        raise ValueError(
            f"indices {indices.shape} and scores {scores.shape} must both be "
            f"(n_queries={len(query_ids)}, k)"
        )
    run: Run = {}
    for query_id, row, row_scores in zip(query_ids, indices.tolist(), scores.tolist(), strict=True):
        if query_id in run:
            raise ValueError(f"duplicate query id {query_id!r}")
        hits = [(i, s) for i, s in zip(row, row_scores, strict=True) if i >= 0]
        run[query_id] = {doc_ids[int(i)]: float(s) for i, s in hits}
        if len(run[query_id]) != len(hits):
            raise ValueError(f"query {query_id!r}: the same doc index appears twice in its top k")
    return run


def ranking_to_run(frame: pl.DataFrame) -> Run:
    """Convert a ranking frame to the ``{query: {doc: score}}`` run the metrics take."""
    run: Run = {}
    for query_id, doc_id, score in frame.select("query_id", "doc_id", "score").iter_rows():
        run.setdefault(query_id, {})[doc_id] = score
    return run
