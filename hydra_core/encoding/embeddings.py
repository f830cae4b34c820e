"""Vectors with the ids of their rows: what every encoder output and stored embedding is."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from hydra_core.data.fingerprints import array_digest


@dataclass(frozen=True, eq=False)
class Embeddings:
    """Vectors with the ids of their rows; row ``i`` of ``vectors`` embeds ``ids[i]``."""

    ids: list[str]
    vectors: np.ndarray

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2 or self.vectors.shape[0] != len(self.ids):
            raise ValueError(
                f"{len(self.ids)} ids need a ({len(self.ids)} x dim) array, "
                f"got shape {self.vectors.shape}"
            )

    @cached_property
    def digest(self) -> str:
        return array_digest(self.vectors, self.ids)

    @cached_property
    def _rows(self) -> dict[str, int]:
        return {row_id: i for i, row_id in enumerate(self.ids)}

    def select(self, ids: list[str]) -> np.ndarray:
        """The vectors of ``ids``, in that order; an unknown id is a KeyError naming it."""
        rows = self._rows
        missing = [row_id for row_id in ids if row_id not in rows]
        if missing:
            raise KeyError(f"no embedding for {len(missing)} ids, e.g. {missing[:3]}")
        return self.vectors[[rows[row_id] for row_id in ids]]

    def subset(self, ids: list[str]) -> Embeddings:
        """The embeddings of ``ids`` only, in that order."""
        return Embeddings(list(ids), self.select(ids))
