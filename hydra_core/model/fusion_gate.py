"""FusionGate: a task's profile and each query's evidence -> how that query mixes channels.

Imitating the teachers' RRF cannot teach a student that contains BM25 and the base when to
lean on which (README), so the fusion is learned from labels across a pool of tasks instead.
For each labelled task (and synthetic variants of it: a corpus the encoder cannot read,
keyword queries, title-only documents) every query is scored at each point of a grid of
lexical weights x feedback strengths, frozen base as the dense channel: a
:class:`FusionExample`. The gate is a logistic model of the lexical weight and of the
feedback from the task's label-free :class:`~hydra_core.model.task_profile.TaskProfile` and
the query's :data:`~hydra_core.model.score_fusion.QUERY_EVIDENCE`, fitted to maximise the
mean NDCG@10 (each query's grid interpolated bilinearly, every task weighing the same).

A linear gate, not a network: a pool has tens of tasks, and what must transfer to a task
unlike them is the direction of the evidence (a text the encoder reads badly, a query BM25
barely matches), not the pool's particulars. Its parameters start at zero around the prior,
so an unfitted gate compiles every card to the prior fusion.

Compiling folds the task's part into the task's own weight and feedback and keeps the
query part as a :class:`~hydra_core.model.score_fusion.QueryGate`, so a compiled retriever
holds a handful of numbers and needs no profile at search time.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from hydra_core.data.synthetic_tasks import made_from
from hydra_core.errors import HydraInputError
from hydra_core.model.module import HydraModule
from hydra_core.model.score_fusion import QUERY_EVIDENCE, FusionParameters, QueryGate
from hydra_core.model.task_profile import PROFILE_FEATURES, TaskProfile

GATE_WEIGHTS = tuple(round(0.1 * step, 1) for step in range(11))
"""Lexical weights each example query is scored at."""
GATE_FEEDBACK = (0.0, 0.5, 1.0)
"""Feedback strengths each example query is scored at (the gate's feedback is in [0, 1])."""
PRIOR_FUSION = FusionParameters(lexical_weight=0.4, feedback=0.5, feedback_depth=3)
"""Where an unfitted gate stands: the fusion chosen on validation before it was learned (see
:mod:`hydra_core.model.score_fusion`); the head's labelled pairs are scored fused at it."""
FEATURES = (*PROFILE_FEATURES, *QUERY_EVIDENCE)
FIT_STEPS = 300
FIT_RATE = 0.05
FIT_PENALTY = 0.01
"""L2 on the standardised coefficients; with the steps and rate, chosen by leave-one-task-
out over the pool (README, "The card decides the fusion")."""


@dataclass(frozen=True)
class FusionExample:
    """One labelled task: its profile, each query's evidence, and each query's NDCG@10 at
    every (lexical weight, feedback) of the grid, shaped (queries x weights x feedbacks),
    on the labels of ``split`` (a ``test`` split teaches only gates judged on other tasks)."""

    task: str
    split: str
    profile: TaskProfile
    evidence: np.ndarray
    ndcg: np.ndarray

    def __post_init__(self) -> None:
        shape = (len(GATE_WEIGHTS), len(GATE_FEEDBACK))
        if self.ndcg.ndim != 3 or self.ndcg.shape[1:] != shape:
            raise HydraInputError(f"fusion example {self.task!r}: ndcg must be (queries, *{shape})")
        if self.evidence.shape != (self.ndcg.shape[0], len(QUERY_EVIDENCE)):
            raise HydraInputError(f"fusion example {self.task!r}: one evidence row a query")

    def features(self) -> np.ndarray:
        """(queries x :data:`FEATURES`): the task's profile beside each query's evidence."""
        profile = np.broadcast_to(
            self.profile.vector(), (len(self.evidence), len(PROFILE_FEATURES))
        )
        return np.concatenate([profile, self.evidence], 1)

    def digest(self) -> str:
        """What the example holds, hashed: a gate fitted on it is named by it (resume)."""
        digest = hashlib.sha256(f"{self.task}\0{self.split}\0".encode())
        for values in (self.profile.vector(), self.evidence, self.ndcg):
            digest.update(np.ascontiguousarray(values, dtype=np.float64).tobytes())
        return digest.hexdigest()


def taught_on_test(fusion_labels: Mapping[str, str]) -> set[str]:
    """The tasks whose test labels taught a gate (``fusion_labels``: each example's task and
    split, as a checkpoint records them; a variant counts as its task): a hypernet's rows
    on them are in-pool, not test figures."""
    return {made_from(task) for task, split in fusion_labels.items() if split == "test"}


def _logit(value: float) -> float:
    return math.log(value / (1 - value))


class FusionGate(HydraModule):
    """Logistic lexical weight and feedback over standardised :data:`FEATURES`."""

    format = "hydra-fusion-gate/1"
    center: torch.Tensor
    scale: torch.Tensor
    weights: torch.Tensor
    bias: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        n = len(FEATURES)
        self.register_buffer("center", torch.zeros(n, dtype=torch.float64))
        self.register_buffer("scale", torch.ones(n, dtype=torch.float64))
        self.register_buffer("weights", torch.zeros(n, 2, dtype=torch.float64))
        self.register_buffer(
            "bias",
            torch.tensor(
                [_logit(PRIOR_FUSION.lexical_weight), _logit(PRIOR_FUSION.feedback)],
                dtype=torch.float64,
            ),
        )

    @property
    def is_fitted(self) -> bool:
        return bool(self.weights.abs().sum() > 0)

    def fusion_for(self, profile: TaskProfile | None) -> FusionParameters:
        """The fusion of a task with ``profile``; ``None`` (a card that says nothing of its
        task) stands at the pool's mean profile."""
        n_task = len(PROFILE_FEATURES)
        task = torch.zeros(n_task, dtype=torch.float64)
        if profile is not None:
            vector = torch.from_numpy(profile.vector())
            task = (vector - self.center[:n_task]) / self.scale[:n_task]
        weight, feedback = torch.sigmoid(self.bias + task @ self.weights[:n_task]).tolist()
        gate = None
        if self.is_fitted:
            per_unit = self.weights[n_task:] / self.scale[n_task:, None]
            gate = QueryGate(
                center=tuple(self.center[n_task:].tolist()),
                lexical=tuple(per_unit[:, 0].tolist()),
                feedback=tuple(per_unit[:, 1].tolist()),
            )
        return FusionParameters(lexical_weight=weight, feedback=feedback, gate=gate)

    @classmethod
    def fit(
        cls,
        examples: Sequence[FusionExample],
        *,
        steps: int = FIT_STEPS,
        rate: float = FIT_RATE,
        penalty: float = FIT_PENALTY,
    ) -> FusionGate:
        """The gate that maximises the examples' mean NDCG@10 (every task weighing the same)."""
        if not examples:
            raise HydraInputError("no labelled task to learn the fusion from")
        gate = cls()
        stacked = np.concatenate([example.features() for example in examples])
        center, scale = stacked.mean(0), stacked.std(0) + 1e-6
        features = torch.from_numpy((stacked - center) / scale)
        grid = torch.from_numpy(np.concatenate([example.ndcg for example in examples]))
        # Each query weighs 1/len(its task) / len(tasks): every task weighs the same.
        share = torch.from_numpy(
            np.concatenate([np.full(len(ex.ndcg), 1 / len(ex.ndcg)) for ex in examples])
            / len(examples)
        )
        weights = torch.zeros_like(gate.weights, requires_grad=True)
        bias = gate.bias.clone().requires_grad_(True)
        optimizer = torch.optim.Adam([weights, bias], lr=rate)
        for _ in range(steps):
            optimizer.zero_grad()
            ndcg = _interpolated(grid, torch.sigmoid(bias + features @ weights)) @ share
            loss = -ndcg + penalty * (weights**2).sum()
            loss.backward()
            optimizer.step()
        gate.center.copy_(torch.from_numpy(center))
        gate.scale.copy_(torch.from_numpy(scale))
        gate.weights.copy_(weights.detach())
        gate.bias.copy_(bias.detach())
        return gate


def _interpolated(grid: torch.Tensor, knobs: torch.Tensor) -> torch.Tensor:
    """Each query's NDCG at its (weight, feedback) in [0, 1]^2, bilinear over the grid."""
    rows = torch.arange(grid.shape[0])
    w = knobs[:, 0] * (len(GATE_WEIGHTS) - 1)
    f = knobs[:, 1] * (len(GATE_FEEDBACK) - 1)
    w0 = w.floor().long().clamp(0, len(GATE_WEIGHTS) - 2)
    f0 = f.floor().long().clamp(0, len(GATE_FEEDBACK) - 2)
    tw, tf = w - w0, f - f0
    low = grid[rows, w0, f0] * (1 - tf) + grid[rows, w0, f0 + 1] * tf
    high = grid[rows, w0 + 1, f0] * (1 - tf) + grid[rows, w0 + 1, f0 + 1] * tf
    return low * (1 - tw) + high * tw
