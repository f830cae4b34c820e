"""Per-query values and the paired significance test, on real NFCorpus rankings."""

from __future__ import annotations

import itertools
import json
from typing import Any

import numpy as np
import polars as pl
import pytest
import pytrec_eval

from hydra_core.data.opened_task import OpenedTask
from hydra_core.data.retrieval_task import RetrievalTask
from hydra_core.evaluation.methods import EVAL_SPLIT, score_ranking
from hydra_core.evaluation.metrics import METRIC_NAMES, Scores, evaluate_run, ranking_to_run
from hydra_core.evaluation.report import ResultsTable, results_json, results_text
from hydra_core.evaluation.significance import (
    paired_test,
    paired_tests,
    per_query_frame,
    randomisation_p_value,
    table_from_per_query,
)
from hydra_core.ranking.rankings import rank_by_score
from hydra_core.ranking.teacher_rankings import FUSED_DEPTH, bm25_rankings


@pytest.fixture(scope="module")
def bm25(nfcorpus_slice: RetrievalTask) -> pl.DataFrame:
    """BM25's ranking of the slice's 30 test queries."""
    return bm25_rankings(OpenedTask(nfcorpus_slice), nfcorpus_slice.split_queries(EVAL_SPLIT))


@pytest.fixture(scope="module")
def oracle(nfcorpus_slice: RetrievalTask, bm25: pl.DataFrame) -> pl.DataFrame:
    """BM25's ranking with each query's relevant documents lifted to the top."""
    relevant = [
        (query_id, doc_id, 1_000.0)
        for query_id, judged in nfcorpus_slice.qrels_dict(EVAL_SPLIT).items()
        for doc_id, label in judged.items()
        if label > 0
    ]
    lifted = pl.DataFrame(
        relevant,
        schema={"query_id": pl.String, "doc_id": pl.String, "score": pl.Float64},
        orient="row",
    )
    rows = pl.concat([bm25.select("query_id", "doc_id", "score"), lifted])
    return rank_by_score(rows.group_by("query_id", "doc_id").agg(pl.col("score").max()))


def test_per_query_values_average_exactly_to_the_table_and_match_pytrec_eval(
    nfcorpus_slice: RetrievalTask, bm25: pl.DataFrame
) -> None:
    scores = score_ranking(bm25, nfcorpus_slice)
    run = ranking_to_run(bm25.filter(pl.col("rank") <= FUSED_DEPTH))
    qrels = nfcorpus_slice.qrels_dict(EVAL_SPLIT)
    assert dict(scores) == dict(evaluate_run(run, qrels))
    evaluator: Any = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100"})
    reference = evaluator.evaluate(run)
    assert set(scores.per_query) == set(reference) and len(reference) == 30
    for query_id, values in reference.items():
        ours = scores.per_query[query_id]
        assert ours["ndcg@10"] == pytest.approx(values["ndcg_cut_10"], abs=1e-9), query_id
        assert ours["recall@100"] == pytest.approx(values["recall_100"], abs=1e-9), query_id
    for metric in METRIC_NAMES:
        values = [row[metric] for row in scores.per_query.values()]
        assert scores[metric] == sum(values) / len(values)

    # Stored as long rows and read back, the means are still exactly the table's.
    frame = per_query_frame("nfcorpus", {"bm25": scores}, EVAL_SPLIT)
    assert frame.height == 30 * len(METRIC_NAMES)
    assert set(frame["split"]) == {EVAL_SPLIT} and set(frame["task"]) == {"nfcorpus"}
    back = table_from_per_query(frame)
    assert back == {"bm25": scores}
    row = back["bm25"]
    assert isinstance(row, Scores) and row.per_query == scores.per_query


def test_identical_runs_give_p_one(nfcorpus_slice: RetrievalTask, bm25: pl.DataFrame) -> None:
    scores = score_ranking(bm25, nfcorpus_slice)
    (test,) = paired_tests("nfcorpus", {"base": scores, "bm25": scores, "hydra": scores})
    assert (test.method, test.reference, test.queries) == ("hydra", "base", 30)
    assert test.delta == 0.0 and test.p_value == 1.0 and not test.significant


def test_a_clearly_better_run_is_significant_in_both_directions(
    nfcorpus_slice: RetrievalTask, bm25: pl.DataFrame, oracle: pl.DataFrame
) -> None:
    base, better = score_ranking(bm25, nfcorpus_slice), score_ranking(oracle, nfcorpus_slice)
    table = {"base": base, "teacher": better, "hydra": better, "hydra-unseen": base}
    tests = {(t.method, t.reference): t for t in paired_tests("nfcorpus", table)}
    assert set(tests) == {
        ("hydra", "base"),
        ("hydra", "teacher"),
        ("hydra-unseen", "base"),
        ("hydra-unseen", "teacher"),
    }
    gain = tests["hydra", "base"]
    assert gain.delta == pytest.approx(better["ndcg@10"] - base["ndcg@10"], abs=1e-12)
    assert gain.delta > 0.3 and gain.p_value < 0.001 and gain.significant
    loss = tests["hydra-unseen", "teacher"]
    assert loss.delta == pytest.approx(-gain.delta) and loss.p_value == gain.p_value
    assert tests["hydra", "teacher"].p_value == 1.0


def test_few_queries_are_tested_exactly() -> None:
    """Up to 13 queries every sign pattern is enumerated: the p-value is the exact one."""
    differences = np.array([0.3, 0.1, -0.05, 0.2, 0.0, 0.15, 0.25, -0.1])
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=len(differences))))
    null = (signs * differences).mean(axis=1)
    observed = differences.mean()
    tail = min((null >= observed - 1e-12).mean(), (null <= observed + 1e-12).mean())
    assert randomisation_p_value(differences) == pytest.approx(min(1.0, 2 * tail))
    assert randomisation_p_value(np.array([0.4])) == 1.0  # one query: either sign as likely


def test_queries_are_paired_by_id_and_disjoint_ids_refused() -> None:
    test = paired_test("t", "hydra", "base", {"a": 0.5, "b": 0.9, "c": 1.0}, {"b": 0.4, "a": 0.5})
    assert (test.queries, test.delta) == (2, pytest.approx(0.25))
    with pytest.raises(ValueError, match="t: hydra and base share no scored query"):
        paired_test("t", "hydra", "base", {"a": 0.5}, {"b": 0.5})


def test_significance_in_json_and_text(
    nfcorpus_slice: RetrievalTask, bm25: pl.DataFrame, oracle: pl.DataFrame
) -> None:
    table: ResultsTable = {
        "base": score_ranking(bm25, nfcorpus_slice),
        "hydra": score_ranking(oracle, nfcorpus_slice),
    }
    tests = paired_tests("nfcorpus", table)
    record = json.loads(results_json("nfcorpus", table, tests))
    entry = record["significance"]["hydra"]["base"]
    assert entry == {
        "metric": "ndcg@10",
        "delta": tests[0].delta,
        "p_value": tests[0].p_value,
        "queries": 30,
        "significant": True,
    }
    assert record["methods"]["hydra"] == table["hydra"]
    assert "significance" not in json.loads(results_json("nfcorpus", table))
    text = results_text("nfcorpus", table, tests)
    assert "ndcg@10 difference, paired randomisation test (* significant, p < 0.05):" in text
    assert (
        f"    hydra vs base  {tests[0].delta:+.4f}*  p {tests[0].p_value:.4f}  30 queries" in text
    )
