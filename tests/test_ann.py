"""Approximate (HNSW) search: recall against exact search, the cached graph, ``--index``."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import cast

import faiss
import numpy as np
import pytest
from system_tools import HYDRA

from hydra_core.data.cards import find_card, write_card
from hydra_core.data.retrieval_task import RetrievalTask
from hydra_core.encoding.encoder import FrozenEncoder
from hydra_core.errors import HydraInputError
from hydra_core.model.compiled_retriever import DENSE_ONLY, CompiledRetriever
from hydra_core.model.retriever import RetrieverIndex
from hydra_core.model.score_fusion import FusionParameters
from hydra_core.ranking.ann_index import IndexKind, load_or_build_hnsw
from hydra_core.ranking.rankings import exact_top_k
from hydra_core.ranking.teachers import BM25Teacher
from hydra_pipeline.artifacts import save_beir_folder
from hydra_pipeline.benchmarks.inputs import random_head, replicated_vectors, untrained_hypernet

FEEDBACK = FusionParameters(lexical_weight=0.4, feedback=0.5)


@pytest.fixture(scope="module")
def slice_vectors(scifact_slice: RetrievalTask, encoder: FrozenEncoder) -> np.ndarray:
    return encoder.encode(scifact_slice.doc_texts(), "document")


def test_the_graph_finds_the_exact_top_100(slice_vectors: np.ndarray, tmp_path: Path) -> None:
    """5,000 replicated documents from the slice's real ones, through a head, as the bench."""
    docs = replicated_vectors(5000, slice_vectors, random_head(), faiss.IndexFlatIP(384))
    queries = docs[::50] + 0.05 * docs[1::50]
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    truth, exact_scores = exact_top_k(queries, docs, 100)
    graph = load_or_build_hnsw(docs, tmp_path)
    found, scores = graph.top_k(queries, 100)
    recall = np.mean([len(set(a) & set(b)) / 100 for a, b in zip(found, truth, strict=True)])
    assert recall >= 0.99
    # The graph holds the vectors: scores of what it finds are the exact inner products.
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ docs.T, found, 1), atol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-6).all()
    assert scores[:, 0] == pytest.approx(exact_scores[:, 0], abs=1e-5)


def test_a_second_load_builds_nothing_and_a_bad_file_is_rebuilt(
    slice_vectors: np.ndarray, tmp_path: Path
) -> None:
    first = load_or_build_hnsw(slice_vectors, tmp_path)
    assert first.built and first.path.parent == tmp_path / "ann"
    written = first.path.stat().st_mtime_ns
    second = load_or_build_hnsw(slice_vectors, tmp_path)
    assert not second.built and second.path == first.path
    assert second.path.stat().st_mtime_ns == written
    assert list((tmp_path / "ann").iterdir()) == [first.path]  # no temporary left behind
    # Other vectors (another head or corpus) get their own graph.
    other = load_or_build_hnsw(slice_vectors[:-1], tmp_path)
    assert other.built and other.path != first.path
    first.path.write_bytes(b"not a faiss index")
    rebuilt = load_or_build_hnsw(slice_vectors, tmp_path)
    assert rebuilt.built and rebuilt.index.ntotal == len(slice_vectors)
    assert not load_or_build_hnsw(slice_vectors, tmp_path).built


@pytest.mark.parametrize("fusion", [DENSE_ONLY, FEEDBACK], ids=["dense", "fused-feedback"])
def test_hnsw_ranks_a_small_corpus_as_exact_search_does(
    scifact_slice: RetrievalTask,
    encoder: FrozenEncoder,
    slice_vectors: np.ndarray,
    tmp_path: Path,
    fusion: FusionParameters,
) -> None:
    """On 300 documents the graph misses nothing, so fusing its candidates (rescored exactly)
    ranks as the full product does; ``exact`` is the default."""
    doc_ids, texts = scifact_slice.corpus["doc_id"].to_list(), scifact_slice.doc_texts()
    queries = scifact_slice.queries["text"].to_list()
    query_vectors = encoder.encode(queries, "query")
    lexical = BM25Teacher().index(doc_ids, texts)
    retriever = CompiledRetriever(random_head(), fusion)
    exact = RetrieverIndex(retriever, doc_ids, slice_vectors, lexical)
    hnsw = RetrieverIndex(
        retriever, doc_ids, slice_vectors, lexical, index="hnsw", cache_dir=tmp_path
    )
    assert exact.approximate is None and hnsw.approximate is not None
    rows, scores = exact.top_k(queries, 100, query_vectors)
    hnsw_rows, hnsw_scores = hnsw.top_k(queries, 100, query_vectors)
    np.testing.assert_array_equal(hnsw_rows, rows)
    np.testing.assert_allclose(hnsw_scores, scores, atol=1e-4)


def test_an_unknown_index_is_refused(slice_vectors: np.ndarray) -> None:
    retriever = CompiledRetriever(None, DENSE_ONLY)
    with pytest.raises(HydraInputError, match="unknown index 'ivf': choose one of exact, hnsw"):
        RetrieverIndex(retriever, ["a"], slice_vectors[:1], None, index=cast(IndexKind, "ivf"))


def test_search_with_an_index_through_the_console_script(
    scifact_slice: RetrievalTask, encoder: FrozenEncoder, slice_vectors: np.ndarray, tmp_path: Path
) -> None:
    """``hydra search --index hnsw`` builds the graph once, a second search loads it, and
    both answer as ``--index exact``; a bad value is a one-line error. The hypernet is the
    bench's untrained one of the real architecture (a zero hypernet's head ties every
    document, and ties may break apart)."""
    save_beir_folder(scifact_slice, tmp_path / "data" / "scifact")
    card = find_card("scifact").model_copy(update={"source": "./data/scifact"})
    write_card(card, tmp_path / "scifact.yaml")
    checkpoint = untrained_hypernet().save(tmp_path / "checkpoint")
    cache = encoder.cache.path.parent  # the slice's documents are encoded there already
    env = {**os.environ, "HYDRA_CARDS_DIR": str(tmp_path), "HYDRA_CACHE_DIR": str(cache)}

    def search(index: str) -> subprocess.CompletedProcess[str]:
        command = [str(HYDRA), "search", "--checkpoint", str(checkpoint), "--card", "scifact"]
        command += ["-k", "5", "--index", index, "cholesterol and breast cancer"]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)

    graphs = cache / "ann"
    before = set(graphs.iterdir()) if graphs.is_dir() else set()
    built = search("hnsw")
    assert built.returncode == 0, built.stderr
    assert "built hnsw-m32-efc200 over 300 vectors" in built.stderr
    (graph,) = set(graphs.iterdir()) - before
    written = graph.stat().st_mtime_ns
    loaded = search("hnsw")
    assert loaded.returncode == 0, loaded.stderr
    assert "built hnsw" not in loaded.stderr and graph.stat().st_mtime_ns == written
    exact = search("exact")
    assert exact.returncode == 0, exact.stderr
    assert len(exact.stdout.splitlines()) == 5
    assert loaded.stdout == built.stdout == exact.stdout

    refused = search("ivf")
    assert refused.returncode == 2
    assert refused.stderr.splitlines() == ["error: unknown index 'ivf': choose one of exact, hnsw"]
    assert refused.stdout == ""
