"""TaskCardEncoder: a task card as one conditioning vector for the head generator.

The frozen base encoder embeds each part of the card: the four prose fields, the mean of
the example queries and the mean of the example documents. A small learned layer maps
each part into the conditioning space and mixes the parts, so the hypernet can learn
which parts of a card tell tasks apart.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from hydra_core.data.cards import TEXT_FIELDS, TaskCard
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


class TaskCardEncoder(nn.Module):
    """(batch x parts x in_dim) card part embeddings -> (batch x out_dim) conditioning."""

    def __init__(self, in_dim: int = 384, out_dim: int = 128, num_parts: int = len(CARD_PARTS)):
        super().__init__()
        self.config = {"in_dim": in_dim, "out_dim": out_dim, "num_parts": num_parts}
        self.part_projection = nn.Linear(in_dim, out_dim)
        self.mix = nn.Linear(num_parts * out_dim, out_dim)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, parts: torch.Tensor) -> torch.Tensor:
        """Unit-norm conditioning, so a generating layer's step size does not grow with width."""
        projected = torch.tanh(self.part_projection(parts))
        mixed = self.norm(self.mix(projected.flatten(start_dim=-2)))
        return mixed / mixed.shape[-1] ** 0.5
