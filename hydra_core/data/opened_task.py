"""An opened task: a card's data with what searching it needs, each part built once.

Evaluation, training, the CLI, the service and the benchmarks all search a task's corpus
with its base document vectors and a BM25 index. :class:`OpenedTask` holds both, built on
first use and kept, so no caller puts them together by hand and a second BM25 parameter set
(learned fusion) is one more cached index rather than one more code path. It lives in
``data`` and knows the encoder and the index only by their shape (:class:`DocumentEncoder`,
:class:`IndexRecipe`), so this layer imports nothing above it.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from functools import cached_property
from typing import Literal, Protocol, TypeVar, cast

import numpy as np
import polars as pl

from hydra_core.data.cards import TaskCard
from hydra_core.data.retrieval_task import QUERIES_SCHEMA, RetrievalTask
from hydra_core.data.tasks import load_task

IndexT = TypeVar("IndexT", covariant=True)


class DocumentEncoder(Protocol):
    """What encodes a corpus: the frozen base (``FrozenEncoder``) is one."""

    def encode(self, texts: Sequence[str], role: Literal["document"]) -> np.ndarray: ...


class IndexRecipe(Hashable, Protocol[IndexT]):
    """Settings that build an index over a corpus (``BM25Params`` is one); equal settings
    share one index."""

    def index(self, doc_ids: Sequence[str], doc_texts: Sequence[str]) -> IndexT: ...


def load_card_task(card: TaskCard) -> RetrievalTask:
    """The task a card describes; relative folder sources resolve against the card file."""
    base_dir = card.card_path.parent if card.card_path is not None else None
    return load_task(card.source, base_dir=base_dir, name=card.name)


def corpus_task(corpus: pl.DataFrame) -> RetrievalTask:
    """A task holding only a corpus, for what needs only its documents (their vectors, a
    served corpus)."""
    return RetrievalTask(
        name="", source="", corpus=corpus, queries=pl.DataFrame(schema=QUERIES_SCHEMA), qrels={}
    )


class OpenedTask:
    """One task's corpus, its base document vectors and its BM25 indexes, built lazily."""

    def __init__(
        self,
        task: RetrievalTask,
        encoder: DocumentEncoder | None = None,
        *,
        doc_vectors: np.ndarray | None = None,
    ) -> None:
        """``doc_vectors`` (rows in corpus order) are given when stored, e.g. by the
        pipeline; otherwise the encoder computes them on first use (a task opened without
        either, e.g. for BM25 alone, has none)."""
        self.task = task
        self.encoder = encoder
        self._doc_vectors = doc_vectors
        self._indexes: dict[Hashable, object] = {}

    @classmethod
    def of_card(cls, card: TaskCard, encoder: DocumentEncoder) -> OpenedTask:
        """The task ``card`` describes, read from its source."""
        return cls(load_card_task(card), encoder)

    def with_task(self, task: RetrievalTask) -> OpenedTask:
        """The same corpus with other queries (e.g. perturbed ones): ``task`` must have this
        corpus; the vectors and indexes built so far are shared, not rebuilt."""
        other = OpenedTask(task, self.encoder, doc_vectors=self._doc_vectors)
        other._indexes = self._indexes
        return other

    @property
    def name(self) -> str:
        return self.task.name

    @cached_property
    def doc_ids(self) -> list[str]:
        return self.task.corpus["doc_id"].to_list()

    @cached_property
    def doc_texts(self) -> list[str]:
        return self.task.doc_texts()

    @property
    def doc_vectors(self) -> np.ndarray:
        """Base embeddings of the documents (title + text), in corpus order."""
        if self._doc_vectors is None:
            if self.encoder is None:
                raise ValueError(f"task {self.name!r} was opened without an encoder or vectors")
            self._doc_vectors = self.encoder.encode(self.doc_texts, "document")
        return self._doc_vectors

    def bm25(self, params: IndexRecipe[IndexT]) -> IndexT:
        """The corpus' index for ``params`` (e.g. ``BM25Params(b=0.5)``), built once."""
        if params not in self._indexes:
            self._indexes[params] = params.index(self.doc_ids, self.doc_texts)
        return cast(IndexT, self._indexes[params])
