"""Approximate search over a task's projected documents: a faiss HNSW graph, built once.

Exact search costs one (queries x documents) matrix product, so a single query reads every
document vector: 15 ms at 100,000 and ~150 ms at 1,000,000 on a 2-core machine. An HNSW graph
(``IndexHNSWFlat``, inner product: projected vectors are unit length, so it is cosine) visits
a few thousand of them instead, and stores the vectors themselves, so the scores it returns
are exact cosines of the documents it finds; only which documents it finds is approximate.

Building the graph takes minutes at a million documents, so each is built once and kept in
the cache folder under a digest of the vectors it holds (they are a function of the task's
head and the corpus' embeddings, so the digest names both) and of its parameters; a second
process loads the file. Writes are atomic: a reader sees a whole graph or none.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast, get_args

import faiss
import numpy as np

from hydra_core.atomic import atomic_path
from hydra_core.data.fingerprints import array_digest, text_digest
from hydra_core.errors import HydraInputError

IndexKind = Literal["exact", "hnsw"]
INDEX_KINDS: tuple[IndexKind, ...] = get_args(IndexKind)

log = logging.getLogger(__name__)


def index_kind(value: str) -> IndexKind:
    """``value`` as an index kind; anything else is refused naming the choices."""
    if value not in INDEX_KINDS:
        raise HydraInputError(f"unknown index {value!r}: choose one of {', '.join(INDEX_KINDS)}")
    return cast(IndexKind, value)


@dataclass(frozen=True)
class HnswParameters:
    """The graph's degree (``m``), build beam (``ef_construction``) and search beam.

    Chosen on replicated SciFact vectors (mixtures of two real document embeddings through a
    head, 100,000 of them) and SciFact's train queries, never its test split: recall@100
    0.9978 against exact search at ~2 ms a query (docs/benchmarks.md, figure 11). At
    1,000,000 documents recall falls to 0.983; a larger ``ef_search`` buys it back.
    """

    m: int = 32
    ef_construction: int = 200
    ef_search: int = 512

    def name(self) -> str:
        return f"hnsw-m{self.m}-efc{self.ef_construction}"


DEFAULT_HNSW = HnswParameters()


class HnswIndex:
    """A faiss HNSW graph over unit vectors; :meth:`top_k` answers like ``exact_top_k``."""

    def __init__(
        self, index: faiss.IndexHNSWFlat, params: HnswParameters, path: Path, built: bool
    ) -> None:
        self.index = index
        self.params = params
        self.path = path
        """The cached file, about the size of the graph in memory (vectors and links)."""
        self.built = built
        """Whether this process built the graph (False: read from the cache)."""

    def top_k(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(queries x k) document rows and inner products, best first (``-inf``: none found).

        The search beam is at least ``k``, so a deep top-k is as complete as a shallow one.
        """
        k = min(k, self.index.ntotal)
        search = faiss.SearchParametersHNSW()  # pyright: ignore[reportAttributeAccessIssue]
        search.efSearch = max(self.params.ef_search, k)  # per call: safe from several threads
        matrix = np.ascontiguousarray(queries, dtype=np.float32)
        scores, rows = self.index.search(matrix, k, params=search)
        missing = rows < 0
        return np.where(missing, 0, rows), np.where(missing, -np.inf, scores).astype(np.float32)


def vectors_digest(vectors: np.ndarray, params: HnswParameters) -> str:
    """A digest of the vectors and of what the graph is built with: the cache key."""
    return text_digest(params.name(), array_digest(np.asarray(vectors, dtype=np.float32)))


def build_hnsw(vectors: np.ndarray, params: HnswParameters) -> faiss.IndexHNSWFlat:
    """A new graph over ``vectors`` (on all of faiss' threads)."""
    matrix = np.ascontiguousarray(vectors, dtype=np.float32)
    index = faiss.IndexHNSWFlat(matrix.shape[1], params.m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = params.ef_construction
    index.add(matrix)
    return index


def load_or_build_hnsw(
    vectors: np.ndarray, cache_dir: Path, params: HnswParameters = DEFAULT_HNSW
) -> HnswIndex:
    """The graph over ``vectors`` from ``cache_dir/ann``, built and stored there if absent.

    A stored file that faiss cannot read, or that holds other vectors' count or width, is
    rebuilt and replaced, as the embedding cache does with a bad entry. A folder that cannot
    take a new file (read-only, full) raises ``OSError`` naming the file, before the build
    when the folder is read-only.
    """
    path = cache_dir / "ann" / f"{params.name()}-{vectors_digest(vectors, params)}.faiss"
    if path.is_file():
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as error:
            log.warning("rebuilding unreadable ANN index %s (%s)", path, error)
        else:
            if isinstance(index, faiss.IndexHNSWFlat) and (index.ntotal, index.d) == tuple(
                vectors.shape
            ):
                return HnswIndex(index, params, path, built=False)
            log.warning("rebuilding ANN index %s: it holds other vectors", path)
    with atomic_path(path) as tmp:  # a folder that cannot take the file fails before the build
        started = time.perf_counter()
        index = build_hnsw(vectors, params)
        log.info(
            "built %s over %d vectors in %.1f s",
            params.name(),
            index.ntotal,
            time.perf_counter() - started,
        )
        faiss.write_index(index, str(tmp))
    return HnswIndex(index, params, path, built=True)
