"""The names of the compared methods, in the order every table shows them, and the headline
metric: one spelling each, shared by the CLI tables, the pipeline, DuckDB and the report."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

HEADLINE_METRIC = "ndcg@10"
"""The metric that tables lead with, significance tests compare and robustness reports."""
DIGITS = 4
"""Decimals tables and metadata show: metric differences below that are noise."""


class Method(StrEnum):
    """A row of a results table. References first, then what a card compiles into, then the
    rows that use labels, then the same rows for tasks known only by their card."""

    BM25 = "bm25"
    BASE = "base"
    TEACHER = "teacher"
    HYBRID = "hybrid"
    HYDRA = "hydra"
    HYDRA_DENSE = "hydra-dense"
    HYDRA_GENERIC = "hydra-generic"
    HYDRA_SHUFFLED = "hydra-shuffled"
    HYDRA_REFINED = "hydra-refined"
    HYDRA_LABELS = "hydra+labels"
    SUPERVISED_HEAD = "supervised-head"
    HYDRA_UNSEEN = "hydra-unseen"
    HYDRA_UNSEEN_DENSE = "hydra-unseen-dense"
    HYDRA_UNSEEN_GENERIC = "hydra-unseen-generic"
    HYDRA_UNSEEN_SHUFFLED = "hydra-unseen-shuffled"
    HYDRA_UNSEEN_REFINED = "hydra-unseen-refined"
    ORACLE = "oracle"
    """The best fusion grid point chosen on the test split itself: a ceiling, not a result."""


GLOSSARY: dict[Method, str] = {
    Method.BM25: "BM25 over the corpus' words; no model.",
    Method.BASE: "the frozen base encoder alone: cosine of query and document embeddings.",
    Method.TEACHER: "Reciprocal Rank Fusion of bm25 and base: the rankings training distils.",
    Method.HYBRID: "bm25 and base mixed at one fixed lexical weight (0.4) for every task; "
    "no head, no feedback.",
    Method.HYDRA: "the card's compiled retriever: generated head, BM25 channel and the "
    "fusion the card compiles to.",
    Method.HYDRA_DENSE: "hydra's generated head alone, without BM25.",
    Method.HYDRA_GENERIC: "hydra compiled from a card that says nothing: what the card's "
    "words add.",
    Method.HYDRA_SHUFFLED: "hydra compiled from another task's card: whether the right card "
    "matters.",
    Method.HYDRA_REFINED: "hydra's head polished by distillation on queries generated from "
    "the task's corpus (no labels).",
    Method.HYDRA_LABELS: "hydra from a hypernet also trained on the labels the cards declare.",
    Method.SUPERVISED_HEAD: "one head fitted on this task's own labels: what a per-task "
    "fine-tune reaches.",
    Method.HYDRA_UNSEEN: "hydra from a hypernet trained without this task (leave-one-task-"
    "out): the task known only by its card.",
    Method.HYDRA_UNSEEN_DENSE: "hydra-unseen's head alone, without BM25.",
    Method.HYDRA_UNSEEN_GENERIC: "hydra-unseen compiled from a card that says nothing.",
    Method.HYDRA_UNSEEN_SHUFFLED: "hydra-unseen compiled from another task's card.",
    Method.HYDRA_UNSEEN_REFINED: "hydra-unseen's head polished on queries generated from the "
    "task's corpus.",
    Method.ORACLE: "the best fusion grid point chosen on the test split itself: a ceiling, "
    "not a result.",
}
"""One line per method: what the row is (the report's glossary), written once here."""

METHOD_RANK: dict[str, int] = {method.value: rank for rank, method in enumerate(Method)}
"""Each method's place in tables; a name that is no :class:`Method` goes after them all."""


def in_table_order(methods: Iterable[str]) -> list[str]:
    """``methods`` in :class:`Method` order; other names after them, in the order given."""
    return sorted(methods, key=lambda method: METHOD_RANK.get(method, len(METHOD_RANK)))
