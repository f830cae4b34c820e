"""Hydra's benchmark suite (``hydra bench``): one plain function per figure.

The promise is that a new task costs almost nothing: documents are encoded once by the
frozen base and a task only compiles and applies a tiny head. Each figure measures a part of
that. The machines are shared and noisy, so every comparison runs both sides in the same
process, on the same data, interleaved, and reports their ratio beside the raw rates.

Data: figures 1-3 use real SciFact documents and the shipped SciFact card. Figures 4-7 and 9
use a synthetic corpus of random unit vectors (speed and memory do not depend on the values);
the texts that bm25s indexes in figure 5 (and that key the cache in figure 6) are real
documents of the five development collections, and beyond their ~24,800 documents each
further one joins the first half of one real document to the second half of another
(pairs drawn with a fixed seed), so vocabulary and lengths stay realistic. Figures 5 and 6
each run in a fresh process, so figure 7 can report each one's own peak resident memory.
"""

from __future__ import annotations

import gc
import itertools
import json
import multiprocessing
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from http.client import HTTPConnection
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import yaml

from hydra_core.data.tasks import RetrievalTask, load_task
from hydra_core.encoding.embedding_cache import EmbeddingCache, text_key
from hydra_core.encoding.encoder import (
    BACKENDS,
    DEFAULT_MODEL,
    Backend,
    FrozenEncoder,
    Precision,
    Role,
    default_precision,
    resolve_model_path,
)
from hydra_core.settings import PROJECT_ROOT, load_settings

Figure = dict[str, Any]

COLLECTIONS: tuple[str, ...] = ("beir/scifact", "beir/nfcorpus", "cranfield", "cacm", "vaswani")
"""Where figure 5's texts come from: the five development collections, in this order."""
TOP_K = 100
BASE_DIM = 384
HEAD_DIM = 256


@dataclass(frozen=True)
class BenchSizes:
    """How much work each figure does; :data:`QUICK` keeps the suite to seconds for tests."""

    encode_docs: int = 2000
    encode_rounds: int = 4
    cache_docs: int = 500
    compile_repeats: int = 50
    corpus_docs: int = 100_000
    project_repeats: int = 7
    batched_queries: int = 1000
    single_queries: int = 200
    new_task_repeats: int = 3
    pipeline_docs: int = 300
    pipeline_queries: int = 30
    serve_tasks: int = 5
    load_seconds: float = 10.0
    load_requests: int = 20_000
    ann_scifact_docs: int = 0
    ann_sizes: tuple[int, ...] = (100_000,)
    quick: bool = False


FULL = BenchSizes()
QUICK = BenchSizes(
    encode_docs=32,
    encode_rounds=2,
    cache_docs=16,
    compile_repeats=5,
    corpus_docs=3000,
    project_repeats=3,
    batched_queries=64,
    single_queries=16,
    new_task_repeats=1,
    serve_tasks=3,
    load_seconds=2.0,
    load_requests=2_000,
    ann_scifact_docs=300,
    ann_sizes=(3000,),
    quick=True,
)


# ------------------------------------------------------------------------------ helpers


