"""Figures 3-6 and 10: compiling a card, projecting a corpus, searching, a new task's
cost, and the whole compiled retriever against bm25s."""

from __future__ import annotations

import multiprocessing
import statistics
import time
from typing import Any, cast

import numpy as np

from hydra_core.data.tasks import load_task
from hydra_core.encoding.embedding_cache import EmbeddingCache
from hydra_core.encoding.encoder import (
    FrozenEncoder,
)
from hydra_core.settings import PROJECT_ROOT
from hydra_pipeline.benchmarks.inputs import (
    BASE_DIM,
    HEAD_DIM,
    TOP_K,
    BenchSizes,
    benchmark_corpus,
    random_head,
    store_benchmark_corpus,
    unit_vectors,
    untrained_hypernet,
)
from hydra_pipeline.benchmarks.measuring import (
    Figure,
    interleaved,
    median_ms,
    peak_rss_mib,
    scratch_dir,
)


def compile_figure(sizes: BenchSizes) -> Figure:
    """3. Milliseconds to compile the SciFact card into its retriever (card texts cached),
    from a cached task profile, and to profile a new task over N encoded documents (the
    probe a fitted gate reads: new probe texts each time, so their encoding counts)."""
    from hydra_core.data.cards import find_card
    from hydra_core.model.retriever import ConditionedRetriever
    from hydra_core.model.task_profile import CorpusSample, task_profile
    from hydra_core.ranking.teachers import BM25Params

    card = find_card("scifact", PROJECT_ROOT / "cards")
    doc_texts, _ = benchmark_corpus(sizes.corpus_docs, 0)
    doc_vectors = unit_vectors(sizes.corpus_docs, BASE_DIM, seed=5)
    lexical = BM25Params().index([str(i) for i in range(len(doc_texts))], doc_texts)
    sample = CorpusSample.of(doc_texts)
    with scratch_dir() as folder:
        encoder = FrozenEncoder(cache=EmbeddingCache(folder / "e.sqlite"), show_progress=False)
        retriever = ConditionedRetriever(untrained_hypernet(), encoder)
        encoder.encode(["load the model before timing"], "query")
        started = time.perf_counter()
        compiled = retriever.compile(card)
        first_seconds = time.perf_counter() - started
        seconds, with_profile, profiling = [], [], []
        for _ in range(sizes.compile_repeats):
            started = time.perf_counter()
            compiled = retriever.compile(card)
            seconds.append(time.perf_counter() - started)
        profile = task_profile(card.example_queries, sample, doc_vectors, lexical, encoder)
        for repeat in range(1, sizes.new_task_repeats + 1):  # new probes each time
            started = time.perf_counter()
            profile = task_profile(
                card.example_queries, sample, doc_vectors, lexical, encoder, seed=repeat
            )
            profiling.append(time.perf_counter() - started)
        for _ in range(sizes.compile_repeats):
            started = time.perf_counter()
            retriever.compile(card, profile)
            with_profile.append(time.perf_counter() - started)
    head = compiled.head
    if head is None:
        raise RuntimeError("a hypernet compiled a retriever without a head")
    return {
        "repeats": sizes.compile_repeats,
        "compile_ms": round(median_ms(seconds), 2),
        "compile_ms_p90": round(float(np.percentile(seconds, 90)) * 1e3, 2),
        "first_compile_ms_encoding_card": round(first_seconds * 1e3, 1),
        "compile_ms_cached_profile": round(median_ms(with_profile), 2),
        "profile_documents": sizes.corpus_docs,
        "profile_new_task_ms": round(median_ms(profiling), 1),
        "head_parameters": head.num_parameters,
        "lexical_weight": round(compiled.fusion.lexical_weight, 4),
    }


def project_figure(sizes: BenchSizes) -> Figure:
    """4. Applying a head to N cached 384-d embeddings vs a bare numpy matmul of that shape."""
    embeddings = unit_vectors(sizes.corpus_docs, BASE_DIM, seed=2)
    head = random_head()
    weight_t = np.ascontiguousarray(head.weight.numpy().T)
    times = interleaved(
        {"head": lambda: head.apply(embeddings), "numpy": lambda: embeddings @ weight_t},
        sizes.project_repeats,
    )
    head_ms, numpy_ms = median_ms(times["head"]), median_ms(times["numpy"])
    return {
        "documents": sizes.corpus_docs,
        "head_ms": round(head_ms, 2),
        "numpy_matmul_ms": round(numpy_ms, 2),
        "project_ratio": round(head_ms / numpy_ms, 3),
    }


