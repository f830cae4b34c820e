"""The names of the compared methods, in the order every table shows them, and the headline
metric: one spelling each, shared by the CLI tables, the pipeline, DuckDB and the report."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

HEADLINE_METRIC = "ndcg@10"
"""The metric that tables lead with, significance tests compare and robustness reports."""


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


METHOD_RANK: dict[str, int] = {method.value: rank for rank, method in enumerate(Method)}
"""Each method's place in tables; a name that is no :class:`Method` goes after them all."""


def in_table_order(methods: Iterable[str]) -> list[str]:
    """``methods`` in :class:`Method` order; other names after them, in the order given."""
    return sorted(methods, key=lambda method: METHOD_RANK.get(method, len(METHOD_RANK)))
