"""CompiledRetriever: what a card compiles into, as one file.

A dense head over the frozen base embeddings (``None``: the base's own space) plus the
fusion parameters that mix it with the task's BM25 channel (see
:mod:`hydra_core.model.score_fusion`). Saved as one safetensors file: the head's tensors, and the
fusion parameters as JSON metadata, so the artifact holds the whole retriever; the BM25
index and the document embeddings belong to the corpus, not to the task.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from hydra_core.atomic import save_tensors_atomic
from hydra_core.errors import HydraInputError
from hydra_core.model.head import ProjectionHead, read_safetensors
from hydra_core.model.score_fusion import FusionParameters

FORMAT = "hydra-retriever/1"
DENSE_ONLY = FusionParameters(lexical_weight=0.0)

HYBRID_FUSION = FusionParameters(lexical_weight=0.4)
"""The fixed blend of BM25 and the frozen base (the ``hybrid`` row): one weight for every
task, chosen on validation queries of the training tasks (SciFact's held-out fifth of
train, NFCorpus dev: NDCG@10 0.7204 / 0.3371 at 0.4, against 0.7208 / 0.3366 at 0.3 and
0.7163 / 0.3368 at 0.5); no feedback."""


@dataclass(frozen=True)
class CompiledRetriever:
    """A dense head (``None``: the base's own space) and how to fuse it with BM25."""

    head: ProjectionHead | None
    fusion: FusionParameters
    task: str = ""
    labelled_queries: int = 0
    """How many judged queries fitted it (``hydra adapt``); 0 for one compiled from a card."""

    def dense_only(self) -> CompiledRetriever:
        """The same head without the lexical channel or feedback (``hydra-dense``)."""
        return replace(self, fusion=DENSE_ONLY)

    def with_head(self, head: ProjectionHead) -> CompiledRetriever:
        return replace(self, head=head)

    def save(self, path: Path | str) -> None:
        """One safetensors file: the head's tensors, the fusion parameters as metadata."""
        tensors = {} if self.head is None else self.head.tensors()
        metadata = {
            "format": FORMAT,
            "task": self.task,
            "fusion": json.dumps(self.fusion.to_dict(), sort_keys=True),
            "labelled_queries": str(self.labelled_queries),
        }
        save_tensors_atomic(path, tensors, metadata)

    @classmethod
    def load(cls, path: Path | str) -> CompiledRetriever:
        """Read a file written by :meth:`save`; anything else is refused naming the file."""
        path = Path(path)
        tensors, metadata = read_safetensors(path, "retriever file")
        if metadata.get("format") != FORMAT:
            raise HydraInputError(f"not a Hydra retriever (format != {FORMAT})", path=path)
        try:
            fusion = FusionParameters.from_dict(json.loads(metadata.get("fusion", "")))
        except (json.JSONDecodeError, HydraInputError) as error:
            raise HydraInputError(f"bad fusion metadata: {error}", path=path) from None
        labelled = metadata.get("labelled_queries", "0")
        if not labelled.isdigit():
            raise HydraInputError(f"bad labelled_queries metadata {labelled!r}", path=path)
        task = metadata.get("task", "")
        head = ProjectionHead.from_tensors(tensors, task=task, path=path) if tensors else None
        return cls(head=head, fusion=fusion, task=task, labelled_queries=int(labelled))