def search_figure(sizes: BenchSizes) -> Figure:
    """5. Queries/s of exact top-100 search over N projected documents, and of bm25s.

    Both sides get their queries ready (vectors; bm25s token ids), so each is timed on
    search alone. bm25s runs as Hydra's BM25 teacher runs it (one thread).
    """
    from hydra_core.ranking.rankings import exact_top_k
    from hydra_core.ranking.teachers import BM25Teacher

    start_rss = peak_rss_mib()
    docs = unit_vectors(sizes.corpus_docs, HEAD_DIM, seed=3)
    queries = unit_vectors(sizes.batched_queries, HEAD_DIM, seed=4)
    doc_texts, query_texts = benchmark_corpus(sizes.corpus_docs, sizes.batched_queries)
    started = time.perf_counter()
    index = BM25Teacher().index([str(i) for i in range(len(doc_texts))], doc_texts)
    bm25_index_seconds = time.perf_counter() - started
    del doc_texts
    tokens = cast(
        list[list[str]],
        index.tokenizer.tokenize(
            query_texts, update_vocab=False, return_as="string", show_progress=False
        ),
    )
    single = range(sizes.single_queries)

    def bm25(batch: Any) -> Any:
        return index.retriever.retrieve(batch, k=TOP_K, show_progress=False)

    times = interleaved(
        {
            "dense_batched": lambda: exact_top_k(queries, docs, TOP_K),
            "bm25_batched": lambda: bm25(tokens),
            "dense_single": lambda: [exact_top_k(queries[i : i + 1], docs, TOP_K) for i in single],
            "bm25_single": lambda: [bm25(tokens[i : i + 1]) for i in single],
        },
        2,
    )
    counts = {"batched": sizes.batched_queries, "single": sizes.single_queries}
    qps = {
        name: counts[name.split("_")[1]] / statistics.median(seconds)
        for name, seconds in times.items()
    }
    figure: Figure = {
        "documents": sizes.corpus_docs,
        "k": TOP_K,
        "batched_queries": sizes.batched_queries,
        "single_queries": sizes.single_queries,
        "bm25_index_s": round(bm25_index_seconds, 1),
    }
    figure.update({f"{name}_qps": round(rate, 1) for name, rate in qps.items()})
    figure["batched_ratio_vs_bm25"] = round(qps["dense_batched"] / qps["bm25_batched"], 2)
    figure["single_ratio_vs_bm25"] = round(qps["dense_single"] / qps["bm25_single"], 2)
    figure["start_rss_mib"] = round(start_rss, 1)
    return figure


