"""The default encoder's vectors pinned to a float32 reference, so a change of numerics
(a new backend, precision, library version or CPU path) is caught by a test rather than
found in the results tables.

``data/minilm_fp32_reference.npy`` holds the torch fp32 vectors of :data:`REFERENCE_TEXTS`,
written once by ``uv run python tests/test_encoder_reference.py`` on the machine the
README names. bf16 (on CPUs with native bf16) stays above cosine 0.9999 of it, fp32 paths
above 0.99999 (measured here: 0.9999999 for OpenVINO fp32).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest

from hydra_core.encoding.embedding_cache import EmbeddingCache
from hydra_core.encoding.encoder import Backend, FrozenEncoder, Precision

REFERENCE_FILE = Path(__file__).parent / "data" / "minilm_fp32_reference.npy"
REFERENCE_TEXTS = (
    "Statins reduce the risk of breast cancer recurrence.",
    "Vitamin D deficiency is associated with multiple sclerosis.",
    "What is the heat transfer of a laminar boundary layer on a flat plate?",
    "Supersonic flutter of a cantilevered wing: experiments and a linear theory.",
    "Retrieval of documents by term weighting and relevance feedback in a library catalogue.",
)
MIN_COSINE: dict[str, float] = {"fp32": 0.99999, "bf16": 0.9999}


def encode_reference(
    cache_dir: Path, backend: Backend | None = None, precision: Precision | None = None
) -> tuple[FrozenEncoder, np.ndarray]:
    """The reference texts' vectors (the defaults: this machine's backend and precision)."""
    cache = EmbeddingCache(cache_dir / "e.sqlite")
    encoder = FrozenEncoder(cache=cache, backend=backend, precision=precision, show_progress=False)
    return encoder, encoder.encode(list(REFERENCE_TEXTS), "document", store=False)


@pytest.mark.parametrize(
    ("backend", "precision"), [(None, None), ("torch", "fp32")], ids=["default", "torch-fp32"]
)
def test_encoder_vectors_match_the_fp32_reference(
    tmp_path: Path, backend: Backend | None, precision: Precision | None
) -> None:
    reference = np.load(REFERENCE_FILE)
    encoder, vectors = encode_reference(tmp_path, backend, precision)
    assert vectors.shape == reference.shape
    cosine = np.sum(vectors * reference, axis=1)
    assert cosine.min() >= MIN_COSINE[encoder.precision], (encoder.identity, cosine)


if __name__ == "__main__":  # write the reference (torch, fp32)
    with tempfile.TemporaryDirectory() as folder:
        _, fp32 = encode_reference(Path(folder), "torch", "fp32")
    np.save(REFERENCE_FILE, fp32.astype(np.float32))
