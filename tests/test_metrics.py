"""Metrics must reproduce pytrec_eval (BEIR/MTEB numbers) exactly, on hand cases and real runs."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import bm25s
import numpy as np
import pytest
import pytrec_eval
from hypothesis import given, settings
from hypothesis import strategies as st

from hydra_core.evaluation.metrics import (
    METRIC_NAMES,
    Qrels,
    Run,
    evaluate_run,
    mrr_at_k,
    ndcg_at_k,
    per_query_metrics,
    ranked_doc_ids,
    recall_at_k,
    run_from_topk,
)
from hydra_core.settings import load_settings

TOL = 1e-9
LOG2_3 = math.log2(3)

# --------------------------------------------------------------------------- hand-computed cases


def test_ranking_sorts_by_score_then_doc_id_descending() -> None:
    scores = {"a": 1.0, "b": 1.0, "c": 2.0, "B": 1.0, "aa": 1.0}
    assert ranked_doc_ids(scores) == ["c", "b", "aa", "a", "B"]
    assert ranked_doc_ids(scores, 2) == ["c", "b"]
    assert ranked_doc_ids(scores, 0) == []
    assert ranked_doc_ids({}) == []


def test_ranking_compares_scores_in_float32_like_trec_eval() -> None:
    # 1 + 1e-9 == 1 in float32, so this is a tie and the larger doc id wins.
    assert ranked_doc_ids({"a": 1.0 + 1e-9, "b": 1.0}) == ["b", "a"]
    assert ranked_doc_ids({"a": 1.0 + 1e-6, "b": 1.0}) == ["a", "b"]
    assert ranked_doc_ids({"a": 0.0, "b": -0.0}) == ["b", "a"]


def test_ranking_rejects_nan_and_negative_k() -> None:
    with pytest.raises(ValueError, match="NaN"):
        ranked_doc_ids({"a": float("nan")})
    with pytest.raises(ValueError, match="k must be"):
        ranked_doc_ids({"a": 1.0}, -1)


def test_ndcg_graded_labels_and_ties() -> None:
    # Scores tie for a and b: trec_eval order is c (label 0), b (label 2), a (label 1).
    ranked = ranked_doc_ids({"a": 1.0, "b": 1.0, "c": 2.0})
    judged = {"a": 1, "b": 2, "c": 0}
    idcg = 2 + 1 / LOG2_3
    assert ndcg_at_k(ranked, judged, 10) == pytest.approx((2 / LOG2_3 + 1 / 2) / idcg, abs=TOL)
    assert ndcg_at_k(ranked, judged, 2) == pytest.approx((2 / LOG2_3) / idcg, abs=TOL)
    assert ndcg_at_k(ranked, judged, 1) == 0.0
    # The ideal DCG uses judged docs that were never retrieved, cut at k.
    assert ndcg_at_k(["b"], {"a": 1, "b": 2, "z": 2}, 1) == pytest.approx(1.0, abs=TOL)
    assert ndcg_at_k(["b"], {"a": 1, "b": 2, "z": 2}, 2) == pytest.approx(
        2 / (2 + 2 / LOG2_3), abs=TOL
    )


def test_ndcg_zero_and_negative_labels_give_no_gain() -> None:
    assert ndcg_at_k(["x", "y"], {"x": -1, "y": 1}, 10) == pytest.approx(1 / LOG2_3, abs=TOL)
    assert ndcg_at_k(["x", "y"], {"x": 0, "y": 0}, 10) == 0.0
    assert ndcg_at_k(["u", "y"], {"y": 3}, 10) == pytest.approx(1 / LOG2_3, abs=TOL)
    assert ndcg_at_k([], {"y": 3}, 10) == 0.0


def test_mrr_first_relevant_within_k() -> None:
    judged = {"c": 1, "a": 0, "d": 2}
    assert mrr_at_k(["a", "b", "c"], judged, 3) == pytest.approx(1 / 3)
    assert mrr_at_k(["a", "b", "c"], judged, 2) == 0.0
    assert mrr_at_k(["d", "c"], judged, 10) == 1.0  # label 2 is relevant too
    assert mrr_at_k(["a"], judged, 10) == 0.0  # label 0 is not


def test_recall_counts_labels_at_least_one() -> None:
    judged = {"a": 1, "b": 2, "c": 0, "d": 1}
    assert recall_at_k(["c", "a", "x"], judged, 3) == pytest.approx(1 / 3)
    assert recall_at_k(["c", "a", "x"], judged, 1) == 0.0
    assert recall_at_k(["a", "b", "d"], judged, 100) == 1.0
    assert recall_at_k(["c"], {"c": 0}, 10) == 0.0


def test_query_selection_mirrors_pytrec_eval() -> None:
    run: Run = {
        "judged": {"a": 1.0, "b": 1.0, "c": 2.0},
        "all_zero_labels": {"a": 1.0},
        "no_qrels": {"a": 1.0},
        "empty_ranking": {},
        "empty_qrels_dict": {"a": 1.0},
    }
    qrels: Qrels = {
        "judged": {"a": 1, "b": 2, "c": 0},
        "all_zero_labels": {"a": 0},
        "empty_ranking": {"a": 1},
        "empty_qrels_dict": {},
        "not_in_run": {"a": 1},
    }
    ours = per_query_metrics(run, qrels)
    assert set(ours) == {"judged", "all_zero_labels", "empty_ranking"}
    assert ours["all_zero_labels"] == dict.fromkeys(METRIC_NAMES, 0.0)
    assert ours["empty_ranking"] == dict.fromkeys(METRIC_NAMES, 0.0)
    assert ours["judged"]["mrr@10"] == 0.5
    assert ours["judged"]["recall@100"] == 1.0
    _assert_matches_pytrec_eval(run, qrels, 10, 100, 10)

    means = evaluate_run(run, qrels)
    assert means["mrr@10"] == pytest.approx(0.5 / 3)
    assert means["recall@100"] == pytest.approx(1 / 3)


def test_evaluate_run_refuses_disjoint_ids() -> None:
    with pytest.raises(ValueError, match="query ids match"):
        evaluate_run({"q1": {"a": 1.0}}, {"Q1": {"a": 1}})


@pytest.mark.parametrize("name", ["map@10", "ndcg@0", "ndcg10", "NDCG@10", "ndcg_cut_10", "mrr@"])
def test_unknown_metric_is_named(name: str) -> None:
    with pytest.raises(ValueError, match=repr(name).replace("[", r"\[")):
        per_query_metrics({"q": {"a": 1.0}}, {"q": {"a": 1}}, ["ndcg@10", name])


def test_custom_cutoffs() -> None:
    out = per_query_metrics({"q": {"a": 2.0, "b": 1.0}}, {"q": {"b": 1}}, ["mrr@1", "recall@2"])
    assert out == {"q": {"mrr@1": 0.0, "recall@2": 1.0}}


def test_run_from_topk() -> None:
    indices = np.array([[2, 0, -1], [1, 2, 0]])
    scores = np.array([[0.9, 0.5, -np.inf], [3.0, 2.0, 1.0]], dtype=np.float32)
    run = run_from_topk(["q1", "q2"], ["d0", "d1", "d2"], indices, scores)
    assert run == {"q1": {"d2": pytest.approx(0.9), "d0": 0.5}, "q2": {"d1": 3, "d2": 2, "d0": 1}}
    assert all(type(s) is float for ranking in run.values() for s in ranking.values())
    with pytest.raises(ValueError, match="n_queries=1"):
        run_from_topk(["q1"], ["d0"], indices, scores)
    with pytest.raises(ValueError, match="twice"):
        run_from_topk(["q1"], ["d0", "d1"], np.array([[1, 1]]), np.array([[1.0, 0.5]]))


# --------------------------------------------------------------------------- pytrec_eval oracle


def _pytrec_eval(run: Run, qrels: Qrels, measures: set[str]) -> dict[str, dict[str, float]]:
    evaluator: Any = pytrec_eval.RelevanceEvaluator(qrels, measures)
    return evaluator.evaluate(run)


def _assert_matches_pytrec_eval(
    run: Run, qrels: Qrels, k_ndcg: int, k_recall: int, k_mrr: int
) -> None:
    """Per query and in mean; MRR@k is recip_rank on the run cut to its trec_eval top k."""
    names = [f"ndcg@{k_ndcg}", f"recall@{k_recall}", f"mrr@{k_mrr}"]
    ours = per_query_metrics(run, qrels, names)
    ref = _pytrec_eval(run, qrels, {f"ndcg_cut.{k_ndcg}", f"recall.{k_recall}", "recip_rank"})
    cut = {q: {d: s[d] for d in ranked_doc_ids(s, k_mrr)} for q, s in run.items()}
    ref_mrr = _pytrec_eval(cut, qrels, {"recip_rank"})
    assert set(ours) == set(ref) == set(ref_mrr)
    for q, values in ref.items():
        # Independent of our ranking code: recip_rank on the full run, kept only if rank <= k.
        rr = values["recip_rank"]
        rr_cut = rr if rr > 0 and round(1 / rr) <= k_mrr else 0.0
        expected = [values[f"ndcg_cut_{k_ndcg}"], values[f"recall_{k_recall}"], rr_cut]
        assert [ours[q][n] for n in names] == pytest.approx(expected, abs=TOL), q
        assert ours[q][f"mrr@{k_mrr}"] == pytest.approx(ref_mrr[q]["recip_rank"], abs=TOL), q
    if ref:
        means = evaluate_run(run, qrels, names)
        for name, measure in [(names[0], f"ndcg_cut_{k_ndcg}"), (names[1], f"recall_{k_recall}")]:
            ref_mean = np.mean([v[measure] for v in ref.values()])
            assert means[name] == pytest.approx(ref_mean, abs=TOL)
        ref_mean_mrr = np.mean([v["recip_rank"] for v in ref_mrr.values()])
        assert means[f"mrr@{k_mrr}"] == pytest.approx(ref_mean_mrr, abs=TOL)


# --------------------------------------------------------------------------- real BM25 runs


def _dataset_dir(name: str) -> Path:
    data_dir = load_settings().data_dir
    if data_dir is None or not (data_dir / name / "corpus.jsonl").is_file():
        pytest.skip(f"dataset {name!r} not found under data_dir={data_dir}")
    return data_dir / name


def _load_beir(name: str) -> tuple[list[dict[str, str]], dict[str, str], Qrels]:
    folder = _dataset_dir(name)
    with open(folder / "corpus.jsonl", encoding="utf-8") as f:
        corpus = [json.loads(line) for line in f]
    with open(folder / "queries.jsonl", encoding="utf-8") as f:
        queries = {(q := json.loads(line))["_id"]: q["text"] for line in f}
    qrels: Qrels = {}
    with open(folder / "qrels" / "test.tsv", encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            qrels.setdefault(row["query-id"], {})[row["corpus-id"]] = int(row["score"])
    return corpus, queries, qrels


def _bm25_run(
    corpus: list[dict[str, str]], queries: list[str], query_ids: list[str], k: int, **tok: Any
) -> Run:
    retriever = bm25s.BM25()
    texts = [f"{d['title']} {d['text']}" for d in corpus]
    retriever.index(bm25s.tokenize(texts, stopwords="en", show_progress=False, **tok))
    query_tokens = bm25s.tokenize(queries, stopwords="en", show_progress=False, **tok)
    indices, scores = retriever.retrieve(query_tokens, k=k, show_progress=False)
    return run_from_topk(query_ids, [d["_id"] for d in corpus], indices, scores)


@pytest.fixture(scope="module", params=["nfcorpus", "scifact"])
def real_slice(request: pytest.FixtureRequest) -> tuple[str, Run, Qrels]:
    """BM25 over the first 2,000 docs plus every doc judged for the first 100 test queries."""
    corpus, queries, qrels = _load_beir(request.param)
    query_ids = list(qrels)[:100]
    judged = {d for q in query_ids for d in qrels[q]}
    docs = [d for i, d in enumerate(corpus) if i < 2000 or d["_id"] in judged]
    run = _bm25_run(docs, [queries[q] for q in query_ids], query_ids, k=150)
    return request.param, run, {q: qrels[q] for q in query_ids}


def test_real_bm25_runs_match_pytrec_eval(real_slice: tuple[str, Run, Qrels]) -> None:
    name, run, qrels = real_slice
    if name == "nfcorpus":  # the point of this slice: graded labels
        assert any(label == 2 for judged in qrels.values() for label in judged.values())
    # Ties occur (zero scores beyond the matching docs), so tie-breaking is exercised.
    assert any(len(set(s.values())) < len(s) for s in run.values())
    _assert_matches_pytrec_eval(run, qrels, 10, 100, 10)
    # Also through the public default API.
    ours = evaluate_run(run, qrels)
    ref = _pytrec_eval(run, qrels, {"ndcg_cut.10", "recall.100"})
    assert ours["ndcg@10"] == pytest.approx(np.mean([v["ndcg_cut_10"] for v in ref.values()]))


@pytest.mark.parametrize(("name", "published"), [("scifact", 0.687), ("nfcorpus", 0.321)])
def test_full_bm25_matches_published_ndcg(name: str, published: float) -> None:
    """Whole test split with bm25s + English stemmer lands on the README's published NDCG@10."""
    stemmer_module = pytest.importorskip("Stemmer")
    corpus, queries, qrels = _load_beir(name)
    query_ids = list(qrels)
    stemmer = stemmer_module.Stemmer("english")
    run = _bm25_run(corpus, [queries[q] for q in query_ids], query_ids, k=100, stemmer=stemmer)
    assert evaluate_run(run, qrels)["ndcg@10"] == pytest.approx(published, abs=0.005)


