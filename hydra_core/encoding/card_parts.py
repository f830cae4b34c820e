"""A task card as frozen embeddings of its parts, what the hypernet reads.

The frozen base encoder embeds each part of the card: the four prose fields, the mean of
the example queries and the mean of the example documents. The hypernet's
:class:`~hydra_core.model.card_encoder.TaskCardEncoder` learns how to mix them.
"""

from __future__ import annotations

import numpy as np
import torch

from hydra_core.data.card_schema import TEXT_FIELDS
from hydra_core.data.cards import TaskCard
from hydra_core.encoding.encoder import FrozenEncoder

CARD_PARTS: tuple[str, ...] = (*TEXT_FIELDS, "example_queries", "example_documents")


def card_part_embeddings(card: TaskCard, encoder: FrozenEncoder) -> torch.Tensor:
    """(parts x dim) frozen embeddings of a card's parts, in :data:`CARD_PARTS` order."""
    prose = encoder.encode([card.text_fields()[field] for field in TEXT_FIELDS], "query")
    queries = encoder.encode(card.example_queries, "query").mean(axis=0, keepdims=True)
    documents = encoder.encode(card.example_documents, "document").mean(axis=0, keepdims=True)
    parts = np.concatenate([prose, queries, documents])
    parts /= np.linalg.norm(parts, axis=1, keepdims=True) + 1e-12
    return torch.from_numpy(parts.astype(np.float32))
