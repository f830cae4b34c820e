"""Figure 11: approximate (HNSW) against exact search, beside Faiss over base vectors."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

import numpy as np

from hydra_core.data.retrieval_task import RetrievalTask
from hydra_core.data.tasks import load_task
from hydra_core.encoding.encoder import (
    FrozenEncoder,
)
from hydra_pipeline.benchmarks.inputs import TOP_K, BenchSizes, random_head, replicated_vectors
from hydra_pipeline.benchmarks.measuring import Figure, interleaved, rss_mib, scratch_dir


def ann_figure(sizes: BenchSizes) -> Figure:
    """11. Approximate (HNSW) against exact dense search, beside faiss ``IndexFlatIP`` over the
    base vectors (a plain bi-encoder) and bm25s: build time, memory, batched and single-query
    queries/s, recall@100 against exact search, and on SciFact NDCG@10 of both.

    SciFact (``scifact_``): its whole corpus (a slice with ``--quick``) and test queries, with
    the frozen base's own space as the dense channel: ``base`` alone and ``hybrid`` (fused
    with BM25). Replicated corpora (``n<N>_``): the first are SciFact's real document
    embeddings, each further one a random mixture of two of them, through a random 384->256
    head, so the vectors keep real embeddings' shape (random unit vectors have none, and no
    index finds their neighbours); SciFact's queries search them. The plain bi-encoder
    searches the same documents' base (384-d) vectors. Each graph is built in a scratch
    folder (``build_s``), then loaded from it as a second process would (``load_s``).
    """
    from hydra_core.ranking.ann_index import DEFAULT_HNSW

    figure: Figure = {f"hnsw_{key}": value for key, value in asdict(DEFAULT_HNSW).items()}
    task = load_task("beir/scifact")
    if sizes.ann_scifact_docs:
        task = task.head(sizes.ann_scifact_docs, sizes.batched_queries)
    encoder = FrozenEncoder(show_progress=False)
    doc_vectors = encoder.encode(task.doc_texts(), "document")
    queries = task.queries
    query_vectors = encoder.encode(queries["text"].to_list(), "query")
    with scratch_dir() as folder:
        figure.update(_scifact_ann(sizes, task, doc_vectors, encoder, folder))
        for n_docs in sizes.ann_sizes:
            replicated = _replicated_ann(sizes, n_docs, doc_vectors, query_vectors, folder)
            figure.update({f"n{n_docs}_{key}": value for key, value in replicated.items()})
    return figure


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each row of ``truth`` that the same row of ``found`` holds."""
    shared = [
        len(set(row) & set(exact)) / len(exact) for row, exact in zip(found, truth, strict=True)
    ]
    return float(np.mean(shared))


def _qps_sides(
    sides: dict[str, Callable[[slice], object]], n_queries: int, single_queries: int
) -> Figure:
    """Queries/s of each side searching all queries at once (``side(slice(None))``) and the
    first ``single_queries`` one at a time, interleaved."""
    single = range(min(single_queries, n_queries))
    timed: dict[str, Callable[[], object]] = {}
    for name, side in sides.items():
        timed[f"{name}_batched"] = lambda side=side: side(slice(None))
        timed[f"{name}_single"] = lambda side=side: [side(slice(i, i + 1)) for i in single]
    counts = {"batched": n_queries, "single": len(single)}
    return {
        f"{name}_qps": round(counts[name.rsplit("_", 1)[1]] / statistics.median(seconds), 1)
        for name, seconds in interleaved(timed, 2).items()
    }


def _flat_ip(vectors: np.ndarray) -> Any:
    """faiss' exact inner-product index: what a plain bi-encoder searches."""
    import faiss

    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


def _timed_hnsw(vectors: np.ndarray, folder: Path) -> tuple[Any, Figure]:
    """The graph over ``vectors`` built into ``folder``, then loaded back: the loaded one,
    and the build and load seconds, resident memory the build added, and the file's size."""
    from hydra_core.ranking.ann_index import load_or_build_hnsw

    gc.collect()
    before = rss_mib()
    started = time.perf_counter()
    built = load_or_build_hnsw(vectors, folder)
    build_seconds = time.perf_counter() - started
    # A small graph can add less than the allocator hands back meanwhile: never below 0.
    grown = max(rss_mib() - before, 0.0)
    del built
    gc.collect()
    started = time.perf_counter()
    loaded = load_or_build_hnsw(vectors, folder)
    load_seconds = time.perf_counter() - started
    if loaded.built:
        raise RuntimeError("the second load of an HNSW index built it again")
    return loaded, {
        "hnsw_build_s": round(build_seconds, 2),
        "hnsw_load_s": round(load_seconds, 3),
        "hnsw_build_rss_mib": round(grown, 1),
        "hnsw_file_mib": round(loaded.path.stat().st_size / 2**20, 1),
        "vectors_mib": round(vectors.nbytes / 2**20, 1),
    }