# --------------------------------------------------------------------------- properties

DOC_IDS = ["a", "b", "c", "d", "e", "f", "A", "aa", "b1", "é"]
QUERY_IDS = ["q1", "q2", "q3"]
scores_st = st.one_of(
    st.integers(0, 2).map(float),
    st.sampled_from([0.0, -0.0, 0.5, 1.0, 1.0 + 1e-9, 1.0 + 1e-6, -1.5]),
    st.floats(-10, 10, allow_nan=False),
)
ranking_st = st.dictionaries(st.sampled_from(DOC_IDS), scores_st)
judged_st = st.dictionaries(st.sampled_from(DOC_IDS), st.integers(0, 3))
run_st = st.dictionaries(st.sampled_from(QUERY_IDS), ranking_st)
qrels_st = st.dictionaries(st.sampled_from(QUERY_IDS), judged_st)
k_st = st.integers(1, 7)
prop = settings(max_examples=200, deadline=None)


@prop
@given(run=run_st, qrels=qrels_st, k_ndcg=k_st, k_recall=k_st, k_mrr=k_st)
def test_random_runs_match_pytrec_eval(
    run: Run, qrels: Qrels, k_ndcg: int, k_recall: int, k_mrr: int
) -> None:
    _assert_matches_pytrec_eval(run, qrels, k_ndcg, k_recall, k_mrr)


