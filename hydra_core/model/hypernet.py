"""Hypernet: task card in, whole retriever out. The only part of Hydra that trains.

A checkpoint is a :class:`~hydra_core.model.module.HydraModule` folder: ``config.json``
(base encoder identity, architecture, training metadata) and ``model.safetensors``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hydra_core.data.cards import TaskCard
from hydra_core.encoding.card_parts import card_part_embeddings
from hydra_core.encoding.encoder import FrozenEncoder
from hydra_core.errors import HydraInputError
from hydra_core.model.card_encoder import TaskCardEncoder
from hydra_core.model.compiled_retriever import CompiledRetriever
from hydra_core.model.fusion_gate import FusionGate
from hydra_core.model.head import ProjectionHead
from hydra_core.model.head_generator import (
    HeadParameters,
    ProjectionHeadGenerator,
    geometry_preserving_basis,
)
from hydra_core.model.module import HydraModule
from hydra_core.model.task_profile import TaskProfile

FORMAT = "hydra-hypernet/3"
MAX_IN_DIM = 8192
"""Widest base encoder a checkpoint may name (common ones are 384 to 4096)."""
MAX_COND_DIM = 1024


@dataclass(frozen=True)
class HypernetConfig:
    """The sizes of a hypernet, beside the base encoder's width it reads (``in_dim``)."""

    out_dim: int = 256
    """Width of a compiled head's space."""
    cond_dim: int = 128
    """Width of the card's conditioning vector."""
    rank: int = 96
    """Rank of the generated change to the base head's weight."""


DEFAULT_ARCHITECTURE = HypernetConfig()


class Hypernet(HydraModule):
    """TaskCardEncoder, then a ProjectionHeadGenerator on its output; and the FusionGate
    that turns the task's profile into its fusion (fitted on labels, not by the trainer)."""

    format = FORMAT  # its config nests HypernetConfig: get_config_dict and from_config say how

    def __init__(
        self,
        *,
        base_model: str,
        in_dim: int = 384,
        architecture: HypernetConfig = DEFAULT_ARCHITECTURE,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.base_model = base_model
        self.in_dim = in_dim
        self.architecture = architecture
        self.metadata = dict(metadata or {})
        self.card_encoder = TaskCardEncoder(in_dim=in_dim, out_dim=architecture.cond_dim)
        self.generator = ProjectionHeadGenerator(
            cond_dim=architecture.cond_dim,
            in_dim=in_dim,
            out_dim=architecture.out_dim,
            rank=architecture.rank,
        )
        self.gate = FusionGate()

    def get_config_dict(self) -> dict[str, Any]:
        return {
            "base_model": self.base_model,
            "in_dim": self.in_dim,
            **asdict(self.architecture),
            "metadata": self.metadata,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Hypernet:
        sizes = {field.name: config[field.name] for field in fields(HypernetConfig)}
        return cls(
            base_model=str(config["base_model"]),
            in_dim=config["in_dim"],
            architecture=HypernetConfig(**sizes),
            metadata=dict(config.get("metadata") or {}),
        )

    @classmethod
    def check_config(cls, config: dict[str, Any], path: Path) -> None:
        """Each size an integer the architecture can use, checked before anything is allocated.

        A ``rank`` of -5 fails deep inside torch and one of 2,000,000,000 asks for terabytes.
        """
        limits = (
            ("in_dim", MAX_IN_DIM, "the base encoder's width"),
            ("out_dim", "in_dim", "the head projects the base embeddings down"),
            ("cond_dim", MAX_COND_DIM, "the card's conditioning vector"),
            ("rank", "out_dim", "the rank of the head's weight delta"),
        )
        for field, upper, meaning in limits:
            if field not in config:
                raise HydraInputError("missing", path=path, field=field)
            bound = config[upper] if isinstance(upper, str) else upper
            value = config[field]
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= bound:
                limit = f"{upper} ({bound})" if isinstance(upper, str) else str(bound)
                raise HydraInputError(
                    f"{value!r} is not an integer from 1 to {limit}: {meaning}",
                    path=path,
                    field=field,
                )

    @property
    def num_trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def forward(self, card_parts: torch.Tensor) -> HeadParameters:
        """(batch x parts x in_dim) card part embeddings -> batched heads."""
        return self.generator(self.card_encoder(card_parts))

    def compile_card(
        self, card: TaskCard, encoder: FrozenEncoder, profile: TaskProfile | None = None
    ) -> CompiledRetriever:
        """Compile one card into its whole retriever: the head from its text and examples,
        the fusion from its task's ``profile`` (none: a task the card says nothing of)."""
        self.check_encoder(encoder)
        parts = card_part_embeddings(card, encoder)
        with torch.inference_mode():
            head = self(parts.unsqueeze(0))
        return CompiledRetriever(
            head=ProjectionHead(*(tensor[0].clone() for tensor in head), task=card.name),
            fusion=self.gate.fusion_for(profile),
            task=card.name,
        )

    def check_encoder(self, encoder: FrozenEncoder) -> None:
        if encoder.model_name != self.base_model:
            raise HydraInputError(
                f"checkpoint was trained on base encoder {self.base_model!r}, "
                f"not {encoder.model_name!r}"
            )


def initial_hypernet(
    base_model: str,
    reference_embeddings: np.ndarray,
    *,
    seed: int = 0,
    architecture: HypernetConfig = DEFAULT_ARCHITECTURE,
) -> Hypernet:
    """An untrained hypernet whose every head preserves the base encoder's geometry.

    ``reference_embeddings`` (base embeddings of training documents and queries) decide
    which ``architecture.out_dim`` directions of the base space the base head keeps.
    """
    torch.manual_seed(seed)
    hypernet = Hypernet(
        base_model=base_model,
        in_dim=reference_embeddings.shape[1],
        architecture=architecture,
    )
    basis = geometry_preserving_basis(reference_embeddings, architecture.out_dim)
    hypernet.generator.set_base_weight(basis)
    return hypernet
