"""The OpenVINO backend: same vectors as torch, its own cache identity, chosen by env."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hydra_core.data.retrieval_task import RetrievalTask
from hydra_core.encoding.embedding_cache import EmbeddingCache
from hydra_core.encoding.encoder import BACKEND_ENV, FrozenEncoder, Precision, default_backend
from hydra_core.errors import HydraInputError


def test_backend_comes_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    assert default_backend() == "openvino"
    monkeypatch.setenv(BACKEND_ENV, " Torch ")
    assert default_backend() == "torch"
    assert FrozenEncoder(cache=EmbeddingCache(tmp_path / "e.sqlite")).backend == "torch"
    monkeypatch.setenv(BACKEND_ENV, "tensorrt")
    with pytest.raises(HydraInputError, match="tensorrt"):
        default_backend()


def test_backends_never_share_cache_entries(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "e.sqlite")
    torch_encoder = FrozenEncoder(cache=cache, precision="bf16", backend="torch")
    openvino_encoder = FrozenEncoder(cache=cache, precision="bf16", backend="openvino")
    assert torch_encoder.identity.endswith("/bf16")
    assert openvino_encoder.identity == torch_encoder.identity + "+openvino"


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_openvino_matches_torch_fp32(
    scifact_slice: RetrievalTask, tmp_path: Path, precision: Precision
) -> None:
    texts = scifact_slice.doc_texts()[:40] + ["a short query", ""]
    cache = EmbeddingCache(tmp_path / "e.sqlite")
    reference = FrozenEncoder(cache=cache, precision="fp32", backend="torch", show_progress=False)
    fast = FrozenEncoder(cache=cache, precision=precision, backend="openvino", show_progress=False)
    expected = reference.encode(texts, "document")
    vectors = fast.encode(texts, "document")
    assert vectors.shape == expected.shape
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.sum(vectors * expected, axis=1).min() > (0.99999 if precision == "fp32" else 0.9995)


def test_openvino_model_is_converted_once_per_cache(tmp_path: Path) -> None:
    texts = ["ionic conductivity of polymer electrolytes", "rna splicing in neurons"]
    cache = EmbeddingCache(tmp_path / "e.sqlite")
    first = FrozenEncoder(cache=cache, backend="openvino", show_progress=False)
    expected = first.encode(texts, "query")
    (saved,) = (tmp_path / "openvino").iterdir()
    assert (saved / "model.xml").is_file() and (saved / "model.bin").is_file()

    fresh_cache = EmbeddingCache(tmp_path / "other.sqlite")  # same folder, so same IR
    again = FrozenEncoder(cache=fresh_cache, backend="openvino", show_progress=False)
    np.testing.assert_array_equal(again.encode(texts, "query"), expected)

    (saved / "model.xml").write_text("not an OpenVINO model")
    repaired = FrozenEncoder(
        cache=EmbeddingCache(tmp_path / "third.sqlite"), backend="openvino", show_progress=False
    )
    np.testing.assert_array_equal(repaired.encode(texts, "query"), expected)
    assert "<net" in (saved / "model.xml").read_text()[:200]
