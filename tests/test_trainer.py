"""Training data and the trainer: no test queries, reproducible, resumable, hypernet only."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest
import torch
from safetensors.torch import load_file

from hydra_core.data.cards import find_card
from hydra_core.data.opened_task import OpenedTask
from hydra_core.data.retrieval_task import RetrievalTask
from hydra_core.data.tasks import load_task
from hydra_core.data.training_queries import training_queries
from hydra_core.encoding.encoder import FrozenEncoder
from hydra_core.errors import HydraInputError
from hydra_core.model.fusion_gate import PRIOR_FUSION
from hydra_core.model.hypernet import Hypernet, HypernetConfig, initial_hypernet
from hydra_core.model.retriever import ConditionedRetriever
from hydra_core.training.preferences import PairConfig, preference_pairs
from hydra_core.training.trainer import (
    TrainConfig,
    TrainingTask,
    reference_embeddings,
    train_hypernet,
)
from hydra_core.training.training_data import label_training_task, prepare_training_task

TINY = TrainConfig(epochs=2, steps_per_epoch=4, pairs_per_task=32)


@pytest.mark.parametrize("name", ["beir/scifact", "beir/nfcorpus", "cranfield", "cacm", "vaswani"])
def test_training_queries_never_come_from_the_test_split(name: str, data_dir: Path) -> None:
    task = load_task(name, data_dir=data_dir)
    queries = training_queries(task)
    test = task.split_queries("test")
    assert queries.height > 0
    assert queries.join(test, on="query_id", how="semi").is_empty()
    assert not set(queries["text"]) & set(test["text"])
    assert set(queries["origin"]) <= {"train", "generated"}


def test_tasks_without_a_train_split_get_generated_queries(data_dir: Path) -> None:
    task = load_task("cranfield", data_dir=data_dir)
    queries = training_queries(task, n_generated=50)
    assert queries.height == 50
    assert queries["origin"].unique().to_list() == ["generated"]
    source_docs = queries["query_id"].str.strip_prefix("gen-")
    assert source_docs.is_in(task.corpus["doc_id"].implode()).all()


def test_pairs_follow_fused_ranks_and_weigh_teacher_agreement() -> None:
    fused = pl.DataFrame(
        {
            "query_id": ["q"] * 4,
            "doc_id": ["a", "b", "c", "d"],
            "rank": [1, 2, 3, 4],
            "score": [0.4, 0.3, 0.2, 0.1],
            "rank_bm25": [1, 3, None, 2],
            "rank_base": [2, 1, 3, None],
        }
    )
    config = PairConfig(
        n_positive=2, base_teacher=None, n_negative=5, negative_from_rank=2, negative_to_rank=4
    )
    pairs = preference_pairs(fused, config)
    weights = {(p, n): w for _, p, n, w in pairs.iter_rows()}
    assert weights == {("a", "c"): 1.0, ("a", "d"): 1.0, ("b", "c"): 1.0, ("b", "d"): 0.5}


def test_default_negatives_are_the_base_teachers_mistakes() -> None:
    fused = pl.DataFrame(
        {
            "query_id": ["q"] * 5,
            "doc_id": ["a", "b", "c", "d", "e"],
            "rank": [1, 2, 3, 4, 5],
            "score": [0.5, 0.4, 0.3, 0.2, 0.1],
            "rank_bm25": [1, 2, 9, 3, 4],
            "rank_base": [6, 1, 2, 40, None],
        }
    )
    pairs = preference_pairs(fused, PairConfig(n_positive=1, negative_from_rank=2, base_depth=30))
    # c is the only lower-ranked document the base puts in its top 30; the base itself
    # prefers it to a, so only BM25 agrees with the pair.
    assert pairs.rows() == [("q", "a", "c", 0.5)]
    with pytest.raises(ValueError, match="rank_dense"):
        preference_pairs(fused, PairConfig(base_teacher="dense"))


@pytest.fixture(scope="module")
def prepared(
    scifact_slice: RetrievalTask, nfcorpus_slice: RetrievalTask, encoder: FrozenEncoder
) -> list[TrainingTask]:
    return [
        prepare_training_task(find_card(card), OpenedTask(task, encoder), encoder)
        for card, task in (("scifact", scifact_slice), ("nfcorpus", nfcorpus_slice))
    ]


@pytest.fixture(scope="module")
def too_small(scifact_slice: RetrievalTask, encoder: FrozenEncoder) -> TrainingTask:
    """Ten documents: too few for the fused teachers to rank any below their top ones."""
    task = scifact_slice.head(10, 5)
    card = find_card("scifact").model_copy(update={"name": "tiny"})
    return prepare_training_task(card, OpenedTask(task, encoder), encoder)


def _weights(directory: Path) -> dict:
    return load_file(str(directory / "model.safetensors"))


def test_same_seed_gives_the_same_checkpoint(prepared: list[TrainingTask], tmp_path: Path) -> None:
    first = train_hypernet(prepared, TINY, tmp_path / "a", base_model="all-MiniLM-L6-v2")
    second = train_hypernet(prepared, TINY, tmp_path / "b", base_model="all-MiniLM-L6-v2")
    a, b = _weights(first), _weights(second)
    assert all((a[k] == b[k]).all() for k in a)
    other = train_hypernet(
        prepared,
        TrainConfig(epochs=2, steps_per_epoch=4, pairs_per_task=32, seed=1),
        tmp_path / "c",
        base_model="all-MiniLM-L6-v2",
    )
    assert any((a[k] != _weights(other)[k]).any() for k in a)


def test_interrupted_training_resumes_to_the_same_checkpoint(
    prepared: list[TrainingTask], tmp_path: Path
) -> None:
    class Interrupted(Exception):
        pass

    def stop_after_first_epoch(epoch: int, _: dict[str, float]) -> None:
        if epoch == 1:
            raise Interrupted

    with pytest.raises(Interrupted):
        train_hypernet(
            prepared,
            TINY,
            tmp_path / "resumed",
            base_model="all-MiniLM-L6-v2",
            on_epoch=stop_after_first_epoch,
        )
    epochs_run: list[int] = []
    train_hypernet(
        prepared,
        TINY,
        tmp_path / "resumed",
        base_model="all-MiniLM-L6-v2",
        on_epoch=lambda epoch, _: epochs_run.append(epoch),
    )
    assert epochs_run == [2]
    straight = train_hypernet(prepared, TINY, tmp_path / "straight", base_model="all-MiniLM-L6-v2")
    a, b = _weights(tmp_path / "resumed"), _weights(straight)
    assert all((a[k] == b[k]).all() for k in a)


def test_resuming_with_another_config_is_refused(
    prepared: list[TrainingTask], tmp_path: Path
) -> None:
    train_hypernet(prepared, TINY, tmp_path / "run", base_model="all-MiniLM-L6-v2")
    with pytest.raises(HydraInputError, match="epochs 2 -> 3"):
        train_hypernet(
            prepared,
            TrainConfig(epochs=3, steps_per_epoch=4, pairs_per_task=32),
            tmp_path / "run",
            base_model="all-MiniLM-L6-v2",
        )


def test_the_architecture_is_trained_as_configured_and_part_of_the_identity(
    prepared: list[TrainingTask], tmp_path: Path
) -> None:
    train_hypernet(prepared, TINY, tmp_path / "run", base_model="all-MiniLM-L6-v2")
    small = HypernetConfig(out_dim=64, cond_dim=32, rank=8)
    with pytest.raises(HydraInputError, match="out_dim 256 -> 64"):
        train_hypernet(
            prepared, TINY, tmp_path / "run", base_model="all-MiniLM-L6-v2", architecture=small
        )
    train_hypernet(
        prepared,
        TINY,
        tmp_path / "run",
        base_model="all-MiniLM-L6-v2",
        architecture=small,
        fresh=True,
    )
    assert Hypernet.load(tmp_path / "run").architecture == small


def test_a_folder_trained_on_other_tasks_or_data_is_refused_unless_fresh(
    prepared: list[TrainingTask], tmp_path: Path
) -> None:
    scifact, nfcorpus = prepared
    out = tmp_path / "run"
    train_hypernet([scifact], TINY, out, base_model="all-MiniLM-L6-v2")
    written = {path.name: path.read_bytes() for path in out.iterdir()}
    fewer_pairs = replace(
        scifact,
        query_index=scifact.query_index[1:],
        pos_index=scifact.pos_index[1:],
        neg_index=scifact.neg_index[1:],
        weight=scifact.weight[1:],
    )
    edited_card = replace(scifact, card_parts=scifact.card_parts.flip(0))
    for tasks, named in (
        ([nfcorpus], "tasks scifact -> nfcorpus"),
        ([scifact, nfcorpus], "tasks scifact -> scifact, nfcorpus"),
        ([fewer_pairs], "scifact's pairs changed"),
        ([edited_card], "scifact's card changed"),
    ):
        with pytest.raises(HydraInputError, match=named):
            train_hypernet(tasks, TINY, out, base_model="all-MiniLM-L6-v2")
        assert {path.name: path.read_bytes() for path in out.iterdir()} == written

    train_hypernet([nfcorpus], TINY, out, base_model="all-MiniLM-L6-v2", fresh=True)
    assert Hypernet.load(out).metadata["tasks"] == ["nfcorpus"]
    straight = train_hypernet(
        [nfcorpus], TINY, tmp_path / "straight", base_model="all-MiniLM-L6-v2"
    )
    a, b = _weights(out), _weights(straight)
    assert all((a[k] == b[k]).all() for k in a)


def test_trained_cards_give_different_heads(
    prepared: list[TrainingTask], encoder: FrozenEncoder, tmp_path: Path
) -> None:
    """Untrained, every card compiles to the same head; training is what lets cards differ."""
    cards = [find_card("scifact"), find_card("nfcorpus")]
    untrained = initial_hypernet("all-MiniLM-L6-v2", reference_embeddings(prepared))
    first, second = (untrained.compile_card(card, encoder).head for card in cards)
    assert first is not None and second is not None
    assert torch.equal(first.weight, second.weight)
    train_hypernet(prepared, TINY, tmp_path / "run", base_model="all-MiniLM-L6-v2")
    trained = Hypernet.load(tmp_path / "run")
    first, second = (trained.compile_card(card, encoder).head for card in cards)
    assert first is not None and second is not None
    assert (first.weight - second.weight).abs().max() > 1e-4


def test_only_the_hypernet_trains(prepared: list[TrainingTask], tmp_path: Path) -> None:
    for task in prepared:
        assert not task.query_vectors.requires_grad
        assert not task.doc_vectors.requires_grad
    train_hypernet(prepared, TINY, tmp_path / "run", base_model="all-MiniLM-L6-v2")
    state = load_file(str(tmp_path / "run" / "trainer_state.safetensors"))
    model_keys = {k.removeprefix("model.") for k in state if k.startswith("model.")}
    assert model_keys == set(_weights(tmp_path / "run"))
    assert all(k.startswith(("card_encoder.", "generator.", "gate.")) for k in model_keys)


def test_labels_train_the_head_fused_and_leave_the_fusion_to_the_gate(
    scifact_slice: RetrievalTask, encoder: FrozenEncoder, tmp_path: Path
) -> None:
    card = find_card("scifact")
    opened = OpenedTask(scifact_slice, encoder)
    teachers = prepare_training_task(card, opened, encoder)
    labels = label_training_task(card, opened, encoder)
    assert teachers.fusion is None and labels.fusion is not None
    assert labels.fusion.lexical_margin.shape == (labels.num_pairs,)
    compiled = {}
    for name, streams in (("teachers", [teachers]), ("labels", [teachers, labels])):
        train_hypernet(streams, TINY, tmp_path / name, base_model=encoder.model_name)
        compiled[name] = ConditionedRetriever(Hypernet.load(tmp_path / name), encoder).compile(card)
    for retriever in compiled.values():  # the trainer fits no gate: every card at the prior
        assert retriever.fusion.lexical_weight == pytest.approx(PRIOR_FUSION.lexical_weight)
        assert retriever.fusion.feedback == pytest.approx(PRIOR_FUSION.feedback)
    heads = [retriever.head for retriever in compiled.values()]
    assert heads[0] is not None and heads[1] is not None
    assert (heads[0].weight - heads[1].weight).abs().max() > 1e-4


def test_a_task_too_small_for_pairs_is_left_out_and_alone_is_an_error(
    prepared: list[TrainingTask],
    too_small: TrainingTask,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert too_small.num_pairs == 0
    train_hypernet([too_small, *prepared], TINY, tmp_path / "run", base_model="all-MiniLM-L6-v2")
    assert Hypernet.load(tmp_path / "run").metadata["tasks"] == ["scifact", "nfcorpus"]
    assert "tiny is left out of training" in caplog.text
    with pytest.raises(HydraInputError) as alone:
        train_hypernet([too_small], TINY, tmp_path / "alone", base_model="all-MiniLM-L6-v2")
    message = str(alone.value)
    assert message.startswith("no task yields preference pairs to train on (tiny: 10 documents")
    assert "\n" not in message and not (tmp_path / "alone").exists()
