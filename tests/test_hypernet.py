"""The hypernet's pieces: heads, generator, card encoder, checkpoints, retriever."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hydra_core.data.cards import TaskCard, find_card, generic_card
from hydra_core.data.opened_task import OpenedTask
from hydra_core.data.retrieval_task import RetrievalTask
from hydra_core.encoding.encoder import FrozenEncoder
from hydra_core.errors import HydraInputError
from hydra_core.evaluation.methods import (
    retriever_table,
)
from hydra_core.model.card_encoder import TaskCardEncoder
from hydra_core.model.fusion_gate import FusionGate
from hydra_core.model.head import ProjectionHead
from hydra_core.model.head_generator import ProjectionHeadGenerator
from hydra_core.model.hypernet import Hypernet, HypernetConfig, initial_hypernet
from hydra_core.model.module import HydraModule
from hydra_core.model.retriever import ConditionedRetriever
from hydra_core.workflows import task_baselines


def compiled_head(hypernet: Hypernet, card: TaskCard, encoder: FrozenEncoder) -> ProjectionHead:
    """The dense head of the retriever ``card`` compiles into."""
    head = hypernet.compile_card(card, encoder).head
    assert head is not None
    return head


@pytest.fixture(scope="module")
def reference(scifact_slice: RetrievalTask, encoder: FrozenEncoder) -> np.ndarray:
    return encoder.encode(scifact_slice.doc_texts(), "document")


@pytest.fixture(scope="module")
def hypernet(reference: np.ndarray) -> Hypernet:
    return initial_hypernet("all-MiniLM-L6-v2", reference)


def test_parameter_budget(hypernet: Hypernet, encoder: FrozenEncoder) -> None:
    assert 350_000 <= hypernet.num_trainable_parameters <= 650_000
    head = compiled_head(hypernet, find_card("scifact"), encoder)
    assert (head.in_dim, head.out_dim) == (384, 256)
    assert 95_000 <= head.num_parameters <= 105_000


def test_untrained_hypernet_compiles_every_card_to_the_same_base_head(
    hypernet: Hypernet, encoder: FrozenEncoder
) -> None:
    first = compiled_head(hypernet, find_card("scifact"), encoder)
    second = compiled_head(hypernet, generic_card(), encoder)
    torch.testing.assert_close(first.weight, second.weight)
    torch.testing.assert_close(first.shift, second.shift)


def test_untrained_head_ranks_like_the_base(
    scifact_slice: RetrievalTask, hypernet: Hypernet, encoder: FrozenEncoder
) -> None:
    opened = OpenedTask(scifact_slice, encoder)
    base = task_baselines(opened, encoder)["base"]
    card = find_card("scifact")
    dense = ConditionedRetriever(hypernet, encoder).compile(card).dense_only()
    table = retriever_table(opened, {"hydra-dense": dense}, encoder=encoder)
    assert abs(table["hydra-dense"]["ndcg@10"] - base["ndcg@10"]) < 0.02


def test_head_apply_save_and_load(
    hypernet: Hypernet, encoder: FrozenEncoder, tmp_path: Path
) -> None:
    head = compiled_head(hypernet, find_card("nfcorpus"), encoder)
    vectors = encoder.encode(["vitamin d and bone health", "aspirin"], "query")
    projected = head.apply(vectors)
    assert projected.shape == (2, 256)
    np.testing.assert_allclose(np.linalg.norm(projected, axis=1), 1.0, atol=1e-5)
    head.save(tmp_path / "head.safetensors")
    loaded = ProjectionHead.load(tmp_path / "head.safetensors")
    assert loaded.task == "nfcorpus"
    np.testing.assert_array_equal(loaded.apply(vectors), projected)
    with pytest.raises(ValueError, match="384-d"):
        head.apply(np.zeros((1, 10), np.float32))


def test_bad_head_files_are_refused(tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    with pytest.raises(HydraInputError, match="truncated.safetensors"):
        ProjectionHead.load(truncated)


def test_checkpoint_round_trip_and_refusals(
    hypernet: Hypernet, encoder: FrozenEncoder, tmp_path: Path
) -> None:
    hypernet.save(tmp_path / "ck")
    loaded = Hypernet.load(tmp_path / "ck")
    card = find_card("cranfield")
    torch.testing.assert_close(
        compiled_head(loaded, card, encoder).weight, compiled_head(hypernet, card, encoder).weight
    )
    weights = tmp_path / "ck" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(HydraInputError, match="model.safetensors"):
        Hypernet.load(tmp_path / "ck")
    with pytest.raises(HydraInputError, match="does not exist"):
        Hypernet.load(tmp_path / "missing")
    other = Hypernet(base_model="all-mpnet-base-v2", in_dim=768)
    with pytest.raises(HydraInputError, match="all-mpnet-base-v2"):
        ConditionedRetriever(other, encoder)


def test_a_checkpoint_for_another_dimension_is_refused(hypernet: Hypernet, tmp_path: Path) -> None:
    hypernet.save(tmp_path / "ck")
    config = (tmp_path / "ck" / "config.json").read_text()
    (tmp_path / "ck" / "config.json").write_text(config.replace('"in_dim": 384', '"in_dim": 768'))
    with pytest.raises(HydraInputError, match="do not fit"):
        Hypernet.load(tmp_path / "ck")


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("rank", -5, "-5 is not an integer from 1 to out_dim (256)"),
        ("rank", 2_000_000_000, "2000000000 is not an integer from 1 to out_dim (256)"),
        ("rank", "96", "'96' is not an integer"),
        ("out_dim", 385, "385 is not an integer from 1 to in_dim (384)"),
        ("in_dim", 10**6, "1000000 is not an integer from 1 to 8192"),
        ("cond_dim", True, "True is not an integer from 1 to 1024"),
        ("cond_dim", None, "missing"),
    ],
)
def test_out_of_bounds_sizes_in_a_checkpoint_config_are_refused_before_allocating(
    tmp_path: Path, field: str, value: object, problem: str
) -> None:
    Hypernet(base_model="all-MiniLM-L6-v2").save(tmp_path)
    path = tmp_path / "config.json"
    config = json.loads(path.read_text())
    if value is None:
        del config[field]
    else:
        config[field] = value
    path.write_text(json.dumps(config))
    with pytest.raises(HydraInputError) as refused:
        Hypernet.load(tmp_path)
    assert str(refused.value).startswith(f"{path} (field {field!r}): {problem}")


@pytest.mark.parametrize(
    "piece",
    [
        TaskCardEncoder(in_dim=32, out_dim=8),
        ProjectionHeadGenerator(cond_dim=8, in_dim=32, out_dim=16, rank=4),
        FusionGate(),
        Hypernet(base_model="m", in_dim=32, architecture=HypernetConfig(16, 8, 4)),
    ],
    ids=lambda piece: type(piece).__name__,
)
def test_every_trainable_piece_saves_its_config_and_weights(
    piece: HydraModule, tmp_path: Path
) -> None:
    """The shared save/load: the folder rebuilds the piece, sizes and weights alike."""
    with torch.no_grad():
        for parameter in piece.parameters():
            parameter.add_(torch.randn_like(parameter))
    loaded = type(piece).load(piece.save(tmp_path / "piece"))
    assert loaded.get_config_dict() == piece.get_config_dict()
    for (name, mine), (_, theirs) in zip(
        piece.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert torch.equal(mine, theirs), name
    config = json.loads((tmp_path / "piece" / "config.json").read_text())
    assert config == {"format": piece.format, **piece.get_config_dict()}


def test_a_folder_of_another_piece_is_refused(tmp_path: Path) -> None:
    FusionGate().save(tmp_path)
    with pytest.raises(HydraInputError, match="not a TaskCardEncoder"):
        TaskCardEncoder.load(tmp_path)


def test_the_architecture_is_the_hypernets_own_config(reference: np.ndarray) -> None:
    """Sizes come from HypernetConfig, not from training settings, and reach every piece."""
    small = initial_hypernet("m", reference, architecture=HypernetConfig(64, 32, 8))
    assert small.get_config_dict() == {
        "base_model": "m",
        "in_dim": 384,
        "out_dim": 64,
        "cond_dim": 32,
        "rank": 8,
        "metadata": {},
    }
    assert small.generator.get_config_dict() == {
        "cond_dim": 32,
        "in_dim": 384,
        "out_dim": 64,
        "rank": 8,
    }
    assert small.card_encoder.out_dim == 32
