"""FusionGenerator: conditioning vector -> how a task mixes its lexical and dense channels.

It generates the lexical weight and the Rocchio feedback weight of
:class:`~hydra_core.model.score_fusion.FusionParameters` as learned deltas on fixed priors (the
values chosen on validation). The generating layer starts at zero, so an untrained
hypernet compiles every card to the prior fusion, as it compiles every card to the base
head: training starts from the validated hybrid, never below it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from hydra_core.model.module import HydraModule
from hydra_core.model.score_fusion import FusionParameters

DEFAULT_FUSION = FusionParameters(lexical_weight=0.4, feedback=0.5, feedback_depth=3)
"""The prior every card starts from (see :mod:`hydra_core.model.score_fusion` for the choice)."""


class FusionWeights(NamedTuple):
    """Batched generated fusion weights: lexical weight in (0, 1), feedback >= 0."""

    lexical_weight: torch.Tensor
    feedback: torch.Tensor


def _inverse_softplus(value: float) -> float:
    return math.log(math.expm1(value)) if value > 0 else -20.0


class FusionGenerator(HydraModule):
    """(batch x cond_dim) conditioning -> :class:`FusionWeights` for each row.

    The prior is code, not config: its logits are a buffer saved with the weights.
    """

    format = "hydra-fusion-generator/1"
    config_keys = ("cond_dim",)

    def __init__(self, cond_dim: int = 128, prior: FusionParameters = DEFAULT_FUSION) -> None:
        super().__init__()
        self.cond_dim = cond_dim
        self.prior = prior
        weight = min(max(prior.lexical_weight, 1e-6), 1 - 1e-6)
        self.register_buffer(
            "prior_logits",
            torch.tensor([math.log(weight / (1 - weight)), _inverse_softplus(prior.feedback)]),
        )
        self.to_deltas = nn.Linear(cond_dim, 2)
        nn.init.zeros_(self.to_deltas.weight)
        nn.init.zeros_(self.to_deltas.bias)

    def forward(self, cond: torch.Tensor) -> FusionWeights:
        logits = self.prior_logits + self.to_deltas(cond)
        return FusionWeights(torch.sigmoid(logits[..., 0]), F.softplus(logits[..., 1]))

    def parameters_for(self, weights: FusionWeights, row: int = 0) -> FusionParameters:
        """Row ``row`` of generated weights as the parameters a retriever searches with."""
        return FusionParameters(
            lexical_weight=float(weights.lexical_weight[row]),
            feedback=float(weights.feedback[row]),
            feedback_depth=self.prior.feedback_depth,
            candidate_depth=self.prior.candidate_depth,
        )
