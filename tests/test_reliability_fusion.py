"""Property tests of Reciprocal Rank Fusion, the teacher signal Hydra distils.

RRF decides every preference pair the hypernet trains on, so its invariants are checked on
random rankings: scores stay inside their bounds, the input's teacher and row order changes
nothing, a unanimous first place stays first, and weights scale contributions linearly.
"""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hydra_core.ranking.fusion import reciprocal_rank_fusion

QUERIES = ["q1", "q2", "q3"]
DOCS = [f"d{i}" for i in range(12)]
TEACHERS = ["bm25", "base", "splade", "colbert"]

prop = settings(max_examples=80, deadline=None)

# One teacher's ranking: per query, an ordered list of distinct documents (rank = position).
teacher_st = st.dictionaries(
    st.sampled_from(QUERIES), st.lists(st.sampled_from(DOCS), min_size=1, unique=True), min_size=1
)
rankings_st = st.dictionaries(st.sampled_from(TEACHERS), teacher_st, min_size=1)
k_st = st.integers(1, 100)
weight_st = st.floats(0.05, 20.0, allow_nan=False, allow_infinity=False)


def _frame(ranked: dict[str, list[str]]) -> pl.DataFrame:
    rows = [
        (query, doc, rank, float(len(docs) - rank))
        for query, docs in ranked.items()
        for rank, doc in enumerate(docs, start=1)
    ]
    return pl.DataFrame(
        rows,
        schema={"query_id": pl.String, "doc_id": pl.String, "rank": pl.Int32, "score": pl.Float64},
        orient="row",
    )


def _frames(rankings: dict[str, dict[str, list[str]]]) -> dict[str, pl.DataFrame]:
    return {teacher: _frame(ranked) for teacher, ranked in rankings.items()}


def _scores(fused: pl.DataFrame) -> dict[tuple[str, str], float]:
    return {(q, d): s for q, d, s in fused.select("query_id", "doc_id", "score").iter_rows()}


def _expected(
    rankings: dict[str, dict[str, list[str]]], k: int, weights: dict[str, float]
) -> dict[tuple[str, str], float]:
    """RRF written out from its definition, independently of the polars implementation."""
    expected: dict[tuple[str, str], float] = {}
    for teacher, ranked in rankings.items():
        for query, docs in ranked.items():
            for rank, doc in enumerate(docs, start=1):
                key = (query, doc)
                expected[key] = expected.get(key, 0.0) + weights.get(teacher, 1.0) / (k + rank)
    return expected


@prop
@given(rankings=rankings_st, k=k_st, data=st.data())
def test_scores_follow_the_definition_and_stay_in_bounds(
    rankings: dict[str, dict[str, list[str]]], k: int, data: st.DataObject
) -> None:
    weights = {t: data.draw(weight_st, label=f"w_{t}") for t in rankings}
    fused = reciprocal_rank_fusion(_frames(rankings), k=k, weights=weights)
    expected = _expected(rankings, k, weights)
    scores = _scores(fused)
    assert scores.keys() == expected.keys()
    assert scores == pytest.approx(expected, rel=1e-12)
    upper = sum(weights.values()) / (k + 1)
    assert all(0.0 < score <= upper * (1 + 1e-12) for score in scores.values())
    # Ranks are 1..n per query, in score order.
    for (query,), group in fused.group_by(["query_id"]):
        assert sorted(group["rank"].to_list()) == list(range(1, group.height + 1))
        by_rank = group.sort("rank")["score"].to_list()
        assert by_rank == sorted(by_rank, reverse=True), query
    # Each teacher's rank column is its own rank of the document, null where it missed it.
    for teacher, ranked in rankings.items():
        column = dict(
            zip(
                zip(fused["query_id"], fused["doc_id"], strict=True),
                fused[f"rank_{teacher}"],
                strict=True,
            )
        )
        for (query, doc), rank in column.items():
            docs = ranked.get(query, [])
            assert rank == (docs.index(doc) + 1 if doc in docs else None)


@prop
@given(rankings=rankings_st, k=k_st, data=st.data())
def test_teacher_order_and_row_order_change_nothing(
    rankings: dict[str, dict[str, list[str]]], k: int, data: st.DataObject
) -> None:
    frames = _frames(rankings)
    reference = reciprocal_rank_fusion(frames, k=k)
    order = data.draw(st.permutations(list(frames)), label="teacher order")
    shuffled = {}
    for teacher in order:
        frame = frames[teacher]
        rows = data.draw(st.permutations(list(range(frame.height))), label=f"rows of {teacher}")
        shuffled[teacher] = frame[rows]
    fused = reciprocal_rank_fusion(shuffled, k=k)
    columns = reference.columns
    assert set(fused.columns) == set(columns)
    # Same documents at the same ranks with the same scores (up to float summation order).
    key = ["query_id", "rank"]
    left = reference.sort(key).select(columns)
    right = fused.sort(key).select(columns)
    assert left.drop("score").equals(right.drop("score"))
    assert right["score"].to_list() == pytest.approx(left["score"].to_list(), rel=1e-12)


@prop
@given(rankings=rankings_st, k=k_st, data=st.data())
def test_a_unanimous_first_place_is_fused_first(
    rankings: dict[str, dict[str, list[str]]], k: int, data: st.DataObject
) -> None:
    # Every teacher ranks "winner" first for q1 (and keeps its other documents after it).
    unanimous = {
        teacher: {
            **ranked,
            "q1": ["winner", *ranked.get("q1", [])],
        }
        for teacher, ranked in rankings.items()
    }
    weights = {t: data.draw(weight_st, label=f"w_{t}") for t in unanimous}
    fused = reciprocal_rank_fusion(_frames(unanimous), k=k, weights=weights)
    first = fused.filter((pl.col("query_id") == "q1") & (pl.col("rank") == 1))
    assert first["doc_id"].to_list() == ["winner"]
    assert first["score"].item() == pytest.approx(sum(weights.values()) / (k + 1), rel=1e-12)
    depth_one = reciprocal_rank_fusion(_frames(unanimous), k=k, weights=weights, depth=1)
    assert depth_one.filter(pl.col("query_id") == "q1")["doc_id"].to_list() == ["winner"]


@prop
@given(rankings=rankings_st, k=k_st, factor=st.floats(0.01, 100.0), data=st.data())
def test_weights_scale_contributions(
    rankings: dict[str, dict[str, list[str]]], k: int, factor: float, data: st.DataObject
) -> None:
    frames = _frames(rankings)
    plain = _scores(reciprocal_rank_fusion(frames, k=k))
    # Scaling every weight scales every score and keeps the order.
    scaled_weights = dict.fromkeys(frames, factor)
    scaled = reciprocal_rank_fusion(frames, k=k, weights=scaled_weights)
    assert _scores(scaled) == pytest.approx({key: factor * v for key, v in plain.items()})
    # Raising one teacher's weight adds exactly its extra contribution to its documents.
    teacher = data.draw(st.sampled_from(sorted(frames)), label="boosted teacher")
    weight = data.draw(weight_st, label="weight")
    boosted = _scores(reciprocal_rank_fusion(frames, k=k, weights={teacher: weight}))
    extra = _expected({teacher: rankings[teacher]}, k, {teacher: weight - 1.0})
    assert boosted == pytest.approx(
        {key: value + extra.get(key, 0.0) for key, value in plain.items()}, rel=1e-9, abs=1e-15
    )
