"""A compiled task head: a 384->256 linear map with LayerNorm scale and shift.

``head(x) = normalize(scale * LayerNorm(W x + b) + shift)``, applied to frozen base
embeddings of both queries and documents; retrieval is then cosine similarity in the
head's 256-d space. A head is small (~100K numbers), so a task costs one file of
~400 KB, and applying it to 100,000 cached embeddings is one matrix product.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from hydra_core.atomic import save_tensors_atomic
from hydra_core.errors import HydraInputError

LAYER_NORM_EPS = 1e-5
_NORM_EPS = 1e-12  # F.normalize's default
_APPLY_ROWS = 1024  # rows per block in ProjectionHead.apply's normalisation: 1 MB at 256-d
HEAD_TENSORS = ("weight", "bias", "scale", "shift")


def head_forward(
    embeddings: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
) -> torch.Tensor:
    """The head as a pure function of batched parameters, for training; ``apply`` fuses it."""
    hidden = embeddings @ weight.transpose(-1, -2) + bias.unsqueeze(-2)
    normed = F.layer_norm(hidden, hidden.shape[-1:], eps=LAYER_NORM_EPS)
    return F.normalize(normed * scale.unsqueeze(-2) + shift.unsqueeze(-2), dim=-1)


@dataclass(frozen=True)
class ProjectionHead:
    """One task's generated parameters; ``apply`` maps base embeddings into its space."""

    weight: torch.Tensor
    bias: torch.Tensor
    scale: torch.Tensor
    shift: torch.Tensor
    task: str = ""

    @property
    def in_dim(self) -> int:
        return self.weight.shape[1]

    @property
    def out_dim(self) -> int:
        return self.weight.shape[0]

    @property
    def num_parameters(self) -> int:
        return sum(getattr(self, name).numel() for name in HEAD_TENSORS)

    def apply(self, embeddings: np.ndarray | torch.Tensor) -> np.ndarray:
        """Project (n x in_dim) base embeddings to normalised (n x out_dim) float32.

        Computes :func:`head_forward` with fused kernels: the bias inside the matrix product,
        then scale and shift inside the LayerNorm and the normalisation in place, on blocks
        of rows small enough to stay in cache. 1.05x a bare matmul of the same shape on an
        idle 2-core machine (1.64x with the normalisation on one thread; under load from
        other work the two are within 10%), against 2.3x unfused.
        """
        vectors = torch.as_tensor(embeddings, dtype=torch.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.in_dim:
            raise ValueError(
                f"head for {self.in_dim}-d embeddings got an array of shape {tuple(vectors.shape)}"
            )
        with torch.inference_mode():
            projected = torch.addmm(self.bias, vectors, self.weight.T)
            for start in range(0, projected.shape[0], _APPLY_ROWS):
                block = projected[start : start + _APPLY_ROWS]
                normed = F.layer_norm(
                    block, (self.out_dim,), self.scale, self.shift, eps=LAYER_NORM_EPS
                )
                norms = torch.linalg.vector_norm(normed, dim=1, keepdim=True)
                block.copy_(normed.div_(norms.clamp_min_(_NORM_EPS)))
        return projected.numpy()

    def tensors(self) -> dict[str, torch.Tensor]:
        """The parameters by name, contiguous, as safetensors stores them."""
        return {name: getattr(self, name).detach().contiguous() for name in HEAD_TENSORS}

    def save(self, path: Path | str) -> None:
        """Write the head as safetensors, atomically."""
        save_tensors_atomic(path, self.tensors(), {"format": "hydra-head", "task": self.task})

    @classmethod
    def load(cls, path: Path | str) -> ProjectionHead:
        """Read a head written by :meth:`save`; anything else is refused with a clear error."""
        tensors, metadata = read_safetensors(path, "safetensors head")
        return cls.from_tensors(tensors, task=metadata.get("task", ""), path=path)

    @classmethod
    def from_tensors(
        cls, tensors: dict[str, torch.Tensor], *, task: str = "", path: Path | str | None = None
    ) -> ProjectionHead:
        """A head from named tensors, checked for the names and shapes a head has."""
        missing = [name for name in HEAD_TENSORS if name not in tensors]
        if missing:
            raise HydraInputError(f"not a Hydra head: missing tensors {missing}", path=path)
        weight = tensors["weight"]
        out_dim = weight.shape[0] if weight.ndim == 2 else -1
        for name in HEAD_TENSORS[1:]:
            if tensors[name].shape != (out_dim,):
                raise HydraInputError(
                    f"tensor {name!r} has shape {tuple(tensors[name].shape)}, "
                    f"expected ({out_dim},)",
                    path=path,
                )
        return cls(**{name: tensors[name] for name in HEAD_TENSORS}, task=task)


def read_safetensors(path: Path | str, what: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A safetensors file's tensors and metadata; an unreadable one is refused naming it."""
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise HydraInputError(f"not a readable {what} ({error})", path=path) from None
    return tensors, metadata


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with ``count`` torch intra-op threads, then restore the previous count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
