"""Many tasks in one process: corpora shared between tasks, each task's retriever swappable.

``hydra serve`` fills a :class:`TaskRegistry` and puts the HTTP API of
:mod:`hydra_core.serving.http_api` in front of it. What a task costs is split in two, so that a new
task over an encoded corpus adds only what its card compiles into:

- a :class:`Corpus`, shared by every task whose card names the same source: document ids,
  titles, base embeddings and the BM25 index;
- a :class:`TaskSearcher`, what the card compiles into: its retriever (head and fusion) and
  the corpus projected through its head (:class:`RetrieverSearcher`), with an HNSW graph
  over them when the registry searches with ``index="hnsw"`` (built once per task and
  kept in the cache folder, as ``hydra search --index hnsw`` does); anything with
  ``search(texts, k)``.

A card put while the service runs is compiled aside and swapped in by one reference
assignment, so a request that already holds the old task finishes on it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import numpy as np

from hydra_core.data.cards import TaskCard, parse_card
from hydra_core.data.opened_task import OpenedTask
from hydra_core.encoding.embedding_cache import text_key
from hydra_core.encoding.encoder import FrozenEncoder
from hydra_core.errors import HydraInputError
from hydra_core.model.compiled_retriever import CompiledRetriever
from hydra_core.model.hypernet import Hypernet
from hydra_core.model.retriever import ConditionedRetriever, RetrieverIndex
from hydra_core.ranking.ann_index import IndexKind
from hydra_core.ranking.teachers import BM25Index, BM25Params


@dataclass(frozen=True, eq=False)
class Corpus:
    """One collection as every task over it sees it; row ``i`` of ``vectors`` embeds
    ``doc_ids[i]`` (base encoder, never projected)."""

    key: str
    doc_ids: list[str]
    titles: list[str]
    vectors: np.ndarray
    lexical: BM25Index

    def __post_init__(self) -> None:
        rows = len(self.doc_ids)
        if len(self.titles) != rows or self.vectors.ndim != 2 or self.vectors.shape[0] != rows:
            raise ValueError(
                f"corpus {self.key}: {rows} ids, {len(self.titles)} titles and vectors of "
                f"shape {self.vectors.shape} do not line up"
            )

    @property
    def size(self) -> int:
        return len(self.doc_ids)


def corpus_key(card: TaskCard) -> str:
    """The corpus a card searches: its source folder (resolved), or its ir-datasets id."""
    folder = card.resolved_source_dir()
    return str(folder) if folder is not None else card.source


class SourceNotEncodedError(HydraInputError):
    """A card whose documents the embedding cache does not hold (a request never encodes a
    whole corpus: that is the pipeline's job)."""


def card_corpus(card: TaskCard, encoder: FrozenEncoder, *, encode: bool) -> Corpus:
    """The corpus ``card`` names with its base embeddings: encoded where missing, or, with
    ``encode=False``, read from the embedding cache only."""
    opened = OpenedTask.of_card(card, encoder)
    texts = opened.doc_texts
    if encode:
        vectors = opened.doc_vectors
    else:
        keys = [text_key(text) for text in texts]
        vectors, found = encoder.cache.get_matrix(encoder.identity, "document", keys)
        if not found.all():
            raise SourceNotEncodedError(
                f"{int((~found).sum()):,} of {len(texts):,} documents of {card.source!r} are "
                f"not in the embedding cache of {encoder.identity}; encode them first (e.g. "
                "`hydra run` with this card in the task list)",
                field="source",
            )
    return Corpus(
        key=corpus_key(card),
        doc_ids=opened.doc_ids,
        titles=opened.task.corpus["title"].to_list(),
        vectors=vectors,
        lexical=opened.bm25(BM25Params()),
    )


class SharedEncoder:
    """The one frozen encoder every task uses, one caller at a time.

    Its tokenizer and lazily loaded model are not safe to share between threads, and a
    query encodes in milliseconds, so requests queue here and search in parallel. Queries
    stay out of the embedding cache (``store=False``).
    """

    def __init__(self, encoder: FrozenEncoder) -> None:
        self.encoder = encoder
        self._lock = threading.Lock()

    def queries(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            return self.encoder.encode(texts, "query", store=False)

    def compile(self, retriever: ConditionedRetriever, card: TaskCard) -> CompiledRetriever:
        """Compile ``card``: its texts go through the encoder, so under the same lock."""
        with self._lock:
            return retriever.compile(card)


class TaskSearcher(Protocol):
    """What a card compiles into, as the service uses it."""

    def search(self, query_texts: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """(queries x k) corpus rows and their scores, best first."""
        ...

    @property
    def nbytes(self) -> int:
        """Memory the task holds beyond its shared corpus."""
        ...


class RetrieverSearcher:
    """A compiled retriever over a shared corpus: only the projected documents (and their
    HNSW graph, with ``index="hnsw"``) are its own."""

    def __init__(
        self,
        compiled: CompiledRetriever,
        corpus: Corpus,
        encoder: SharedEncoder,
        index: IndexKind = "exact",
        cache_dir: Path | None = None,
    ) -> None:
        self.compiled = compiled
        self.encoder = encoder
        self.index = RetrieverIndex(
            compiled,
            corpus.doc_ids,
            corpus.vectors,
            corpus.lexical,
            index=index,
            cache_dir=cache_dir,
        )
        graph = self.index.approximate
        self.graph_bytes = 0 if graph is None else graph.path.stat().st_size
        """The graph's file, about its size in memory (vectors and links)."""

    def search(self, query_texts: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.index.top_k(query_texts, k, self.encoder.queries(query_texts))

    @property
    def nbytes(self) -> int:
        head = self.compiled.head
        own = 0 if head is None else head.num_parameters * head.weight.element_size()
        return own + (self.index.doc_vectors.nbytes if head is not None else 0) + self.graph_bytes


@dataclass(frozen=True)
class Hit:
    """One retrieved document."""

    doc_id: str
    score: float
    title: str


@dataclass(frozen=True, eq=False)
class ServedTask:
    """A task as served: its card, the corpus it shares, its searcher and their provenance."""

    card: TaskCard
    corpus: Corpus
    searcher: TaskSearcher
    checkpoint: str
    compiled_at: datetime

    def search(self, query_texts: Sequence[str], k: int) -> list[list[Hit]]:
        rows, scores = self.searcher.search(query_texts, k)
        ids, titles = self.corpus.doc_ids, self.corpus.titles
        return [
            [
                Hit(ids[row], float(score), titles[row])
                for row, score in zip(ranked, scored, strict=True)
            ]
            for ranked, scored in zip(rows.tolist(), scores.tolist(), strict=True)
        ]


class UnknownTaskError(LookupError):
    """A task name the service does not serve."""

    def __init__(self, name: str, served: Sequence[str]) -> None:
        super().__init__(f"unknown task {name!r}; served: {', '.join(served) or 'none'}")


class TaskRegistry:
    """Every served task by name. Reads take no lock; a change builds the new task aside
    and then replaces the whole mapping, so a reader sees the old task or the new one.

    ``index`` is how every task's dense channel is searched (``hnsw``: through a graph
    cached under ``cache_dir``, by default the settings' cache folder).
    """

    def __init__(
        self,
        encoder: FrozenEncoder,
        hypernet: Hypernet,
        checkpoint: str,
        cards_dir: Path,
        *,
        index: IndexKind = "exact",
        cache_dir: Path | None = None,
    ) -> None:
        self.encoder = SharedEncoder(encoder)
        self.retriever = ConditionedRetriever(hypernet, encoder)
        self.checkpoint = checkpoint
        self.cards_dir = cards_dir
        self.index: IndexKind = index
        self.cache_dir = cache_dir
        self._tasks: dict[str, ServedTask] = {}
        self._changes = threading.RLock()  # one change at a time; searches never wait on it

    def get(self, name: str) -> ServedTask:
        task = self._tasks.get(name)
        if task is None:
            raise UnknownTaskError(name, sorted(self._tasks))
        return task

    def tasks(self) -> list[ServedTask]:
        return sorted(self._tasks.values(), key=lambda task: task.card.name)

    def corpus(self, key: str) -> Corpus | None:
        """The corpus a served task already holds under ``key`` (to share, not load again)."""
        return next((t.corpus for t in self._tasks.values() if t.corpus.key == key), None)

    def add(
        self,
        card: TaskCard,
        corpus: Corpus,
        compiled: CompiledRetriever | None = None,
        *,
        checkpoint: str | None = None,
        compiled_at: datetime | None = None,
    ) -> ServedTask:
        """Serve ``card`` over ``corpus``, replacing a task of the same name: with ``compiled``
        as stored (by ``checkpoint`` at ``compiled_at``), else compiled now."""
        with self._changes:
            if compiled is None:
                compiled = self.encoder.compile(self.retriever, card)
                checkpoint, compiled_at = self.checkpoint, datetime.now(UTC)
            elif checkpoint is None or compiled_at is None:
                raise ValueError("a stored retriever needs the checkpoint and time it was compiled")
            task = ServedTask(
                card=card,
                corpus=corpus,
                searcher=RetrieverSearcher(
                    compiled, corpus, self.encoder, self.index, self.cache_dir
                ),
                checkpoint=checkpoint,
                compiled_at=compiled_at,
            )
            self._tasks = {**self._tasks, card.name: task}
        return task

    def put(self, name: str, raw: bytes) -> tuple[ServedTask, bool]:
        """Serve the card in ``raw`` (YAML or JSON) as task ``name``; also whether it is new.

        The card reads as if it were ``<cards folder>/<name>.yaml``, so a relative source
        means what it would in the cards folder; its corpus must be served already or be
        in the embedding cache.
        """
        card = parse_card(raw, self.cards_dir / f"{name}.yaml")
        if card.name != name:
            raise HydraInputError(
                f"the card is named {card.name!r} but was put as {name!r}", field="name"
            )
        with self._changes:
            corpus = self.corpus(corpus_key(card)) or self._cached_corpus(card)
            created = name not in self._tasks
            return self.add(card, corpus), created

    def _cached_corpus(self, card: TaskCard) -> Corpus:
        """The card's corpus from the embedding cache; a source that does not load is the
        card's ``source`` field's problem (the message names the file that failed)."""
        try:
            return card_corpus(card, self.encoder.encoder, encode=False)
        except SourceNotEncodedError:
            raise
        except HydraInputError as error:
            raise HydraInputError(str(error), field="source") from None