@prop
@given(scores=ranking_st)
def test_ranking_matches_trec_eval_order(scores: dict[str, float]) -> None:
    # One pseudo-query per doc, judging only that doc: recip_rank reveals trec_eval's rank of it.
    ref = _pytrec_eval({d: scores for d in scores}, {d: {d: 1} for d in scores}, {"recip_rank"})
    trec_order = sorted(scores, key=lambda d: round(1 / ref[d]["recip_rank"]))
    assert ranked_doc_ids(scores) == trec_order


@prop
@given(run=run_st, qrels=qrels_st, k=k_st)
def test_metrics_lie_in_unit_interval(run: Run, qrels: Qrels, k: int) -> None:
    for values in per_query_metrics(run, qrels, [f"ndcg@{k}", f"mrr@{k}", f"recall@{k}"]).values():
        assert all(0.0 <= v <= 1.0 for v in values.values())


@prop
@given(run=run_st, qrels=qrels_st, data=st.data())
def test_invariant_to_dict_order(run: Run, qrels: Qrels, data: st.DataObject) -> None:
    def shuffled(mapping: dict[str, Any]) -> dict[str, Any]:
        keys = data.draw(st.permutations(list(mapping)))
        return {
            key: shuffled(mapping[key]) if isinstance(mapping[key], dict) else mapping[key]
            for key in keys
        }

    assert per_query_metrics(shuffled(run), shuffled(qrels)) == per_query_metrics(run, qrels)


@prop
@given(judged=judged_st.filter(lambda j: any(v > 0 for v in j.values())), k=k_st)
def test_perfect_ranking_scores_one(judged: dict[str, int], k: int) -> None:
    scores = {d: float(judged.get(d, -1)) for d in DOC_IDS}  # unjudged docs last
    ranked = ranked_doc_ids(scores)
    assert ndcg_at_k(ranked, judged, k) == pytest.approx(1.0, abs=TOL)
    assert mrr_at_k(ranked, judged, k) == 1.0
    n_relevant = sum(v >= 1 for v in judged.values())
    assert recall_at_k(ranked, judged, k) == pytest.approx(min(k, n_relevant) / n_relevant)
