"""Teachers on real data slices: BM25 (bm25s), the dense base, and their RRF ensemble."""

from __future__ import annotations

from hydra_core.data.opened_task import OpenedTask
from hydra_core.data.retrieval_task import RetrievalTask
from hydra_core.encoding.encoder import FrozenEncoder
from hydra_core.evaluation.metrics import METRIC_NAMES
from hydra_core.ranking.teachers import BM25Teacher
from hydra_core.workflows import task_baselines


def test_bm25_ranks_an_exact_title_first(scifact_slice: RetrievalTask) -> None:
    row = scifact_slice.corpus.row(7, named=True)
    index = BM25Teacher().index(scifact_slice.corpus["doc_id"].to_list(), scifact_slice.doc_texts())
    ranking = index.search(["q"], [row["title"]], k=5)
    assert ranking["doc_id"][0] == row["doc_id"]
    assert ranking["rank"].to_list() == [1, 2, 3, 4, 5]


def test_baseline_table_has_every_method_and_metric(
    scifact_slice: RetrievalTask, encoder: FrozenEncoder
) -> None:
    table = task_baselines(OpenedTask(scifact_slice, encoder), encoder)
    assert set(table) == {"bm25", "base", "teacher"}
    for metrics in table.values():
        assert set(metrics) == set(METRIC_NAMES)
        assert all(0.0 <= value <= 1.0 for value in metrics.values())
    # On a 300-document slice holding every judged document, all three find most of them.
    assert min(m["recall@100"] for m in table.values()) > 0.8
    assert table["teacher"]["ndcg@10"] > 0.5


def test_bm25_over_one_document_and_for_no_queries() -> None:
    index = BM25Teacher().index(["d1"], ["Vitamin D and bone density in older adults"])
    ranking = index.search(["q1", "q2"], ["bone density", "zebra"], k=100)
    assert ranking.select("query_id", "doc_id", "rank").rows() == [("q1", "d1", 1), ("q2", "d1", 1)]
    scores = dict(zip(ranking["query_id"], ranking["score"], strict=True))
    assert scores["q1"] > 0 and scores["q2"] == 0
    assert index.search([], [], k=100).is_empty()  # a task with no training queries
    # A document without an indexable word matches no query (bm25s scores both through "").
    wordless = BM25Teacher().index(["d1"], ["The."])
    assert wordless.search(["q"], ["zebra"], k=10)["score"].to_list() == [0.0]


def test_bm25_scores_leave_empty_documents_out_of_unknown_queries() -> None:
    """The scores fused search, serve and eval use give a query without a known word 0
    everywhere, as search does; empty documents used to match it through the token ""."""
    ids = ["wing", "empty", "blank", "stop", "flow"]
    texts = ["wing flow over a plate", "", "   ", "the of and", "laminar flow"]
    index = BM25Teacher().index(ids, texts)
    for query in ("statins", "zebra crossing", "the", ""):
        assert not index.scores([query]).any(), query
        assert index.search(["q"], [query], k=5)["score"].to_list() == [0.0] * 5, query
    known = index.scores(["flow statins", "wing"])
    assert known[0, ids.index("flow")] > 0 and known[0, ids.index("wing")] > 0
    assert known[:, [1, 2, 3]].tolist() == [[0.0] * 3] * 2
    assert int(known[1].argmax()) == ids.index("wing")
