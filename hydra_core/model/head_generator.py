"""ProjectionHeadGenerator: conditioning vector -> the parameters of a projection head.

Generating a 256x384 matrix outright would need a 25M-parameter output layer. Instead
the generator keeps a learned base head (initialised to preserve the base encoder's
geometry) and generates small deltas on it:

- the weight delta is low rank, ``left @ diag(s(c)) @ right``, with ``s(c)`` generated;
- bias, LayerNorm scale and LayerNorm shift deltas are generated directly.

Every generating layer starts at zero, so an untrained hypernet compiles every card to
the base head, and training starts from the frozen base rather than below it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from hydra_core.model.module import HydraModule


class HeadParameters(NamedTuple):
    """Batched head parameters: weight (B x out x in), bias/scale/shift (B x out)."""

    weight: torch.Tensor
    bias: torch.Tensor
    scale: torch.Tensor
    shift: torch.Tensor


def geometry_preserving_basis(embeddings: np.ndarray, out_dim: int) -> np.ndarray:
    """An (out_dim x in_dim) map that keeps cosine geometry as well as out_dim allows.

    Rows span the top ``out_dim - 1`` principal directions of ``embeddings`` (uncentred,
    since retrieval uses raw dot products), rotated into the subspace of outputs that sum
    to zero: there LayerNorm's centring changes nothing and its scaling only rescales, so
    the base head ranks documents almost exactly as the base encoder does.
    """
    # full_matrices: with fewer than out_dim rows (a tiny task) the data's directions are
    # completed by orthonormal ones instead of leaving too few rows to build the map.
    _, _, principal = np.linalg.svd(embeddings.astype(np.float64), full_matrices=True)
    keep = principal[: out_dim - 1]
    centring = np.eye(out_dim) - 1.0 / out_dim
    sum_zero_basis = np.linalg.svd(centring)[0][:, : out_dim - 1]
    return (sum_zero_basis @ keep).astype(np.float32)


class ProjectionHeadGenerator(HydraModule):
    """(batch x cond_dim) conditioning -> :class:`HeadParameters` for each row."""

    format = "hydra-head-generator/1"
    config_keys = ("cond_dim", "in_dim", "out_dim", "rank")

    def __init__(
        self, cond_dim: int = 128, in_dim: int = 384, out_dim: int = 256, rank: int = 96
    ) -> None:
        super().__init__()
        self.cond_dim, self.in_dim, self.out_dim, self.rank = cond_dim, in_dim, out_dim, rank
        self.base_weight = nn.Parameter(torch.zeros(out_dim, in_dim))
        self.base_bias = nn.Parameter(torch.zeros(out_dim))
        self.base_scale = nn.Parameter(torch.ones(out_dim))
        self.base_shift = nn.Parameter(torch.zeros(out_dim))
        self.left = nn.Parameter(torch.randn(out_dim, rank) / out_dim**0.5)
        self.right = nn.Parameter(torch.randn(rank, in_dim) / in_dim**0.5)
        self.to_rank_scales = nn.Linear(cond_dim, rank)
        self.to_vector_deltas = nn.Linear(cond_dim, 3 * out_dim)
        for layer in (self.to_rank_scales, self.to_vector_deltas):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def set_base_weight(self, weight: np.ndarray | torch.Tensor) -> None:
        """Start from a given base map, e.g. :func:`geometry_preserving_basis`."""
        with torch.no_grad():
            self.base_weight.copy_(torch.as_tensor(weight, dtype=torch.float32))

    def forward(self, cond: torch.Tensor) -> HeadParameters:
        rank_scales = self.to_rank_scales(cond)
        weight_delta = torch.einsum("or,br,ri->boi", self.left, rank_scales, self.right)
        bias, scale, shift = self.to_vector_deltas(cond).chunk(3, dim=-1)
        return HeadParameters(
            weight=self.base_weight + weight_delta,
            bias=self.base_bias + bias,
            scale=self.base_scale + scale,
            shift=self.base_shift + shift,
        )