def _scifact_ann(
    sizes: BenchSizes,
    task: RetrievalTask,
    doc_vectors: np.ndarray,
    encoder: FrozenEncoder,
    folder: Path,
) -> Figure:
    from hydra_core.evaluation.methods import EVAL_SPLIT, score_ranking
    from hydra_core.model.compiled_retriever import DENSE_ONLY, HYBRID_FUSION, CompiledRetriever
    from hydra_core.model.retriever import RetrieverIndex
    from hydra_core.ranking.rankings import exact_top_k
    from hydra_core.ranking.teachers import BM25Teacher

    doc_ids, texts = task.corpus["doc_id"].to_list(), task.doc_texts()
    test = task.split_queries(EVAL_SPLIT)
    query_ids, query_texts = test["query_id"].to_list(), test["text"].to_list()
    query_vectors = encoder.encode(query_texts, "query")
    lexical = BM25Teacher().index(doc_ids, texts)
    hnsw, figure = _timed_hnsw(doc_vectors, folder)
    figure = {"scifact_documents": len(doc_ids), "scifact_queries": len(query_ids)} | {
        f"scifact_{key}": value for key, value in figure.items()
    }
    depth = min(TOP_K, len(doc_ids))
    for name, fusion in (("base", DENSE_ONLY), ("hybrid", HYBRID_FUSION)):
        rankings = {}
        for kind in ("exact", "hnsw"):
            index = RetrieverIndex(
                CompiledRetriever(None, fusion), doc_ids, doc_vectors, lexical,
                index=kind, cache_dir=folder,
            )  # fmt: skip
            rankings[kind] = index.top_k(query_texts, depth, query_vectors)[0]
            ranking = index.search(query_ids, query_texts, depth, query_vectors)
            ndcg = score_ranking(ranking, task)["ndcg@10"]
            figure[f"scifact_{name}_{kind}_ndcg@10"] = round(ndcg, 5)
        figure[f"scifact_{name}_ndcg@10_difference"] = round(
            figure[f"scifact_{name}_hnsw_ndcg@10"] - figure[f"scifact_{name}_exact_ndcg@10"], 5
        )
        figure[f"scifact_{name}_recall@100"] = round(
            _recall(rankings["hnsw"], rankings["exact"]), 5
        )
    flat = _flat_ip(doc_vectors)
    tokens = cast(
        list[list[str]],
        lexical.tokenizer.tokenize(
            query_texts, update_vocab=False, return_as="string", show_progress=False
        ),
    )
    qps = _qps_sides(
        {
            "exact": lambda rows: exact_top_k(query_vectors[rows], doc_vectors, depth),
            "hnsw": lambda rows: hnsw.top_k(query_vectors[rows], depth),
            "flat_ip": lambda rows: flat.search(query_vectors[rows], depth),
            "bm25s": lambda rows: lexical.retriever.retrieve(
                tokens[rows], k=depth, show_progress=False
            ),
        },
        len(query_ids),
        sizes.single_queries,
    )
    figure.update({f"scifact_{key}": value for key, value in qps.items()})
    return figure


def _replicated_ann(
    sizes: BenchSizes, n_docs: int, base: np.ndarray, query_base: np.ndarray, folder: Path
) -> Figure:
    import faiss

    from hydra_core.ranking.rankings import exact_top_k

    head = random_head()
    flat = faiss.IndexFlatIP(base.shape[1])
    docs = replicated_vectors(n_docs, base, head, flat)
    queries = head.apply(query_base)
    truth, _ = exact_top_k(queries, docs, TOP_K)
    hnsw, figure = _timed_hnsw(docs, folder)
    figure["recall@100"] = round(_recall(hnsw.top_k(queries, TOP_K)[0], truth), 5)
    figure["queries"] = len(queries)
    figure.update(
        _qps_sides(
            {
                "exact": lambda rows: exact_top_k(queries[rows], docs, TOP_K),
                "hnsw": lambda rows: hnsw.top_k(queries[rows], TOP_K),
                "flat_ip": lambda rows: flat.search(query_base[rows], TOP_K),
            },
            len(queries),
            sizes.single_queries,
        )
    )
    figure["single_speedup_vs_exact"] = round(
        figure["hnsw_single_qps"] / figure["exact_single_qps"], 1
    )
    figure["batched_speedup_vs_exact"] = round(
        figure["hnsw_batched_qps"] / figure["exact_batched_qps"], 1
    )
    return figure