def new_task_figure(sizes: BenchSizes) -> Figure:
    """6. Wall time from a new card to a searchable index over an already-encoded corpus.

    The corpus is encoded beforehand by another process (an ingest job, here
    :func:`store_benchmark_corpus` in a spawned interpreter), which puts its vectors in the
    embedding cache under the encoder's identity and hands back their cache keys. This
    process is the running service: it holds document ids and vectors, never the texts,
    and its model is loaded. A new card's texts are not cached, so compiling encodes them.
    ``new_task_s`` starts with the corpus vectors in memory (read once from the cache
    beforehand straight into one matrix, ``read_cache_s``); ``new_task_from_cache_s``
    adds that read.
    """
    from hydra_core.data.cards import find_card
    from hydra_core.model.retriever import ConditionedRetriever, RetrieverIndex

    start_rss = peak_rss_mib()
    template = find_card("scifact", PROJECT_ROOT / "cards")
    with scratch_dir() as folder:
        encoder = FrozenEncoder(cache=EmbeddingCache(folder / "e.sqlite"), show_progress=False)
        with multiprocessing.get_context("spawn").Pool(1) as ingest:
            doc_keys = ingest.apply(
                store_benchmark_corpus, (encoder.cache.path, encoder.identity, sizes.corpus_docs)
            )
        doc_ids = [str(i) for i in range(len(doc_keys))]
        retriever = ConditionedRetriever(untrained_hypernet(), encoder)
        encoder.encode(["load the model before timing"], "query")
        started = time.perf_counter()
        doc_vectors, found = encoder.cache.get_matrix(encoder.identity, "document", doc_keys)
        read_seconds = time.perf_counter() - started
        if not found.all():
            raise RuntimeError(f"{int((~found).sum())} benchmark vectors missing from the cache")
        steps: dict[str, list[float]] = {"compile": [], "index": []}
        for repeat in range(sizes.new_task_repeats):
            card = template.model_copy(
                update={
                    "name": f"benchmark-new-{repeat}",
                    "description": f"{template.description} (new task variant {repeat})",
                    "example_queries": [f"{q} ({repeat})" for q in template.example_queries],
                }
            )
            started = time.perf_counter()
            dense = retriever.compile(card).dense_only()  # synthetic vectors have no text
            compiled = time.perf_counter()
            index = RetrieverIndex(dense, doc_ids, doc_vectors, None, encoder)
            indexed = time.perf_counter()
            index.search(["q"], ["a first query on the new task"], 10)
            steps["compile"].append(compiled - started)
            steps["index"].append(indexed - compiled)
            del index
        model_calls = encoder.stats.encoded
    medians = {name: statistics.median(seconds) for name, seconds in steps.items()}
    return {
        "documents": sizes.corpus_docs,
        "repeats": sizes.new_task_repeats,
        "compile_s": round(medians["compile"], 3),
        "index_s": round(medians["index"], 3),
        "read_cache_s": round(read_seconds, 3),
        "new_task_s": round(medians["compile"] + medians["index"], 3),
        "new_task_from_cache_s": round(read_seconds + sum(medians.values()), 3),
        "texts_encoded": model_calls,
        "start_rss_mib": round(start_rss, 1),
    }


def retriever_figure(sizes: BenchSizes) -> Figure:
    """10. Queries/s of a compiled retriever (BM25 + head, fused, with feedback) searching
    SciFact's 5,183 documents for a batch of its queries, against bm25s' own batched search.

    Both sides start from query texts (tokenising is part of the work) and return a top 100;
    the retriever also gets the queries' base vectors (random stand-ins: the encoder's work
    is the same for any retriever and is measured by figure 1).
    """
    from hydra_core.model.compiled_retriever import CompiledRetriever
    from hydra_core.model.fusion_gate import PRIOR_FUSION
    from hydra_core.model.retriever import RetrieverIndex
    from hydra_core.ranking.teachers import BM25Teacher

    task = load_task("beir/scifact")
    doc_ids, texts = task.corpus["doc_id"].to_list(), task.doc_texts()
    query_texts = task.queries["text"].to_list()[: sizes.batched_queries]
    query_ids = [str(i) for i in range(len(query_texts))]
    query_vectors = unit_vectors(len(query_texts), BASE_DIM, seed=5)
    lexical = BM25Teacher().index(doc_ids, texts)
    compiled = CompiledRetriever(random_head(), PRIOR_FUSION)
    index = RetrieverIndex(compiled, doc_ids, unit_vectors(len(doc_ids), BASE_DIM, 6), lexical)

    def bm25() -> Any:
        tokens = lexical.tokenizer.tokenize(
            query_texts, update_vocab=False, return_as="string", show_progress=False
        )
        return lexical.retriever.retrieve(
            cast(list[list[str]], tokens), k=TOP_K, show_progress=False
        )

    times = interleaved(
        {
            "retriever": lambda: index.search(query_ids, query_texts, TOP_K, query_vectors),
            "bm25s": bm25,
        },
        3,
    )
    qps = {name: len(query_texts) / statistics.median(seconds) for name, seconds in times.items()}
    return {
        "documents": len(doc_ids),
        "queries": len(query_texts),
        "k": TOP_K,
        "retriever_qps": round(qps["retriever"], 1),
        "bm25s_qps": round(qps["bm25s"], 1),
        "ratio_vs_bm25s": round(qps["retriever"] / qps["bm25s"], 2),
    }