def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    """(n x dim) float32 rows of unit length: stand-ins for cached normalised embeddings."""
    vectors = np.random.default_rng(seed).standard_normal((n, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def scifact_texts(n: int) -> list[str]:
    """The first ``n`` SciFact documents as the encoder sees them (title + text)."""
    return load_task("beir/scifact").doc_texts()[:n]


def benchmark_corpus(n_docs: int, n_queries: int) -> tuple[list[str], list[str]]:
    """``n_docs`` document texts and ``n_queries`` query texts from the five collections.

    Queries are the collections' real queries, cycled when more are asked for than exist.
    """
    queries: list[str] = []
    for source in COLLECTIONS:
        if len(queries) >= n_queries:
            break
        queries += load_task(source).queries["text"].to_list()
    cycled = [queries[i % len(queries)] for i in range(n_queries)]
    return list(benchmark_documents(n_docs)), cycled


def benchmark_documents(n_docs: int) -> Iterator[str]:
    """``n_docs`` document texts, one at a time, so a caller can keep less than all of them.

    Real documents come first, loading collections only until there are enough; further
    documents join halves of two real ones.
    """
    docs: list[str] = []
    for source in COLLECTIONS:
        if len(docs) >= n_docs:
            break
        docs += [text for text in load_task(source).doc_texts() if text.strip()]
    yield from docs[:n_docs]
    rng = np.random.default_rng(0)
    for first, second in rng.integers(0, len(docs), size=(max(0, n_docs - len(docs)), 2)):
        head, tail = docs[first].split(), docs[second].split()
        yield " ".join(head[: len(head) // 2] + tail[len(tail) // 2 :])


def store_benchmark_corpus(cache_path: Path, identity: str, n_docs: int) -> list[str]:
    """Cache random unit vectors as ``identity``'s embeddings of the benchmark documents.

    Returns the documents' cache keys in order; the texts themselves stay in this process.
    """
    cache = EmbeddingCache(cache_path)
    keys = [text_key(text) for text in benchmark_documents(n_docs)]
    for start in range(0, len(keys), 10_000):
        block = keys[start : start + 10_000]
        cache.put_many(identity, "document", block, unit_vectors(len(block), BASE_DIM, start))
    return keys


def random_head(seed: int = 0) -> Any:
    """A 384->256 head with random parameters: applying it costs the same as a trained one."""
    from hydra_core.model.head import ProjectionHead

    generator = torch.Generator().manual_seed(seed)
    return ProjectionHead(
        weight=torch.randn(HEAD_DIM, BASE_DIM, generator=generator) / BASE_DIM**0.5,
        bias=torch.randn(HEAD_DIM, generator=generator) * 0.01,
        scale=1.0 + torch.randn(HEAD_DIM, generator=generator) * 0.01,
        shift=torch.randn(HEAD_DIM, generator=generator) * 0.01,
        task="benchmark",
    )


def untrained_hypernet() -> Any:
    """A hypernet of the real architecture; compiling with it costs what a trained one does."""
    from hydra_core.model.hypernet import initial_hypernet

    return initial_hypernet(DEFAULT_MODEL, unit_vectors(1000, BASE_DIM, seed=1))


def _status_mib(field: str) -> float | None:
    """A memory field of Linux's ``/proc/self/status`` in MiB (None elsewhere)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return None


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, in MiB.

    Linux's VmHWM belongs to the process image, whereas ``ru_maxrss`` survives exec and
    so would report the parent's peak in a freshly spawned child.
    """
    peak = _status_mib("VmHWM")
    if peak is not None:
        return peak
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def rss_mib() -> float:
    """This process's resident memory now, in MiB (Linux's VmRSS)."""
    resident = _status_mib("VmRSS")
    if resident is None:
        raise RuntimeError("resident memory is read from /proc/self/status (Linux only)")
    return resident


@contextmanager
def scratch_dir() -> Iterator[Path]:
    """A throwaway folder for a figure's caches, sharing the project's converted models.

    Its ``openvino`` entry links to the project cache's, so OpenVINO's one-time conversion
    is not repeated by every figure; each figure's embeddings still start from nothing.
    """
    shared = load_settings().cache_dir / "openvino"
    shared.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hydra-bench-") as folder:
        (Path(folder) / "openvino").symlink_to(shared, target_is_directory=True)
        yield Path(folder)


def _median_ms(seconds: Sequence[float]) -> float:
    return statistics.median(seconds) * 1e3


def _interleaved(sides: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Time each side once per round, rotating who goes first, so load hits all alike."""
    names = list(sides)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            started = time.perf_counter()
            sides[name]()
            times[name].append(time.perf_counter() - started)
    return times


class _CountingEncoder(FrozenEncoder):
    """A FrozenEncoder that counts how often it runs the model (for figure 2)."""

    calls = 0

    def _encode_uncached(self, texts: list[str], role: Role) -> np.ndarray:
        self.calls += 1
        return super()._encode_uncached(texts, role)


# ------------------------------------------------------------------------------ figures


def encode_figure(sizes: BenchSizes) -> Figure:
    """1. Documents/s of Hydra's encoder paths vs plain ``SentenceTransformer.encode`` (fp32).

    Every Hydra side encodes into its own empty cache, so it pays hashing and SQLite
    writes on top of the model. ``encode_ratio`` is the torch path at the plain path's
    precision (fp32), i.e. Hydra's overhead; the other ratios are the faster paths.
    """
    from sentence_transformers import SentenceTransformer

    texts = scifact_texts(sizes.encode_docs + 8)
    warm_up, texts = texts[:8], texts[8:]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    plain = SentenceTransformer(resolve_model_path(DEFAULT_MODEL), device="cpu")
    fast_precision = default_precision()
    configs: dict[str, tuple[Backend, Precision]] = {"torch_fp32": ("torch", "fp32")}
    if fast_precision != "fp32":
        configs[f"torch_{fast_precision}"] = ("torch", fast_precision)
    configs[f"openvino_{fast_precision}"] = ("openvino", fast_precision)
    chunks = [
        list(chunk) for chunk in np.array_split(np.array(texts, dtype=object), sizes.encode_rounds)
    ]
    outputs: dict[str, list[np.ndarray]] = {name: [] for name in ["plain_fp32", *configs]}
    with scratch_dir() as folder:
        encoders = {
            name: FrozenEncoder(
                cache=EmbeddingCache(folder / f"{name}.sqlite"),
                backend=backend,
                precision=precision,
                show_progress=False,
            )
            for name, (backend, precision) in configs.items()
        }
        load_seconds: dict[str, float] = {}
        for name, encoder in encoders.items():
            started = time.perf_counter()
            encoder.encode(warm_up, "document")
            load_seconds[name] = time.perf_counter() - started
        plain.encode(warm_up, normalize_embeddings=True)

        def plain_side(chunk: list[str]) -> None:
            with torch.inference_mode():
                outputs["plain_fp32"].append(plain.encode(chunk, normalize_embeddings=True))

        def hydra_side(name: str, chunk: list[str]) -> None:
            outputs[name].append(encoders[name].encode(chunk, "document"))

        totals = {name: 0.0 for name in outputs}
        for chunk in chunks:
            sides: dict[str, Callable[[], object]] = {"plain_fp32": lambda c=chunk: plain_side(c)}
            sides.update({name: lambda n=name, c=chunk: hydra_side(n, c) for name in configs})
            for name, seconds in _interleaved(sides, 1).items():
                totals[name] += seconds[0]
    rates = {name: len(texts) / seconds for name, seconds in totals.items()}
    reference = np.concatenate(outputs["plain_fp32"])
    figure: Figure = {"documents": len(texts), "precision": fast_precision}
    for name, rate in rates.items():
        figure[f"{name}_docs_per_s"] = round(rate, 2)
    for name in configs:
        vectors = np.concatenate(outputs[name])
        figure[f"{name}_min_cosine_to_plain"] = round(float((vectors * reference).sum(1).min()), 6)
        figure[f"{name}_first_call_s"] = round(load_seconds[name], 2)
    figure["encode_ratio"] = round(rates["torch_fp32"] / rates["plain_fp32"], 3)
    for name in configs:
        if name != "torch_fp32":
            figure[f"{name}_ratio"] = round(rates[name] / rates["plain_fp32"], 3)
    if f"torch_{fast_precision}" in rates and fast_precision != "fp32":
        figure[f"openvino_vs_torch_{fast_precision}_ratio"] = round(
            rates[f"openvino_{fast_precision}"] / rates[f"torch_{fast_precision}"], 3
        )
    return figure


def cache_figure(sizes: BenchSizes) -> Figure:
    """2. A second encode of the same texts: model calls (must be 0) and wall time."""
    texts = scifact_texts(sizes.cache_docs)
    with scratch_dir() as folder:
        first = _CountingEncoder(cache=EmbeddingCache(folder / "e.sqlite"), show_progress=False)
        started = time.perf_counter()
        first.encode(texts, "document")
        first_seconds = time.perf_counter() - started
        second = _CountingEncoder(cache=EmbeddingCache(folder / "e.sqlite"), show_progress=False)
        started = time.perf_counter()
        second.encode(texts, "document")
        second_seconds = time.perf_counter() - started
    return {
        "texts": len(texts),
        "encoder": second.identity,
        "first_encode_s": round(first_seconds, 3),
        "first_encoder_calls": first.calls,
        "second_encode_s": round(second_seconds, 4),
        "second_encoder_calls": second.calls,
        "second_texts_encoded": second.stats.encoded,
        "second_loaded_model": "model" in second.__dict__,
        "speedup": round(first_seconds / second_seconds, 1),
    }


def compile_figure(sizes: BenchSizes) -> Figure:
    """3. Milliseconds to compile the SciFact card into its retriever (card texts cached)."""
    from hydra_core.data.cards import find_card
    from hydra_core.model.retriever import ConditionedRetriever

    card = find_card("scifact", PROJECT_ROOT / "cards")
    with scratch_dir() as folder:
        encoder = FrozenEncoder(cache=EmbeddingCache(folder / "e.sqlite"), show_progress=False)
        retriever = ConditionedRetriever(untrained_hypernet(), encoder)
        encoder.encode(["load the model before timing"], "query")
        started = time.perf_counter()
        compiled = retriever.compile(card)
        first_seconds = time.perf_counter() - started
        seconds = []
        for _ in range(sizes.compile_repeats):
            started = time.perf_counter()
            compiled = retriever.compile(card)
            seconds.append(time.perf_counter() - started)
    head = compiled.head
    if head is None:
        raise RuntimeError("a hypernet compiled a retriever without a head")
    return {
        "repeats": sizes.compile_repeats,
        "compile_ms": round(_median_ms(seconds), 2),
        "compile_ms_p90": round(float(np.percentile(seconds, 90)) * 1e3, 2),
        "first_compile_ms_encoding_card": round(first_seconds * 1e3, 1),
        "head_parameters": head.num_parameters,
        "lexical_weight": round(compiled.fusion.lexical_weight, 4),
    }


def project_figure(sizes: BenchSizes) -> Figure:
    """4. Applying a head to N cached 384-d embeddings vs a bare numpy matmul of that shape."""
    embeddings = unit_vectors(sizes.corpus_docs, BASE_DIM, seed=2)
    head = random_head()
    weight_t = np.ascontiguousarray(head.weight.numpy().T)
    times = _interleaved(
        {"head": lambda: head.apply(embeddings), "numpy": lambda: embeddings @ weight_t},
        sizes.project_repeats,
    )
    head_ms, numpy_ms = _median_ms(times["head"]), _median_ms(times["numpy"])
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

    times = _interleaved(
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


def serve_figure(sizes: BenchSizes) -> Figure:
    """9. Tasks served by one process over one corpus: memory per extra task, single-query
    latency over HTTP against ``hydra search``'s in-process path, and the load test.

    The service (:mod:`hydra_core.serving.registry`) holds the corpus' base vectors once and each
    task its head and projection of the corpus; it runs on a real uvicorn on 127.0.0.1 in
    this process. The vectors are synthetic (as in figures 4-7), the cards the shipped
    SciFact card under new names (compiled by a hypernet of the real architecture), and
    the queries the development collections' real ones, each made new per measurement (a
    suffix), so both sides encode every query. The in-process side is ``hydra search``
    without its loading: a ``RetrieverIndex`` of the same retriever and ``search`` (which also
    stores each query in the embedding cache). ``service`` is the service's own search
    without HTTP, so ``http`` minus ``service`` is what HTTP costs. Memory is resident
    memory (VmRSS) before and after the extra tasks are added.
    """
    from hydra_core.data.cards import find_card
    from hydra_core.model.retriever import RetrieverIndex
    from hydra_core.ranking.teachers import BM25Teacher
    from hydra_core.serving.http_api import create_app, running_server
    from hydra_core.serving.registry import Corpus, RetrieverSearcher, TaskRegistry
    from hydra_pipeline.load_test import local_address, run_load_test

    template = find_card("scifact", PROJECT_ROOT / "cards").model_copy(update={"source": "bench"})

    def card(name: str) -> Any:
        return template.model_copy(
            update={"name": name, "description": f"{template.description} ({name})"}
        )

    n_docs = sizes.corpus_docs
    _, queries = benchmark_corpus(0, sizes.single_queries)
    with scratch_dir() as folder:
        encoder = FrozenEncoder(cache=EmbeddingCache(folder / "e.sqlite"), show_progress=False)
        registry = TaskRegistry(encoder, untrained_hypernet(), "benchmark", PROJECT_ROOT / "cards")
        ids = [str(i) for i in range(n_docs)]
        lexical = BM25Teacher().index(ids, list(benchmark_documents(n_docs)))
        titles = [f"document {i}" for i in ids]
        corpus = Corpus("bench", ids, titles, unit_vectors(n_docs, BASE_DIM, 5), lexical)
        first = registry.add(card("task-0"), corpus)  # loads the model: compiling encodes
        registry.encoder.queries(["load the query path before measuring"])
        gc.collect()
        before = rss_mib()
        for index in range(1, sizes.serve_tasks):
            registry.add(card(f"task-{index}"), corpus)
        gc.collect()
        extra_task_mib = (rss_mib() - before) / (sizes.serve_tasks - 1)
        searcher = first.searcher
        assert isinstance(searcher, RetrieverSearcher)
        search_index = RetrieverIndex(searcher.compiled, ids, corpus.vectors, lexical, encoder)
        with running_server(create_app(registry)) as url:
            connection = HTTPConnection(*local_address(url), timeout=60)
            turns = {side: itertools.count() for side in ("http", "service", "in_process")}

            def new_query(side: str) -> str:
                """The next query, made new for this side so that it is encoded."""
                return f"{queries[next(turns[side]) % len(queries)]} ({side})"

            def over_http() -> None:
                body = json.dumps({"query": new_query("http"), "k": 10})
                kind = {"Content-Type": "application/json"}
                connection.request("POST", "/tasks/task-0/search", body, kind)
                response = connection.getresponse()
                response.read()
                if response.status != 200:
                    raise RuntimeError(f"search answered {response.status}")

            times = _interleaved(
                {
                    "http": over_http,
                    "service": lambda: first.search([new_query("service")], 10),
                    "in_process": lambda: search_index.search(["q"], [new_query("in_process")], 10),
                },
                sizes.single_queries,
            )
            connection.close()
            load = run_load_test(
                url,
                ["task-0", "task-1"],
                card("task-put"),
                queries,
                clients=3,
                seconds=sizes.load_seconds,
                max_requests=sizes.load_requests,
            )
    figure: Figure = {
        "documents": n_docs,
        "tasks": sizes.serve_tasks,
        "corpus_mib": round(corpus.vectors.nbytes / 2**20, 1),
        "task_mib_accounted": round(first.searcher.nbytes / 2**20, 2),
        "extra_task_rss_mib": round(extra_task_mib, 1),
        "single_queries": sizes.single_queries,
    }
    for name, seconds in times.items():
        figure[f"{name}_p50_ms"] = round(float(np.percentile(seconds, 50)) * 1e3, 2)
        figure[f"{name}_p99_ms"] = round(float(np.percentile(seconds, 99)) * 1e3, 2)
    figure["http_vs_in_process_p50_ratio"] = round(
        figure["http_p50_ms"] / figure["in_process_p50_ms"], 2
    )
    figure.update({f"load_{key}": value for key, value in asdict(load).items()})
    return figure


def pipeline_figure(sizes: BenchSizes) -> Figure:
    """8. Wall time of a cold and a warm ``hydra run`` on one small task (a SciFact slice).

    Runs the real command in a throwaway project with its own empty cache and counts the
    texts each run encodes (new cache entries): the warm one must encode none.
    """
    if sizes.quick:
        return {"skipped": "--quick: a cold hydra run trains a hypernet (minutes)"}
    from hydra_core.data.cards import find_card, write_card
    from hydra_pipeline.artifacts import save_beir_folder

    task = load_task("beir/scifact").head(sizes.pipeline_docs, sizes.pipeline_queries)
    with scratch_dir() as root:
        save_beir_folder(task, root / "data" / "scifact")
        card = find_card("scifact", PROJECT_ROOT / "cards")
        write_card(
            card.model_copy(update={"source": "../data/scifact"}), root / "cards" / "scifact.yaml"
        )
        config = {
            "tasks": ["scifact"],
            "workspace": "workspace",
            "executor": {"kind": "in_process"},
            "training": {"train": {"epochs": 2, "steps_per_epoch": 8, "pairs_per_task": 32}},
        }
        (root / "hydra.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        env = {
            **os.environ,
            "HYDRA_CONFIG": str(root / "hydra.yaml"),
            "HYDRA_CARDS_DIR": str(root / "cards"),
            "HYDRA_WORKSPACE": str(root / "workspace"),
            "HYDRA_CACHE_DIR": str(root / "cache"),
            "DAGSTER_HOME": str(root / "dagster_home"),
        }
        cache = root / "cache" / "embeddings.sqlite"
        figure: Figure = {"documents": task.corpus.height, "task": "scifact slice"}
        cached = 0
        for name in ("cold", "warm"):
            seconds, launched, code = _hydra_run(env)
            now_cached = EmbeddingCache(cache).count() if cache.is_file() else 0
            figure[f"{name}_s"] = round(seconds, 1)
            figure[f"{name}_runs_launched"] = launched
            figure[f"{name}_texts_encoded"] = now_cached - cached
            figure[f"{name}_exit_code"] = code
            cached = now_cached
    return figure


def _hydra_run(env: dict[str, str]) -> tuple[float, int, int]:
    """Run ``hydra run``; return wall seconds, Dagster runs launched and the exit code.

    Texts encoded are counted by the caller from the cache: the encoder encodes only
    misses and stores each, so new cache entries are exactly the texts it encoded.
    """
    command = [sys.executable, "-c", "from hydra_pipeline.cli import main; main()", "run"]
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    launched = re.search(r"done in [\d.]+s: (\d+) runs", result.stderr)
    return seconds, int(launched.group(1)) if launched else 0, result.returncode


def quality_figure(tasks: Sequence[str] = ("scifact", "nfcorpus")) -> Figure:
    """NDCG@10 of the frozen base per backend and precision, on each task's full test split.

    Decides whether the fast backend may be the default: its difference from the torch
    path must stay within 0.002 everywhere. Uses the project's embedding cache (backends
    have distinct cache identities), so a second run is quick.
    """
    from hydra_core.data.cards import find_card
    from hydra_core.evaluation.methods import EVAL_SPLIT, load_card_task, score_ranking
    from hydra_core.ranking.teacher_ensemble import FUSED_DEPTH
    from hydra_core.ranking.teachers import DenseTeacher

    precision = default_precision()
    precisions: list[Precision] = ["fp32"] if precision == "fp32" else ["fp32", precision]
    configs: list[tuple[Backend, Precision]] = [(b, p) for p in precisions for b in BACKENDS]
    figure: Figure = {}
    for name in tasks:
        task: RetrievalTask = load_card_task(find_card(name, PROJECT_ROOT / "cards"))
        queries = task.split_queries(EVAL_SPLIT)
        scores: dict[str, float] = {}
        for backend, config_precision in configs:
            encoder = FrozenEncoder(backend=backend, precision=config_precision)
            index = DenseTeacher(encoder).index(task.corpus["doc_id"].to_list(), task.doc_texts())
            ranking = index.search(
                queries["query_id"].to_list(), queries["text"].to_list(), FUSED_DEPTH
            )
            scores[f"{backend}_{config_precision}"] = score_ranking(ranking, task)["ndcg@10"]
        figure[name] = {key: round(value, 5) for key, value in scores.items()}
    deltas = [
        abs(per_task[f"openvino_{p}"] - per_task[f"torch_{p}"])
        for per_task in figure.values()
        for p in precisions
    ]
    figure["max_abs_ndcg_difference"] = round(max(deltas), 5)
    figure["within_0.002"] = max(deltas) <= 0.002
    return figure


# ------------------------------------------------------------------------------ the suite


def retriever_figure(sizes: BenchSizes) -> Figure:
    """10. Queries/s of a compiled retriever (BM25 + head, fused, with feedback) searching
    SciFact's 5,183 documents for a batch of its queries, against bm25s' own batched search.

    Both sides start from query texts (tokenising is part of the work) and return a top 100;
    the retriever also gets the queries' base vectors (random stand-ins: the encoder's work
    is the same for any retriever and is measured by figure 1).
    """
    from hydra_core.model.compiled_retriever import CompiledRetriever
    from hydra_core.model.fusion_generator import DEFAULT_FUSION
    from hydra_core.model.retriever import RetrieverIndex
    from hydra_core.ranking.teachers import BM25Teacher

    task = load_task("beir/scifact")
    doc_ids, texts = task.corpus["doc_id"].to_list(), task.doc_texts()
    query_texts = task.queries["text"].to_list()[: sizes.batched_queries]
    query_ids = [str(i) for i in range(len(query_texts))]
    query_vectors = unit_vectors(len(query_texts), BASE_DIM, seed=5)
    lexical = BM25Teacher().index(doc_ids, texts)
    compiled = CompiledRetriever(random_head(), DEFAULT_FUSION)
    index = RetrieverIndex(compiled, doc_ids, unit_vectors(len(doc_ids), BASE_DIM, 6), lexical)

    def bm25() -> Any:
        tokens = lexical.tokenizer.tokenize(
            query_texts, update_vocab=False, return_as="string", show_progress=False
        )
        return lexical.retriever.retrieve(
            cast(list[list[str]], tokens), k=TOP_K, show_progress=False
        )

    times = _interleaved(
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
        for name, seconds in _interleaved(timed, 2).items()
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


def replicated_vectors(
    n_docs: int, base: np.ndarray, head: Any, flat: Any, block: int = 50_000
) -> np.ndarray:
    """``n_docs`` projected document vectors: ``base``'s real ones first, then normalised
    random mixtures of two of them (fixed seed), made a block at a time so that only the
    projected matrix and ``flat`` (which gets each block's base vectors) hold them all."""
    projected = np.empty((n_docs, head.out_dim), dtype=np.float32)
    rng = np.random.default_rng(0)
    for start in range(0, n_docs, block):
        stop = min(n_docs, start + block)
        real = base[start:stop]
        pairs = rng.integers(0, len(base), size=(stop - start - len(real), 2))
        share = rng.random((len(pairs), 1), dtype=np.float32)
        mixed = share * base[pairs[:, 0]] + (1 - share) * base[pairs[:, 1]]
        mixed /= np.linalg.norm(mixed, axis=1, keepdims=True)
        vectors = np.concatenate([real, mixed])
        flat.add(vectors)
        projected[start:stop] = head.apply(vectors)
    return projected


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


FIGURES: dict[str, Callable[[BenchSizes], Figure]] = {
    "encode": encode_figure,
    "cache": cache_figure,
    "compile": compile_figure,
    "project": project_figure,
    "search": search_figure,
    "new_task": new_task_figure,
    "pipeline": pipeline_figure,
    "retriever": retriever_figure,
    "serve": serve_figure,
    "ann": ann_figure,
}
ISOLATED = ("search", "new_task")
"""Figures run in a fresh process each, so that figure 7 attributes peak memory to them."""
TARGETS = "targets"
"""The results' key for what figures should be (``{figure: {measure: bound}}``), kept apart
from what they measured."""
MEMORY_TARGET_MIB = 1536
"""Figure 7's target: the peak memory of each of figure 5's and 6's processes, at most."""


def _measured(name: str, sizes: BenchSizes) -> Figure:
    figure = FIGURES[name](sizes)
    figure["peak_rss_mib"] = round(peak_rss_mib(), 1)
    return figure


def run_isolated(name: str, sizes: BenchSizes) -> Figure:
    """Run one figure in a fresh Python process and return it with that process' peak memory.

    A new interpreter (not a fork) starts from an empty memory high-water mark, so the
    peak is the figure's own; the child's stderr (progress, logs) goes to ours.
    """
    command = [sys.executable, "-m", "hydra_pipeline.benchmarks", name, json.dumps(asdict(sizes))]
    result = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"benchmark figure {name!r} failed (exit {result.returncode})")
    return json.loads(result.stdout.splitlines()[-1])


def run_suite(
    sizes: BenchSizes,
    only: Sequence[str] | None = None,
    *,
    quality: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Every figure (or those in ``only``) as ``{figure name: {measure: value}}``, and
    under ``targets`` the same shape for the measures that have a target.

    Asking for ``memory`` runs the figures whose memory it reports; ``quality`` (the
    backend comparison, also added by ``quality=True``) is no figure of the suite proper.
    """
    wanted = set(only or FIGURES)
    unknown = sorted(wanted - set(FIGURES) - {"memory", "quality"})
    if unknown:
        names = ", ".join([*FIGURES, "memory", "quality"])
        raise ValueError(f"unknown figures {unknown}; figures are {names}")
    if "memory" in wanted:
        wanted.update(ISOLATED)
    quality = quality or "quality" in wanted
    names = [name for name in FIGURES if name in wanted]
    results: dict[str, Any] = {
        "sizes": asdict(sizes),
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_average_before": round(os.getloadavg()[0], 2),
        },
    }
    for name in names:
        if progress is not None:
            progress(name)
        results[name] = run_isolated(name, sizes) if name in ISOLATED else FIGURES[name](sizes)
    isolated = [name for name in ISOLATED if name in results]
    if isolated:
        results["memory"] = {
            f"{name}_peak_rss_mib": results[name].pop("peak_rss_mib") for name in isolated
        } | {f"{name}_start_rss_mib": results[name].pop("start_rss_mib") for name in isolated}
        results[TARGETS] = {
            "memory": {f"{name}_peak_rss_mib": f"<= {MEMORY_TARGET_MIB}" for name in isolated}
        }
    if quality:
        if progress is not None:
            progress("quality")
        results["quality"] = quality_figure()
    results["machine"]["load_average_after"] = round(os.getloadavg()[0], 2)
    return results


def contention_warning(machine: dict[str, Any]) -> str | None:
    """A warning when the load average before the run exceeded the core count: other work
    then shares the cores, and it moves ratios too (side by side is fairer, not immune).
    The load after includes the benchmark's own threads, so it says little about others."""
    cpus = machine.get("cpus") or 1
    load = machine.get("load_average_before", 0.0)
    if load <= cpus:
        return None
    return (
        f"load average {load} is above the {cpus} cores: other work shared the machine, so "
        "these figures (ratios included) may be far from a quiet machine's; measure again "
        "when the load is under 1"
    )


def render_text(results: dict[str, Any]) -> str:
    """One ``figure.measure  measured  target`` line per measure, for people (``--json`` is
    for tools): what was measured, and in its own column what it should be."""
    targets = results.get(TARGETS, {})
    lines = [f"{'measure':<48} {'measured':<20} target"]
    for figure, values in results.items():
        if figure == TARGETS:
            continue
        for key, value in values.items():
            shown = json.dumps(value) if isinstance(value, dict | list | bool) else value
            target = targets.get(figure, {}).get(key, "")
            lines.append(f"{figure + '.' + key:<48} {shown!s:<20} {target}".rstrip())
    return "\n".join(lines)


if __name__ == "__main__":  # run_isolated's child: one figure, as one JSON line on stdout
    _figure, _sizes = sys.argv[1:3]
    print(json.dumps(_measured(_figure, BenchSizes(**json.loads(_sizes)))))
