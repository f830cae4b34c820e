"""The fast inference paths compute exactly what the reference paths compute."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hydra_core.data.cards import TaskCard, find_card
from hydra_core.encoding.encoder import FrozenEncoder
from hydra_core.model import head as head_module
from hydra_core.model.compiled_retriever import CompiledRetriever
from hydra_core.model.head import head_forward
from hydra_core.model.retriever import ConditionedRetriever
from hydra_core.model.task_profile import TaskProfile
from hydra_pipeline.benchmarks.inputs import random_head, unit_vectors, untrained_hypernet


@pytest.mark.parametrize("rows_per_block", [128, 1024])
def test_fused_head_apply_matches_head_forward(
    rows_per_block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(head_module, "_APPLY_ROWS", rows_per_block)
    head = random_head(seed=3)
    embeddings = unit_vectors(500, 384, seed=0)
    expected = head_forward(
        torch.from_numpy(embeddings), head.weight, head.bias, head.scale, head.shift
    ).numpy()
    projected = head.apply(embeddings)
    assert projected.shape == (500, 256) and projected.dtype == np.float32
    np.testing.assert_allclose(projected, expected, atol=1e-6)


def test_compile_generates_on_one_thread_then_restores(
    encoder: FrozenEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    hypernet = untrained_hypernet()
    retriever = ConditionedRetriever(hypernet, encoder)
    card = find_card("scifact")
    expected = hypernet.compile_card(card, encoder)
    threads_seen: list[int] = []
    generate = hypernet.compile_card

    def recording(
        card: TaskCard, encoder: FrozenEncoder, profile: TaskProfile | None = None
    ) -> CompiledRetriever:
        threads_seen.append(torch.get_num_threads())
        return generate(card, encoder, profile)

    monkeypatch.setattr(hypernet, "compile_card", recording)
    before = torch.get_num_threads()
    compiled = retriever.compile(card)
    assert threads_seen == [1]
    assert torch.get_num_threads() == before
    assert compiled.head is not None and expected.head is not None
    torch.testing.assert_close(compiled.head.weight, expected.head.weight)
