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
assignment, so a request that already holds the old task finishes on it. A card put with
``labels`` is served as compiled at once, then adapted to its labels in the background
(:mod:`hydra_core.serving.fit_queue`) and swapped again when the fit is done, unless the
task was replaced or deleted meanwhile. What a change may
do is a :class:`ChangePolicy`: the folders a card's corpus may come from, the number of
tasks, whether the pipeline's own tasks may be replaced or deleted.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property, partial
from pathlib import Path
from typing import Protocol

import numpy as np
import polars as pl

from hydra_core.data.beir_folder import load_beir_folder
from hydra_core.data.cards import TaskCard, parse_card
from hydra_core.data.ir_datasets_source import dataset_name
from hydra_core.data.opened_task import OpenedTask, load_card_task
from hydra_core.data.retrieval_task import RetrievalTask
from hydra_core.encoding.embedding_cache import text_key
from hydra_core.encoding.encoder import FrozenEncoder
from hydra_core.errors import HydraInputError
from hydra_core.evaluation.adaptation import adapt, judged_queries
from hydra_core.model.compiled_retriever import CompiledRetriever
from hydra_core.model.hypernet import Hypernet
from hydra_core.model.retriever import ConditionedRetriever, RetrieverIndex
from hydra_core.model.task_profile import CorpusSample, task_profile
from hydra_core.ranking.ann_index import IndexKind
from hydra_core.ranking.teachers import BM25Index, BM25Params
from hydra_core.serving.fit_queue import FitQueue
from hydra_core.training.training_data import label_split


@dataclass(frozen=True, eq=False)
class Corpus:
    """One collection as every task over it sees it; row ``i`` of ``vectors`` embeds
    ``doc_ids[i]`` (base encoder, never projected); ``sample`` is what a card compiled
    later profiles it with (a few hundred texts, not all of them)."""

    key: str
    doc_ids: list[str]
    titles: list[str]
    vectors: np.ndarray
    lexical: BM25Index
    sample: CorpusSample

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


def card_corpus(
    card: TaskCard, encoder: FrozenEncoder, *, encode: bool, folder: Path | None = None
) -> Corpus:
    """The corpus ``card`` names with its base embeddings: encoded where missing, or, with
    ``encode=False``, read from the embedding cache only; read from ``folder`` when given
    (the one a request may read), else wherever the card's source leads."""
    task = load_card_task(card) if folder is None else load_beir_folder(folder, name=card.name)
    opened = OpenedTask(task, encoder)
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
        sample=CorpusSample.of(texts),
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

    def compile(
        self, retriever: ConditionedRetriever, card: TaskCard, corpus: Corpus
    ) -> CompiledRetriever:
        """Compile ``card`` for ``corpus`` (profiled when the gate reads profiles): its
        texts and the profile's probes go through the encoder, so under the same lock."""
        with self._lock:
            if not retriever.reads_profiles:
                return retriever.compile(card)
            profile = task_profile(
                card.example_queries, corpus.sample, corpus.vectors, corpus.lexical, self.encoder
            )
            return retriever.compile(card, profile)


