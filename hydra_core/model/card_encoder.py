"""TaskCardEncoder: a task card as one conditioning vector for the generators.

A small learned layer maps each of the card's part embeddings
(:func:`~hydra_core.encoding.card_parts.card_part_embeddings`) into the conditioning
space and mixes the parts, so the hypernet can learn which parts of a card tell tasks apart.
"""

from __future__ import annotations

import torch
from torch import nn

from hydra_core.encoding.card_parts import CARD_PARTS
from hydra_core.model.module import HydraModule


class TaskCardEncoder(HydraModule):
    """(batch x parts x in_dim) card part embeddings -> (batch x out_dim) conditioning."""

    format = "hydra-card-encoder/1"
    config_keys = ("in_dim", "out_dim", "num_parts")

    def __init__(self, in_dim: int = 384, out_dim: int = 128, num_parts: int = len(CARD_PARTS)):
        super().__init__()
        self.in_dim, self.out_dim, self.num_parts = in_dim, out_dim, num_parts
        self.part_projection = nn.Linear(in_dim, out_dim)
        self.mix = nn.Linear(num_parts * out_dim, out_dim)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, parts: torch.Tensor) -> torch.Tensor:
        """Unit-norm conditioning, so a generating layer's step size does not grow with width."""
        projected = torch.tanh(self.part_projection(parts))
        mixed = self.norm(self.mix(projected.flatten(start_dim=-2)))
        return mixed / mixed.shape[-1] ** 0.5
