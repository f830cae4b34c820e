"""TaskProfile: label-free statistics of a task that tell its two channels apart.

What a user supplies at compile time says more about the right fusion than the card's
prose does: how well the frozen encoder reads the text (a language or a script it does not
know falls apart into word pieces), how long the example queries are (long need statements
favour BM25, short ones the encoder), how long the documents are, and how each channel
fares on a known-item probe built from the corpus itself (a span of an example query's
length cut from a document must find that document). None of it needs a label; the probe
reads the corpus' cached vectors and its BM25 index, so a profile is computed once per
corpus and card and kept beside the compiled retriever.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from hydra_core.data.cards import TaskCard
from hydra_core.data.opened_task import OpenedTask
from hydra_core.encoding.encoder import FrozenEncoder
from hydra_core.errors import HydraInputError
from hydra_core.ranking.teachers import BM25Index, BM25Params

PROFILE_FEATURES = (
    "pieces_per_word",
    "log_query_words",
    "log_doc_words",
    "probe_dense",
    "probe_bm25",
)
SAMPLE_DOCS = 300
"""Documents read for the text statistics (a fixed, seeded sample)."""
PROBES = 100
"""Known-item probes per task: enough to tell a channel that reads the text from one that
does not (their reciprocal ranks differ by 0.3 to 0.9), cheap enough for a compile."""
PROBE_DEPTH = 10


@dataclass(frozen=True)
class TaskProfile:
    """The :data:`PROFILE_FEATURES` of one task (see the module docstring)."""

    pieces_per_word: float
    log_query_words: float
    log_doc_words: float
    probe_dense: float
    probe_bm25: float

    def vector(self) -> np.ndarray:
        return np.array([getattr(self, name) for name in PROFILE_FEATURES], dtype=np.float64)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, object]) -> TaskProfile:
        """A stored profile; a missing or non-numeric feature is a clear error."""
        try:
            return cls(**{name: float(values[name]) for name in PROFILE_FEATURES})  # type: ignore[arg-type]
        except (KeyError, TypeError, ValueError) as error:
            raise HydraInputError(f"bad task profile ({error!r})") from None


@dataclass(frozen=True)
class CorpusSample:
    """The documents a profile reads (:data:`SAMPLE_DOCS`, a seeded sample): their rows in
    the corpus and their texts, so a service keeps these, not every text, to profile cards
    compiled later."""

    rows: tuple[int, ...]
    texts: tuple[str, ...]

    @classmethod
    def of(cls, doc_texts: Sequence[str], *, seed: int = 0) -> CorpusSample:
        if not doc_texts:
            raise HydraInputError("a task profile needs at least one document")
        rng = random.Random(seed)
        rows = sorted(rng.sample(range(len(doc_texts)), min(SAMPLE_DOCS, len(doc_texts))))
        return cls(tuple(rows), tuple(doc_texts[row] for row in rows))


def task_profile(
    example_queries: Sequence[str],
    sample: CorpusSample,
    doc_vectors: np.ndarray,
    lexical: BM25Index,
    encoder: FrozenEncoder,
    *,
    seed: int = 0,
) -> TaskProfile:
    """The profile of a corpus (a sample of its texts, its base vectors and BM25 index)
    searched with queries like ``example_queries``."""
    rng = random.Random(seed)
    words = [text.split() for text in sample.texts]
    n_words = max(sum(len(text) for text in words), 1)
    tokenizer = encoder.tokenizer
    pieces = sum(len(tokenizer.tokenize(text)) for text in sample.texts)
    query_words = float(np.mean([len(query.split()) for query in example_queries]))
    span = int(min(max(round(query_words), 3), 30))
    long_enough = zip(sample.rows, words, strict=True)
    probed = [(row, text) for row, text in long_enough if len(text) >= span + 2][:PROBES]
    probe_rows = [row for row, _ in probed]
    probes = []
    for _, text in probed:
        start = rng.randrange(len(text) - span + 1)
        probes.append(" ".join(text[start : start + span]))
    dense, bm25 = 0.0, 0.0
    if probes:
        dense_scores = encoder.encode(probes, "query") @ doc_vectors.T
        dense = _known_item_mrr(dense_scores, probe_rows)
        bm25 = _known_item_mrr(lexical.scores(probes), probe_rows)
    return TaskProfile(
        pieces_per_word=pieces / n_words,
        log_query_words=math.log(max(query_words, 1.0)),
        log_doc_words=math.log(max(n_words / len(sample.texts), 1.0)),
        probe_dense=dense,
        probe_bm25=bm25,
    )


def card_task_profile(card: TaskCard, opened: OpenedTask, encoder: FrozenEncoder) -> TaskProfile:
    """The profile of ``opened``'s corpus searched with queries like ``card``'s examples."""
    return task_profile(
        card.example_queries,
        CorpusSample.of(opened.doc_texts),
        opened.doc_vectors,
        opened.bm25(BM25Params()),
        encoder,
    )


def _known_item_mrr(scores: np.ndarray, targets: Sequence[int]) -> float:
    """MRR@10 of each probe's own document (ties count against it)."""
    ranks = [(scores[row] >= scores[row, target]).sum() for row, target in enumerate(targets)]
    return float(np.mean([1.0 / rank if rank <= PROBE_DEPTH else 0.0 for rank in ranks]))
