"""Labels as a training stream, the supervised-head reference, and refine mode."""

from __future__ import annotations

import polars as pl
import pytest
import torch

from hydra_core.data.cards import find_card
from hydra_core.data.opened_task import OpenedTask
from hydra_core.data.retrieval_task import RetrievalTask
from hydra_core.encoding.encoder import FrozenEncoder
from hydra_core.errors import HydraInputError
from hydra_core.evaluation.methods import retriever_table
from hydra_core.evaluation.reference_heads import base_head, refine_head, supervised_head
from hydra_core.model.compiled_retriever import DENSE_ONLY, CompiledRetriever
from hydra_core.model.head import ProjectionHead
from hydra_core.training.trainer import TrainConfig, task_loss
from hydra_core.training.training_data import (
    label_pairs,
    label_training_task,
    prepare_training_task,
)


def test_labels_become_a_stream_of_their_own_beside_the_teachers(
    scifact_slice: RetrievalTask, encoder: FrozenEncoder
) -> None:
    card = find_card("scifact").model_copy(update={"labels": "train"})
    opened = OpenedTask(scifact_slice, encoder)
    teachers = prepare_training_task(card, opened, encoder)
    labelled = label_training_task(card, opened, encoder)
    assert labelled.name == "scifact+labels" and teachers.name == "scifact"
    assert torch.equal(labelled.card_parts, teachers.card_parts)  # the same card conditions both
    doc_ids = scifact_slice.corpus["doc_id"].to_list()
    positives = {doc_ids[i] for i in labelled.pos_index.tolist()}
    relevant = set(scifact_slice.split_qrels("train").filter(pl.col("score") > 0)["doc_id"])
    assert positives <= relevant and len(positives) > 10


def test_labels_the_task_lacks_are_named_in_the_error(
    scifact_slice: RetrievalTask, encoder: FrozenEncoder
) -> None:
    card = find_card("scifact").model_copy(update={"labels": "dev"})  # SciFact has no dev
    with pytest.raises(HydraInputError) as info:
        label_training_task(card, OpenedTask(scifact_slice, encoder), encoder)
    assert info.value.field == "labels" and "'dev'" in str(info.value)
    assert "train" in str(info.value)


def test_label_pairs_never_use_a_relevant_negative(
    scifact_slice: RetrievalTask, encoder: FrozenEncoder
) -> None:
    _, pairs = label_pairs(OpenedTask(scifact_slice, encoder), encoder, "train")
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
    opened = OpenedTask(scifact_slice, encoder)
    head = supervised_head(opened, encoder, config, checkpoints=(30, 60))
    rows = {
        "before": CompiledRetriever(base_head(opened.doc_vectors), DENSE_ONLY),
        "after": CompiledRetriever(head, DENSE_ONLY),
    }
    table = retriever_table(opened, rows, "train", encoder=encoder)
    assert table["after"]["ndcg@10"] > table["before"]["ndcg@10"]


def test_label_pairs_weigh_every_query_the_same(
    nfcorpus_slice: RetrievalTask, encoder: FrozenEncoder
) -> None:
    _, pairs = label_pairs(OpenedTask(nfcorpus_slice, encoder), encoder, "train")
    per_query = pairs.group_by("query_id").agg(pl.col("weight").sum(), pl.len())
    assert per_query["len"].n_unique() > 1  # queries with different numbers of labels
    grades = nfcorpus_slice.split_qrels("train")["score"].to_numpy()
    weights = per_query["weight"].to_numpy()
    assert weights.max() <= grades.max() + 1e-9
    assert weights.min() >= grades[grades > 0].min() - 1e-9


def test_refine_lowers_the_loss_on_held_out_pairs_of_the_task(
    scifact_slice: RetrievalTask, encoder: FrozenEncoder
) -> None:
    """Refining distils pairs of generated queries; the teachers' pairs of the task's own
    training queries, which it never sees, must be ordered better afterwards."""
    opened = OpenedTask(scifact_slice, encoder)
    held_out = prepare_training_task(find_card("scifact"), opened, encoder)
    config = TrainConfig(pairs_per_task=32)

    def held_out_loss(head: ProjectionHead) -> float:
        parameters = (head.weight, head.bias, head.scale, head.shift)
        every_pair = torch.arange(held_out.num_pairs)
        with torch.no_grad():
            pairwise, _ = task_loss(parameters, held_out, every_pair, config)
        return pairwise.item()

    start = base_head(opened.doc_vectors)
    refined = refine_head(start, opened, encoder, steps=20, config=config)
    assert refined.weight.shape == start.weight.shape
    assert held_out_loss(refined) < held_out_loss(start)
