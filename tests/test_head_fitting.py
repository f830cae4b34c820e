"""Labels as a gold teacher, the supervised-head reference, and refine mode."""

from __future__ import annotations

import numpy as np
import polars as pl
import torch

from hydra_core.encoder import FrozenEncoder
from hydra_core.evaluation import default_ensemble, score_head
from hydra_core.head_fitting import base_head, refine_head, supervised_head, supervised_pairs
from hydra_core.tasks import RetrievalTask
from hydra_core.teachers import gold_ranking
from hydra_core.trainer import TrainConfig
from hydra_core.training_data import fused_training_rankings


def test_gold_ranking_orders_labelled_documents_by_grade(nfcorpus_slice: RetrievalTask) -> None:
    qrels = nfcorpus_slice.split_qrels("dev")
    query = qrels["query_id"][0]
    ranking = gold_ranking(qrels, [query])
    judged = qrels.filter(pl.col("query_id") == query)
    assert ranking.height == judged.filter(pl.col("score") > 0).height
    assert ranking["score"].to_list() == sorted(ranking["score"].to_list(), reverse=True)
    assert ranking["rank"].to_list() == list(range(1, ranking.height + 1))


def test_gold_teacher_puts_labelled_documents_first(
    scifact_slice: RetrievalTask, encoder: FrozenEncoder
) -> None:
    queries = scifact_slice.split_queries("train")
    labels = scifact_slice.split_qrels("train")
    _, fused = fused_training_rankings(
        queries, default_ensemble(scifact_slice, encoder), labels=labels
    )
    assert "rank_gold" in fused.columns
    top = fused.filter(pl.col("rank") == 1).join(labels, on=["query_id", "doc_id"], how="semi")
    assert top.height == queries.height


def test_supervised_pairs_never_use_a_relevant_negative(
    scifact_slice: RetrievalTask, encoder: FrozenEncoder
) -> None:
    _, pairs = supervised_pairs(scifact_slice, encoder)
    relevant = scifact_slice.split_qrels("train").select("query_id", "doc_id")
    assert pairs.height > 0
    assert pairs.join(
        relevant.rename({"doc_id": "neg_doc_id"}), on=["query_id", "neg_doc_id"], how="semi"
    ).is_empty()
    assert pairs.join(
        relevant.rename({"doc_id": "pos_doc_id"}), on=["query_id", "pos_doc_id"], how="anti"
    ).is_empty()


def test_supervised_head_fits_its_training_labels(
    scifact_slice: RetrievalTask, encoder: FrozenEncoder
) -> None:
    config = TrainConfig(learning_rate=1e-3, pairs_per_task=64)
    head = supervised_head(scifact_slice, encoder, config, checkpoints=(30, 60))
    reference = encoder.encode(scifact_slice.doc_texts(), "document")
    before = score_head(scifact_slice, base_head(reference), encoder, reference, "train")
    after = score_head(scifact_slice, head, encoder, reference, "train")
    assert after["ndcg@10"] > before["ndcg@10"]


def test_supervised_pairs_weigh_every_query_the_same(
    nfcorpus_slice: RetrievalTask, encoder: FrozenEncoder
) -> None:
    _, pairs = supervised_pairs(nfcorpus_slice, encoder)
    per_query = pairs.group_by("query_id").agg(pl.col("weight").sum(), pl.len())
    assert per_query["len"].n_unique() > 1  # queries with different numbers of labels
    grades = nfcorpus_slice.split_qrels("train")["score"].to_numpy()
    weights = per_query["weight"].to_numpy()
    assert weights.max() <= grades.max() + 1e-9
    assert weights.min() >= grades[grades > 0].min() - 1e-9


def test_refine_moves_the_head_and_keeps_its_shape(
    scifact_slice: RetrievalTask, encoder: FrozenEncoder
) -> None:
    start = base_head(encoder.encode(scifact_slice.doc_texts(), "document"))
    refined = refine_head(
        start,
        scifact_slice,
        encoder,
        default_ensemble(scifact_slice, encoder),
        steps=5,
        config=TrainConfig(pairs_per_task=32),
    )
    assert refined.weight.shape == start.weight.shape
    assert not torch.equal(refined.weight, start.weight)
    assert np.isfinite(refined.weight.numpy()).all()
