"""What the figures measure on: suite sizes, real texts, synthetic vectors, heads.

Shared with the tests, which use the same stand-ins (random heads, an untrained hypernet
of the real architecture) where only cost matters, not quality.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hydra_core.data.tasks import load_task
from hydra_core.encoding.embedding_cache import EmbeddingCache, text_key
from hydra_core.encoding.encoder import (
    DEFAULT_MODEL,
)

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
