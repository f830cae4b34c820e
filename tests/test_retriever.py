"""The compiled retriever: fusion of BM25 and a dense head, its file, and what cards compile to."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hydra_core.data.cards import find_card, generic_card
from hydra_core.data.opened_task import OpenedTask
from hydra_core.data.retrieval_task import RetrievalTask
from hydra_core.encoding.encoder import FrozenEncoder
from hydra_core.errors import HydraInputError
from hydra_core.evaluation.methods import (
    hybrid_retriever,
    score_ranking,
)
from hydra_core.model.compiled_retriever import DENSE_ONLY, HYBRID_FUSION, CompiledRetriever
from hydra_core.model.fusion_gate import PRIOR_FUSION
from hydra_core.model.hypernet import Hypernet, initial_hypernet
from hydra_core.model.retriever import ConditionedRetriever, RetrieverIndex
from hydra_core.model.score_fusion import (
    FusionParameters,
    candidates,
    fused_top_k,
    top_rows,
    zscore,
)
from hydra_core.ranking.rankings import exact_top_k
from hydra_core.ranking.teachers import BM25Index, BM25Teacher
from hydra_core.workflows import task_baselines


@pytest.fixture(scope="module")
def corpus(scifact_slice: RetrievalTask, encoder: FrozenEncoder) -> tuple[np.ndarray, BM25Index]:
    doc_ids, texts = scifact_slice.corpus["doc_id"].to_list(), scifact_slice.doc_texts()
    return encoder.encode(texts, "document"), BM25Teacher().index(doc_ids, texts)


@pytest.fixture(scope="module")
def hypernet(corpus: tuple[np.ndarray, BM25Index]) -> Hypernet:
    return initial_hypernet("all-MiniLM-L6-v2", corpus[0])


def test_zscore_standardises_over_the_valid_entries_only() -> None:
    scores = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    valid = torch.tensor([[True, True, True, False]])
    z = zscore(scores, valid)
    torch.testing.assert_close(z[0, :3], torch.tensor([-1.2247, 0.0, 1.2247]), atol=1e-4, rtol=0)


def test_candidates_are_the_union_of_each_channel_top_k_once() -> None:
    lexical = torch.tensor([[5.0, 4.0, 0.0, 0.0, 0.0]])
    dense = torch.tensor([[0.0, 4.5, 0.9, 0.1, 0.2]])
    docs, valid = candidates(top_rows(lexical, 2), top_rows(dense, 2))
    assert sorted(docs[valid].tolist()) == [0, 1, 2]


def test_weights_zero_and_one_rank_like_each_channel_alone() -> None:
    rng = np.random.default_rng(0)
    docs = rng.normal(size=(50, 8)).astype(np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    queries = docs[:5] + 0.1
    lexical = rng.random((5, 50)).astype(np.float32)
    dense_only, _ = fused_top_k(lexical, queries, docs, FusionParameters(0.0), 10)
    np.testing.assert_array_equal(dense_only, exact_top_k(queries, docs, 10)[0])
    lexical_only, _ = fused_top_k(lexical, queries, docs, FusionParameters(1.0), 10)
    np.testing.assert_array_equal(lexical_only, np.argsort(-lexical, axis=1)[:, :10])


def test_a_corpus_smaller_than_the_feedback_depth_returns_each_document_once() -> None:
    docs = np.array([[1.0, 0.0]], dtype=np.float32)  # one document: two candidate slots
    lexical = np.array([[2.0]], dtype=np.float32)
    params = FusionParameters(0.4, feedback=0.5, feedback_depth=3)
    indices, scores = fused_top_k(lexical, docs, docs, params, 10)
    assert indices[0][np.isfinite(scores[0])].tolist() == [0]


def test_bad_fusion_parameters_name_the_field() -> None:
    with pytest.raises(HydraInputError, match="lexical_weight"):
        FusionParameters(1.5)
    with pytest.raises(HydraInputError, match="candidate_depth"):
        FusionParameters(0.5, candidate_depth=0)
    with pytest.raises(HydraInputError, match="unknown fusion field"):
        FusionParameters.from_dict({"lexical_weight": 0.3, "alpha": 1})


def test_untrained_hypernet_compiles_every_card_to_the_validated_prior(
    hypernet: Hypernet, encoder: FrozenEncoder
) -> None:
    retriever = ConditionedRetriever(hypernet, encoder)
    for card in (find_card("scifact"), generic_card()):
        fusion = retriever.compile(card).fusion
        assert fusion.lexical_weight == pytest.approx(PRIOR_FUSION.lexical_weight, abs=1e-6)
        assert fusion.feedback == pytest.approx(PRIOR_FUSION.feedback, abs=1e-6)


def test_compiled_retriever_file_round_trip_and_refusals(
    hypernet: Hypernet, encoder: FrozenEncoder, tmp_path: Path
) -> None:
    compiled = ConditionedRetriever(hypernet, encoder).compile(find_card("nfcorpus"))
    compiled.save(tmp_path / "nfcorpus.safetensors")
    loaded = CompiledRetriever.load(tmp_path / "nfcorpus.safetensors")
    assert loaded.task == "nfcorpus" and loaded.fusion == compiled.fusion
    assert loaded.head is not None and compiled.head is not None
    torch.testing.assert_close(loaded.head.weight, compiled.head.weight)
    hybrid_retriever().save(tmp_path / "hybrid.safetensors")
    assert CompiledRetriever.load(tmp_path / "hybrid.safetensors").head is None
    compiled.head.save(tmp_path / "head.safetensors")
    with pytest.raises(HydraInputError, match="head.safetensors.*not a Hydra retriever"):
        CompiledRetriever.load(tmp_path / "head.safetensors")


def test_hybrid_beats_each_channel_on_a_real_slice(
    scifact_slice: RetrievalTask, encoder: FrozenEncoder, corpus: tuple[np.ndarray, BM25Index]
) -> None:
    doc_vectors, lexical = corpus
    teachers = task_baselines(OpenedTask(scifact_slice, encoder), encoder)
    queries = scifact_slice.split_queries("test")
    ids, texts = queries["query_id"].to_list(), queries["text"].to_list()
    doc_ids = scifact_slice.corpus["doc_id"].to_list()
    index = RetrieverIndex(hybrid_retriever(), doc_ids, doc_vectors, lexical, encoder)
    ranking = index.search(ids, texts, 100)
    hybrid = score_ranking(ranking, scifact_slice)["ndcg@10"]
    assert HYBRID_FUSION.lexical_weight == 0.4
    assert hybrid > max(teachers["bm25"]["ndcg@10"], teachers["base"]["ndcg@10"])
    dense = RetrieverIndex(CompiledRetriever(None, DENSE_ONLY), doc_ids, doc_vectors, None, encoder)
    base = score_ranking(dense.search(ids, texts, 100), scifact_slice)["ndcg@10"]
    assert base == pytest.approx(teachers["base"]["ndcg@10"], abs=1e-9)
