"""The learned fusion: task profiles, synthetic variants, fusion examples and the gate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hydra_core.data.cards import TaskCard
from hydra_core.data.opened_task import OpenedTask
from hydra_core.data.retrieval_task import RetrievalTask
from hydra_core.data.synthetic_tasks import synthetic_variant, variant_names
from hydra_core.encoding.encoder import FrozenEncoder
from hydra_core.evaluation.fusion_examples import (
    examples_frame,
    examples_from_frame,
    fusion_example,
    teaching_split,
)
from hydra_core.model.compiled_retriever import CompiledRetriever
from hydra_core.model.fusion_gate import (
    GATE_FEEDBACK,
    GATE_WEIGHTS,
    PRIOR_FUSION,
    FusionExample,
    FusionGate,
    taught_on_test,
)
from hydra_core.model.hypernet import Hypernet
from hydra_core.model.score_fusion import QUERY_EVIDENCE, FusionParameters, fused_top_k
from hydra_core.model.task_profile import CorpusSample, TaskProfile, task_profile
from hydra_core.ranking.teachers import BM25Teacher
from hydra_core.training.trainer import TrainConfig, train_hypernet
from hydra_core.training.training_data import training_streams

CARDS = Path(__file__).resolve().parent.parent / "cards"


def _card(task: RetrievalTask) -> TaskCard:
    return TaskCard.model_validate(
        {
            "name": task.name,
            "description": "Scientific claims checked against paper abstracts.",
            "relevance": "An abstract is relevant if it supports or refutes the claim.",
            "domain": "biomedicine",
            "query_type": "claim",
            "example_queries": ["Vitamin D deficiency raises the risk of fractures."],
            "example_documents": ["Vitamin D and bone health in older adults."],
            "source": "beir/scifact",
            "labels": "train",
        }
    )


def _example(name: str, lexical_wins: bool, queries: int = 40) -> FusionExample:
    """A made-up labelled task where one channel wins, and evidence that says which."""
    rng = np.random.default_rng(len(name))
    slope = np.array(GATE_WEIGHTS) if lexical_wins else 1 - np.array(GATE_WEIGHTS)
    ndcg = np.repeat(slope[None, :, None], queries, 0).repeat(len(GATE_FEEDBACK), 2) * 0.5
    ndcg = ndcg + rng.normal(0, 0.01, ndcg.shape)
    evidence = rng.normal(0, 1, (queries, len(QUERY_EVIDENCE)))
    evidence[:, 1] = 0.9 if lexical_wins else 0.3  # how many query words BM25 knows
    profile = TaskProfile(1.2, 2.0, 5.0, 0.6 if lexical_wins else 0.7, 1.0)
    return FusionExample(task=name, split="test", profile=profile, evidence=evidence, ndcg=ndcg)


def test_an_unfitted_gate_compiles_every_profile_to_the_prior() -> None:
    gate = FusionGate()
    for profile in (None, TaskProfile(3.0, 4.0, 2.0, 0.1, 1.0)):
        fusion = gate.fusion_for(profile)
        assert fusion.lexical_weight == pytest.approx(PRIOR_FUSION.lexical_weight)
        assert fusion.feedback == pytest.approx(PRIOR_FUSION.feedback)
        assert fusion.gate is None


def test_a_fitted_gate_leans_on_the_channel_the_evidence_favours() -> None:
    examples = [_example(f"t{i}", lexical_wins=i % 2 == 0) for i in range(6)]
    gate = FusionGate.fit(examples)
    lexical = gate.fusion_for(examples[0].profile)
    dense = gate.fusion_for(examples[1].profile)
    assert lexical.lexical_weight > 0.5 > dense.lexical_weight
    assert lexical.gate is not None
    # per query, the gate reads the evidence: BM25 knowing the words pushes the weight up
    rows = 4
    known = np.zeros((rows, len(QUERY_EVIDENCE)), np.float32)
    unknown = known.copy()
    known[:, 1], unknown[:, 1] = 0.9, 0.3
    import torch

    high, _ = lexical.query_weights(torch.from_numpy(known), rows)
    low, _ = lexical.query_weights(torch.from_numpy(unknown), rows)
    assert bool((high > low).all())


def test_a_gated_fusion_round_trips_through_a_retriever_file(tmp_path: Path) -> None:
    gate = FusionGate.fit([_example(f"t{i}", lexical_wins=i % 2 == 0) for i in range(4)])
    compiled = CompiledRetriever(head=None, fusion=gate.fusion_for(None), task="x")
    compiled.save(tmp_path / "r.safetensors")
    assert CompiledRetriever.load(tmp_path / "r.safetensors").fusion == compiled.fusion


def test_a_gated_search_needs_the_text_evidence() -> None:
    gate = FusionGate.fit([_example(f"t{i}", lexical_wins=i % 2 == 0) for i in range(4)])
    fusion = gate.fusion_for(None)
    vectors = np.eye(4, dtype=np.float32)
    with pytest.raises(ValueError, match="text evidence"):
        fused_top_k(np.ones((1, 4), np.float32), vectors[:1], vectors, fusion, 2)


def test_a_zero_gate_searches_exactly_like_the_plain_fusion(scifact_slice: RetrievalTask) -> None:
    from hydra_core.model.score_fusion import QueryGate, text_evidence

    texts = scifact_slice.doc_texts()
    lexical = BM25Teacher().index(scifact_slice.corpus["doc_id"].to_list(), texts)
    queries = scifact_slice.split_queries("test")["text"].to_list()[:10]
    rng = np.random.default_rng(0)
    docs = rng.normal(size=(len(texts), 8)).astype(np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    query_vectors = docs[:10] + 0.1
    zero = QueryGate(*(tuple(0.0 for _ in QUERY_EVIDENCE) for _ in range(3)))
    plain = FusionParameters(lexical_weight=0.3, feedback=0.5)
    gated = FusionParameters(lexical_weight=0.3, feedback=0.5, gate=zero)
    scores = lexical.scores(queries)
    expected = fused_top_k(scores, query_vectors, docs, plain, 10)
    got = fused_top_k(scores, query_vectors, docs, gated, 10, None, text_evidence(queries, lexical))
    np.testing.assert_array_equal(expected[0], got[0])
    np.testing.assert_allclose(expected[1], got[1], atol=1e-5)


def test_cipher_keeps_bm25_and_blinds_the_encoder(
    scifact_slice: RetrievalTask, encoder: FrozenEncoder
) -> None:
    card = _card(scifact_slice)
    assert variant_names(scifact_slice) == ["cipher", "keywords", "titles"]
    cipher, cipher_card = synthetic_variant(scifact_slice, card, "cipher")
    assert cipher.name == f"{scifact_slice.name}~cipher" and cipher_card.name == cipher.name
    assert cipher_card.example_queries != card.example_queries
    profiles = {}
    for name, task, examples in (
        ("plain", scifact_slice, card.example_queries),
        ("cipher", cipher, cipher_card.example_queries),
    ):
        texts = task.doc_texts()
        vectors = encoder.encode(texts, "document")
        lexical = BM25Teacher().index(task.corpus["doc_id"].to_list(), texts)
        profiles[name] = task_profile(examples, CorpusSample.of(texts), vectors, lexical, encoder)
    assert profiles["cipher"].pieces_per_word > 2 * profiles["plain"].pieces_per_word
    assert profiles["cipher"].probe_dense < profiles["plain"].probe_dense - 0.2
    assert profiles["cipher"].probe_bm25 > 0.8


def test_keywords_and_titles_variants(scifact_slice: RetrievalTask) -> None:
    card = _card(scifact_slice)
    keywords, keyword_card = synthetic_variant(scifact_slice, card, "keywords")
    assert all(len(text.split()) <= 3 for text in keywords.queries["text"].to_list())
    assert all(len(text.split()) <= 3 for text in keyword_card.example_queries)
    titles, _ = synthetic_variant(scifact_slice, card, "titles")
    assert titles.corpus["text"].to_list() == scifact_slice.corpus["title"].to_list()
    with pytest.raises(ValueError, match="unknown synthetic variant"):
        synthetic_variant(scifact_slice, card, "emoji")


def test_a_fusion_example_scores_every_grid_point_on_the_teaching_split(
    scifact_slice: RetrievalTask, encoder: FrozenEncoder
) -> None:
    card = _card(scifact_slice)
    split = teaching_split(card, scifact_slice)
    assert split == "train"
    example = fusion_example(card, OpenedTask(scifact_slice, encoder), split, encoder)
    n_queries = scifact_slice.split_queries("train").height
    assert example.ndcg.shape == (n_queries, len(GATE_WEIGHTS), len(GATE_FEEDBACK))
    assert example.evidence.shape == (n_queries, len(QUERY_EVIDENCE))
    assert example.ndcg.min() >= 0.0 and example.ndcg.max() <= 1.0
    # the grid's corners differ: the channels rank the slice differently
    assert example.ndcg[:, 0].mean() != pytest.approx(example.ndcg[:, -1].mean())


def test_a_gate_taught_by_test_labels_names_those_tasks_in_pool() -> None:
    taught = {"cacm": "test", "cacm~cipher": "test", "scifact": "train", "lisa~titles": "test"}
    assert taught_on_test(taught) == {"cacm", "lisa"}
    assert taught_on_test({}) == set()


def test_examples_keep_what_they_hold_through_a_stored_frame() -> None:
    examples = [_example(f"t{i}", lexical_wins=i % 2 == 0, queries=5 + i) for i in range(3)]
    back = examples_from_frame(examples_frame(examples))
    assert [example.digest() for example in back] == [example.digest() for example in examples]
    assert examples_from_frame(examples_frame([])) == []


def test_the_gate_is_fitted_with_the_head_and_refitted_alike_on_resume(
    tmp_path: Path, encoder: FrozenEncoder, scifact_slice: RetrievalTask
) -> None:
    """``train_hypernet`` fits the gate after the head; a resumed, finished run fits the
    same gate again, and a run without examples keeps the prior."""
    opened = OpenedTask(scifact_slice.head(60, 8), encoder)
    card = _card(scifact_slice)
    (task,) = training_streams(card, opened, encoder, use_labels=False)
    examples = [_example(f"t{i}", lexical_wins=i % 2 == 0) for i in range(4)]
    config = TrainConfig(epochs=1, steps_per_epoch=2)

    def train(folder: str, examples: list[FusionExample]) -> FusionGate:
        out = train_hypernet(
            [task],
            config,
            tmp_path / folder,
            base_model=encoder.model_name,
            fusion_examples=examples,
            show_progress=False,
        )
        return Hypernet.load(out).gate

    gate = train("a", examples)
    assert gate.is_fitted
    again = train("a", examples)
    assert torch.equal(again.weights, gate.weights) and torch.equal(again.bias, gate.bias)
    assert not train("b", []).is_fitted
