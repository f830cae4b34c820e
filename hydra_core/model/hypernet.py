"""Hypernet: task card in, projection head out. The only part of Hydra that trains.

A checkpoint is a directory with ``config.json`` (architecture, base encoder identity,
training metadata) and ``model.safetensors`` (weights). Loading never unpickles: a
truncated, foreign or mismatched checkpoint is refused with an error that names it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from hydra_core.atomic import save_tensors_atomic, write_text_atomic
from hydra_core.data.cards import TaskCard
from hydra_core.encoding.card_encoder import TaskCardEncoder, card_part_embeddings
from hydra_core.encoding.encoder import FrozenEncoder
from hydra_core.errors import HydraInputError
from hydra_core.model.compiled_retriever import CompiledRetriever
from hydra_core.model.fusion_generator import FusionGenerator, FusionWeights
from hydra_core.model.head import ProjectionHead
from hydra_core.model.head_generator import (
    HeadParameters,
    ProjectionHeadGenerator,
    geometry_preserving_basis,
)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT = "hydra-hypernet/2"
MAX_IN_DIM = 8192
"""Widest base encoder a checkpoint may name (common ones are 384 to 4096)."""
MAX_COND_DIM = 1024


class Hypernet(nn.Module):
    """TaskCardEncoder, then a ProjectionHeadGenerator and a FusionGenerator on its output."""

    def __init__(
        self,
        *,
        base_model: str,
        in_dim: int = 384,
        out_dim: int = 256,
        cond_dim: int = 128,
        rank: int = 96,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.base_model = base_model
        self.metadata = dict(metadata or {})
        self.card_encoder = TaskCardEncoder(in_dim=in_dim, out_dim=cond_dim)
        self.generator = ProjectionHeadGenerator(
            cond_dim=cond_dim, in_dim=in_dim, out_dim=out_dim, rank=rank
        )
        self.fusion = FusionGenerator(cond_dim=cond_dim)

    @property
    def config(self) -> dict[str, Any]:
        generator = self.generator.config
        return {
            "format": FORMAT,
            "base_model": self.base_model,
            "in_dim": generator["in_dim"],
            "out_dim": generator["out_dim"],
            "cond_dim": generator["cond_dim"],
            "rank": generator["rank"],
            "metadata": self.metadata,
        }

    @property
    def num_trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def forward(self, card_parts: torch.Tensor) -> tuple[HeadParameters, FusionWeights]:
        """(batch x parts x in_dim) card part embeddings -> batched head and fusion."""
        cond = self.card_encoder(card_parts)
        return self.generator(cond), self.fusion(cond)

    def compile_card(self, card: TaskCard, encoder: FrozenEncoder) -> CompiledRetriever:
        """Compile one card into its whole retriever: head and fusion parameters."""
        self.check_encoder(encoder)
        parts = card_part_embeddings(card, encoder)
        with torch.inference_mode():
            head, fusion = self(parts.unsqueeze(0))
        return CompiledRetriever(
            head=ProjectionHead(*(tensor[0].clone() for tensor in head), task=card.name),
            fusion=self.fusion.parameters_for(fusion),
            task=card.name,
        )

    def check_encoder(self, encoder: FrozenEncoder) -> None:
        if encoder.model_name != self.base_model:
            raise HydraInputError(
                f"checkpoint was trained on base encoder {self.base_model!r}, "
                f"not {encoder.model_name!r}"
            )

    def save(self, directory: Path | str) -> Path:
        """Write weights and config into ``directory`` (each file atomically)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {name: t.detach().contiguous() for name, t in self.state_dict().items()}
        save_tensors_atomic(directory / WEIGHTS_FILE, state, {"format": FORMAT})
        write_text_atomic(directory / CONFIG_FILE, json.dumps(self.config, indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, directory: Path | str) -> Hypernet:
        """Load a checkpoint directory written by :meth:`save`."""
        directory = Path(directory)
        config = read_config(directory)
        try:
            model = cls(
                base_model=str(config["base_model"]),
                in_dim=config["in_dim"],
                out_dim=config["out_dim"],
                cond_dim=config["cond_dim"],
                rank=config["rank"],
                metadata=dict(config.get("metadata") or {}),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise HydraInputError(
                f"incomplete hypernet config ({error!r})", path=directory / CONFIG_FILE
            ) from None
        weights_path = directory / WEIGHTS_FILE
        try:
            state = load_file(str(weights_path))
        except (SafetensorError, OSError, ValueError) as error:
            raise HydraInputError(
                f"unreadable weights ({error}); the file may be truncated or not safetensors",
                path=weights_path,
            ) from None
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as error:
            raise HydraInputError(
                f"weights do not fit the configured architecture: {error}", path=weights_path
            ) from None
        return model


def read_config(directory: Path) -> dict[str, Any]:
    """The checkpoint's config.json, validated enough to build the model from it."""
    path = directory / CONFIG_FILE
    if not directory.is_dir():
        raise HydraInputError("checkpoint directory does not exist", path=directory)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise HydraInputError(f"unreadable checkpoint config ({error})", path=path) from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise HydraInputError(f"not a Hydra hypernet checkpoint (format != {FORMAT})", path=path)
    _check_sizes(config, path)
    return config


def _check_sizes(config: dict[str, Any], path: Path) -> None:
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


def initial_hypernet(
    base_model: str,
    reference_embeddings: np.ndarray,
    *,
    seed: int = 0,
    out_dim: int = 256,
    cond_dim: int = 128,
    rank: int = 96,
) -> Hypernet:
    """An untrained hypernet whose every head preserves the base encoder's geometry.

    ``reference_embeddings`` (base embeddings of training documents and queries) decide
    which ``out_dim`` directions of the base space the base head keeps.
    """
    torch.manual_seed(seed)
    hypernet = Hypernet(
        base_model=base_model,
        in_dim=reference_embeddings.shape[1],
        out_dim=out_dim,
        cond_dim=cond_dim,
        rank=rank,
    )
    hypernet.generator.set_base_weight(geometry_preserving_basis(reference_embeddings, out_dim))
    return hypernet
