"""Reciprocal Rank Fusion and ranking frames."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from hydra_core.evaluation.metrics import ranking_to_run
from hydra_core.ranking.fusion import reciprocal_rank_fusion
from hydra_core.ranking.rankings import exact_top_k, ranking_frame
from hydra_core.training.preferences import preference_pairs


def _ranking(query: str, docs: list[str]) -> pl.DataFrame:
    scores = np.arange(len(docs), 0, -1, dtype=np.float64)[None, :]
    return ranking_frame([query], docs, np.arange(len(docs))[None, :], scores)


def test_rrf_scores_sum_reciprocal_ranks() -> None:
    fused = reciprocal_rank_fusion(
        {"bm25": _ranking("q", ["a", "b", "c"]), "base": _ranking("q", ["b", "d"])}, k=60
    )
    scores = dict(zip(fused["doc_id"], fused["score"], strict=True))
    assert scores["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert scores["a"] == pytest.approx(1 / 61)
    assert scores["d"] == pytest.approx(1 / 62)
    assert fused["doc_id"].to_list() == ["b", "a", "d", "c"]
    assert fused["rank"].to_list() == [1, 2, 3, 4]
    row_d = fused.filter(pl.col("doc_id") == "d")
    assert row_d["rank_base"].item() == 2
    assert row_d["rank_bm25"].item() is None


def test_rrf_weights_and_depth() -> None:
    rankings = {"bm25": _ranking("q", ["a", "b"]), "base": _ranking("q", ["b", "a"])}
    fused = reciprocal_rank_fusion(rankings, weights={"base": 3.0}, depth=1)
    assert fused["doc_id"].to_list() == ["b"]
    with pytest.raises(ValueError, match="unknown teachers"):
        reciprocal_rank_fusion(rankings, weights={"splade": 1.0})
    with pytest.raises(ValueError, match="at least one"):
        reciprocal_rank_fusion({})


def test_ties_are_ordered_by_doc_id_descending_like_trec_eval() -> None:
    frame = ranking_frame(
        ["q"], ["a", "b", "c"], np.array([[0, 1, 2]]), np.array([[1.0, 1.0, 2.0]])
    )
    assert frame["doc_id"].to_list() == ["c", "b", "a"]
    assert ranking_to_run(frame) == {"q": {"c": 2.0, "b": 1.0, "a": 1.0}}


def test_exact_top_k_matches_full_sort() -> None:
    rng = np.random.default_rng(0)
    queries, docs = rng.normal(size=(300, 16)), rng.normal(size=(50, 16))
    indices, scores = exact_top_k(queries, docs, 5)
    expected = np.argsort(-(queries @ docs.T), axis=1)[:, :5]
    np.testing.assert_array_equal(indices, expected)
    assert scores.shape == (300, 5)


def test_a_teacher_that_retrieved_nothing_still_has_its_rank_column() -> None:
    silent = ranking_frame([], [], np.zeros((0, 3), dtype=np.int64), np.zeros((0, 3)))
    fused = reciprocal_rank_fusion({"bm25": silent, "base": _ranking("q", ["a", "b"])})
    assert fused.columns[-2:] == ["rank_bm25", "rank_base"]
    assert fused["rank_bm25"].null_count() == 2 and fused["doc_id"].to_list() == ["a", "b"]
    nothing = reciprocal_rank_fusion({"bm25": silent, "base": silent})
    assert nothing.is_empty() and preference_pairs(nothing).is_empty()