class TaskSearcher(Protocol):
    """What a card compiles into, as the service uses it."""

    def search(self, query_texts: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """(queries x k) corpus rows and their scores, best first."""
        ...

    @property
    def nbytes(self) -> int:
        """Memory the task holds beyond its shared corpus."""
        ...

    @property
    def graph_path(self) -> Path | None:
        """The file of its HNSW graph in the cache folder, if it has one."""
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
    def graph_path(self) -> Path | None:
        graph = self.index.approximate
        return None if graph is None else graph.path

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
    """A task as served: its card, the corpus it shares, its searcher and their provenance
    (``labelled_queries``: how many judged queries its retriever was adapted on; 0: as
    compiled)."""

    card: TaskCard
    corpus: Corpus
    searcher: TaskSearcher
    checkpoint: str
    compiled_at: datetime
    labelled_queries: int = 0

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


class ChangeRefusedError(Exception):
    """A PUT or DELETE the service's policy refuses as things stand (HTTP 409)."""


UNREADABLE_SOURCE = (
    "not a corpus this service may read: give a BEIR folder under its data roots "
    "(relative to the cards folder, or absolute), or the source of a served task"
)
"""The one answer to every source a request may not read, whatever the reason (outside the
data roots, missing, a file, an id with no local copy), so it tells nothing about the
server's files."""


@dataclass(frozen=True)
class ChangePolicy:
    """What a PUT or DELETE may do.

    ``data_roots``: the folders (and everything under them) a card's corpus may be read
    from; none means only corpora already served. ``max_tasks`` bounds the memory PUTs can
    take. The tasks the service started with (the pipeline's) are neither replaced nor
    deleted unless ``replace_pipeline_tasks``.
    """

    data_roots: tuple[Path, ...] = ()
    max_tasks: int = 32
    replace_pipeline_tasks: bool = False

    def readable_folder(self, card: TaskCard) -> Path:
        """The folder under a data root that ``card``'s source names (an id names its
        local copy, as ``load_task`` looks it up; nothing is ever downloaded)."""
        folder = card.resolved_source_dir()
        roots = [root.resolve() for root in self.data_roots]
        candidates = (
            [folder] if folder is not None else [root / dataset_name(card.source) for root in roots]
        )
        for candidate in candidates:
            real = candidate.resolve()
            if any(real.is_relative_to(root) for root in roots) and real.is_dir():
                return real
        raise HydraInputError(UNREADABLE_SOURCE, field="source")

    def shown(self, error: HydraInputError) -> HydraInputError:
        """``error`` of a source under a data root, with the file named from its root."""
        where = ""
        if error.path is not None:
            path = error.path.resolve()
            root = next((r for r in self.data_roots if path.is_relative_to(r.resolve())), None)
            where = f"{path.relative_to(root.resolve())}" if root is not None else "?"
            where += f":{error.line}: " if error.line is not None else ": "
        return HydraInputError(where + error.problem, field="source")


class TaskRegistry:
    """Every served task by name. Reads take no lock; a change builds the new task aside
    and then replaces the whole mapping, so a reader sees the old task or the new one.

    ``index`` is how every task's dense channel is searched (``hnsw``: through a graph
    cached under ``cache_dir``, by default the settings' cache folder). Tasks added with
    :meth:`add` are the pipeline's; :meth:`put` and :meth:`delete` follow ``policy``.
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
        policy: ChangePolicy | None = None,
    ) -> None:
        self.encoder = SharedEncoder(encoder)
        self.retriever = ConditionedRetriever(hypernet, encoder)
        self.checkpoint = checkpoint
        self.cards_dir = cards_dir
        self.index: IndexKind = index
        self.cache_dir = cache_dir
        self.policy = policy or ChangePolicy()
        self._tasks: Mapping[str, ServedTask] = {}
        self._pipeline: set[str] = set()
        self._changes = threading.Lock()  # held only to check and swap, never to build
        self.fits = FitQueue()

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
        """Serve ``card`` over ``corpus`` as one of the pipeline's tasks, replacing a task
        of the same name: with ``compiled`` as stored (by ``checkpoint`` at
        ``compiled_at``), else compiled now."""
        stored = None
        if compiled is not None:
            if checkpoint is None or compiled_at is None:
                raise ValueError("a stored retriever needs the checkpoint and time it was compiled")
            stored = (compiled, checkpoint, compiled_at)
        task = self._build(card, corpus, stored)
        with self._changes:
            self._swap(card.name, task)
            self._pipeline.add(card.name)
        return task

    def _build(
        self,
        card: TaskCard,
        corpus: Corpus,
        stored: tuple[CompiledRetriever, str, datetime] | None = None,
    ) -> ServedTask:
        """The task ``card`` compiles into (or ``stored``: a retriever, the checkpoint that
        compiled it and when), not yet served: compiling and an HNSW graph take time, so no
        lock of the registry is held."""
        if stored is None:
            stored = (
                self.encoder.compile(self.retriever, card, corpus),
                self.checkpoint,
                datetime.now(UTC),
            )
        compiled, checkpoint, compiled_at = stored
        searcher = RetrieverSearcher(compiled, corpus, self.encoder, self.index, self.cache_dir)
        return ServedTask(
            card, corpus, searcher, checkpoint, compiled_at, compiled.labelled_queries
        )

    def _swap(self, name: str, task: ServedTask | None) -> None:
        """Serve ``task`` as ``name`` (None: stop serving it), under ``_changes``; a graph
        no served task uses any more leaves the cache folder."""
        old = self._tasks.get(name)
        tasks = {**self._tasks, name: task} if task is not None else dict(self._tasks)
        if task is None:
            tasks.pop(name, None)
        self._tasks = tasks
        graph = None if old is None else old.searcher.graph_path
        if graph is not None and all(t.searcher.graph_path != graph for t in tasks.values()):
            graph.unlink(missing_ok=True)

    def _may_change(self, name: str, *, adds: bool) -> None:
        """Refuse a change of a pipeline task (unless the policy allows it) or one more task
        than the policy's maximum."""
        if name in self._pipeline and not self.policy.replace_pipeline_tasks:
            raise ChangeRefusedError(
                f"task {name!r} comes from the pipeline and cannot be replaced or deleted "
                "(start hydra serve with --replace-pipeline-tasks to allow it)"
            )
        if adds and name not in self._tasks and len(self._tasks) >= self.policy.max_tasks:
            raise ChangeRefusedError(
                f"the service holds its maximum of {self.policy.max_tasks} tasks; DELETE one first"
            )

    def put(self, name: str, raw: bytes) -> tuple[ServedTask, bool]:
        """Serve the card in ``raw`` (YAML or JSON) as task ``name``; also whether it is new.

        The card reads as if it were ``<cards folder>/<name>.yaml``, so a relative source
        means what it would in the cards folder; its corpus must be served already, or be a
        folder under the policy's data roots whose documents the embedding cache holds.
        A card with ``labels`` (a split of that folder with judged queries) is served as
        compiled and queued to be adapted to them (see :meth:`_adapt`).
        """
        try:
            card = parse_card(raw, self.cards_dir / f"{name}.yaml")
        except HydraInputError as error:  # the card's own check of its source looks at disk
            if error.field != "source":
                raise
            raise HydraInputError(UNREADABLE_SOURCE, field="source") from None
        if card.name != name:
            raise HydraInputError(
                f"the card is named {card.name!r} but was put as {name!r}", field="name"
            )
        self._may_change(name, adds=True)  # refused before any work
        labelled = self._labelled_task(card)
        corpus = self.corpus(corpus_key(card)) or self._cached_corpus(card)
        compiled = self.encoder.compile(self.retriever, card, corpus)
        task = self._build(card, corpus, (compiled, self.checkpoint, datetime.now(UTC)))
        with self._changes:
            self._may_change(name, adds=True)  # another request may have changed things
            created = name not in self._tasks
            self._swap(name, task)
            if labelled is None:
                self.fits.cancel(name)
            else:
                self.fits.submit(name, partial(self._adapt, task, compiled, labelled))
        return task, created

    def delete(self, name: str) -> None:
        """Stop serving ``name``: its memory is freed once the searches that hold it end,
        and its HNSW graph file is removed unless another task uses it."""
        with self._changes:
            self.get(name)
            self._may_change(name, adds=False)
            self._swap(name, None)
            self._pipeline.discard(name)
            self.fits.cancel(name)

    def _labelled_task(self, card: TaskCard) -> tuple[RetrievalTask, pl.DataFrame] | None:
        """The task of a card with ``labels``, read from its folder under the data roots,
        and the qrels of that split, which must judge some query relevant (checked before
        any work); None without labels."""
        if card.labels is None:
            return None
        folder = self.policy.readable_folder(card)
        try:
            task = load_beir_folder(folder, name=card.name)
        except HydraInputError as error:
            raise self.policy.shown(error) from None
        label_split(card, task)  # a split the folder has, or the field's error
        qrels = task.split_qrels(card.labels)
        if not judged_queries(qrels):
            raise HydraInputError(
                f"labels: the {card.labels!r} split has no query with a relevant document",
                field="labels",
            )
        return task, qrels

    @cached_property
    def _fit_encoder(self) -> FrozenEncoder:
        """The fits' own copy of the encoder (same model and cache): a fit encodes for
        seconds, and searches must not queue behind it on the shared one's lock."""
        shared = self.encoder.encoder
        return FrozenEncoder(
            shared.model_name,
            cache=shared.cache,
            precision=shared.precision,
            backend=shared.backend,
            show_progress=False,
        )

    def _adapt(
        self,
        started: ServedTask,
        compiled: CompiledRetriever,
        labelled: tuple[RetrievalTask, pl.DataFrame],
    ) -> None:
        """Fit ``compiled`` to the judgments of ``labelled`` (a task and its qrels), then serve it
        in place of ``started``, if that is still what its name serves (a task replaced or
        deleted meanwhile leaves the fit's result unused). Run by :attr:`fits`."""
        card, corpus = started.card, started.corpus
        task, qrels = labelled
        vectors = corpus.vectors if corpus.doc_ids == task.corpus["doc_id"].to_list() else None
        opened = OpenedTask(task, self._fit_encoder, doc_vectors=vectors)
        adapted = adapt(compiled, card, opened, self._fit_encoder, qrels)
        served = self._build(card, corpus, (adapted, started.checkpoint, datetime.now(UTC)))
        with self._changes:
            if self._tasks.get(card.name) is started:
                self._swap(card.name, served)

    def _cached_corpus(self, card: TaskCard) -> Corpus:
        """The card's corpus from a folder under the data roots and the embedding cache; a
        source that does not load is the card's ``source`` field's problem, its file named
        from its data root."""
        folder = self.policy.readable_folder(card)
        try:
            return card_corpus(card, self.encoder.encoder, encode=False, folder=folder)
        except SourceNotEncodedError:
            raise
        except HydraInputError as error:
            raise self.policy.shown(error) from None
