"""Reciprocal Rank Fusion: combine teachers by rank, not by their incomparable scores.

RRF (Cormack et al., 2009) scores a document ``sum_t w_t / (k + rank_t)`` over the
teachers that retrieved it. Fusing orderings is what lets BM25 and dense models teach
together, and it is what Hydra distils.
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from hydra_core.ranking.rankings import rank_by_score

DEFAULT_RRF_K = 60


def reciprocal_rank_fusion(
    rankings: Mapping[str, pl.DataFrame],
    *,
    k: int = DEFAULT_RRF_K,
    weights: Mapping[str, float] | None = None,
    depth: int | None = None,
) -> pl.DataFrame:
    """Fuse ranking frames into one, keeping each teacher's rank as ``rank_<teacher>``.

    ``weights`` defaults to 1 per teacher; ``depth`` keeps the fused top-``depth`` per query.
    A teacher's rank column is null where it did not retrieve the document.
    """
    if not rankings:
        raise ValueError("reciprocal_rank_fusion needs at least one ranking")
    weights = dict(weights or {})
    unknown = set(weights) - set(rankings)
    if unknown:
        raise ValueError(f"weights name unknown teachers {sorted(unknown)}; have {list(rankings)}")
    if k <= 0:
        raise ValueError(f"RRF k must be positive, got {k}")
    contributions = [
        frame.select(
            "query_id",
            "doc_id",
            pl.lit(name).alias("teacher"),
            pl.col("rank"),
            (weights.get(name, 1.0) / (k + pl.col("rank"))).alias("score"),
        )
        for name, frame in rankings.items()
    ]
    long = pl.concat(contributions)
    fused = long.group_by("query_id", "doc_id").agg(pl.col("score").sum())
    teacher_ranks = long.pivot(on="teacher", index=["query_id", "doc_id"], values="rank")
    silent = [name for name in rankings if name not in teacher_ranks.columns]  # retrieved nothing
    teacher_ranks = teacher_ranks.with_columns(
        pl.lit(None, dtype=pl.Int32).alias(name) for name in silent
    ).select("query_id", "doc_id", *(pl.col(name).alias(f"rank_{name}") for name in rankings))
    fused = rank_by_score(fused.join(teacher_ranks, on=["query_id", "doc_id"], how="left"))
    return fused.filter(pl.col("rank") <= depth) if depth is not None else fused
