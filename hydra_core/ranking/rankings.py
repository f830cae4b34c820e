"""Rankings as polars frames, and exact top-k search over normalised embeddings.

Every retriever in Hydra (BM25, dense teachers, the RRF ensemble, compiled heads)
returns the same long frame, one row per (query, retrieved document):
``query_id``, ``doc_id``, ``rank`` (1-based) and ``score``. Ties are ordered by doc id
descending, the order trec_eval uses, so a frame's ranks agree with its metrics.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl
import torch

RANKING_SCHEMA: dict[str, type[pl.DataType]] = {
    "query_id": pl.Utf8,
    "doc_id": pl.Utf8,
    "rank": pl.Int32,
    "score": pl.Float64,
}
_QUERY_CHUNK = 256


def ranking_frame(
    query_ids: Sequence[str], doc_ids: Sequence[str], indices: np.ndarray, scores: np.ndarray
) -> pl.DataFrame:
    """Build a ranking frame from (n_queries x k) matrices of document indices and scores."""
    n_queries, k = indices.shape
    doc_array = np.asarray(doc_ids, dtype=object)
    frame = pl.DataFrame(
        {
            "query_id": np.repeat(np.asarray(query_ids, dtype=object), k),
            "doc_id": doc_array[indices.reshape(-1)],
            "score": scores.reshape(-1).astype(np.float64),
        },
        schema_overrides={"query_id": pl.Utf8, "doc_id": pl.Utf8},
    )
    return rank_by_score(frame) if n_queries else empty_ranking()


def rank_by_score(frame: pl.DataFrame) -> pl.DataFrame:
    """(Re)number ranks within each query: score descending, then doc id descending."""
    ordered = frame.sort(["query_id", "score", "doc_id"], descending=[False, True, True])
    ranked = ordered.with_columns(
        pl.int_range(1, pl.len() + 1).over("query_id").cast(pl.Int32).alias("rank")
    )
    return ranked.select(*RANKING_SCHEMA, *[c for c in frame.columns if c not in RANKING_SCHEMA])


def empty_ranking() -> pl.DataFrame:
    return pl.DataFrame(schema=RANKING_SCHEMA)


def exact_top_k(
    query_vectors: np.ndarray | torch.Tensor, doc_vectors: np.ndarray | torch.Tensor, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices and dot-product scores of the k best documents per query, exactly.

    Queries go through in chunks so memory stays at chunk x n_docs, whatever the
    number of queries.
    """
    queries = torch.as_tensor(query_vectors, dtype=torch.float32)
    docs = torch.as_tensor(doc_vectors, dtype=torch.float32)
    k = min(k, docs.shape[0])
    all_indices, all_scores = [], []
    with torch.inference_mode():
        for start in range(0, queries.shape[0], _QUERY_CHUNK):
            scores = queries[start : start + _QUERY_CHUNK] @ docs.T
            top = torch.topk(scores, k, dim=1)
            all_indices.append(top.indices.numpy())
            all_scores.append(top.values.numpy())
    if not all_indices:
        return np.zeros((0, k), dtype=np.int64), np.zeros((0, k), dtype=np.float32)
    return np.concatenate(all_indices), np.concatenate(all_scores)
