"""The hypernet's pieces: heads, generator, card encoder, checkpoints, retriever."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hydra_core.data.cards import TaskCard, find_card, generic_card
from hydra_core.data.tasks import RetrievalTask
from hydra_core.encoding.encoder import FrozenEncoder
from hydra_core.errors import HydraInputError
from hydra_core.evaluation.methods import (
    baseline_table,
    default_ensemble,
    retriever_table,
)
from hydra_core.model.head import ProjectionHead
from hydra_core.model.hypernet import Hypernet, initial_hypernet
from hydra_core.model.retriever import ConditionedRetriever


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
    base = baseline_table(scifact_slice, default_ensemble(scifact_slice, encoder))["base"]
    card = find_card("scifact")
    dense = ConditionedRetriever(hypernet, encoder).compile(card).dense_only()
    reference = encoder.encode(scifact_slice.doc_texts(), "document")
    table = retriever_table(scifact_slice, {"hydra-dense": dense}, reference, None, encoder=encoder)
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
