"""Shared fixtures: real data slices and a real encoder with a throwaway cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from hydra_core.data.tasks import RetrievalTask, load_task
from hydra_core.encoding.embedding_cache import EmbeddingCache
from hydra_core.encoding.encoder import FrozenEncoder
from hydra_core.settings import load_settings


@pytest.fixture(scope="session")
def data_dir() -> Path:
    data_dir = load_settings().data_dir
    if data_dir is None or not (data_dir / "scifact").is_dir():
        pytest.fail("the shared datasets are missing: set HYDRA_DATA_DIR to ../shared/data")
    return data_dir


@pytest.fixture(scope="session")
def scifact_slice(data_dir: Path) -> RetrievalTask:
    """300 real SciFact documents with the judged ones for 40 train and 40 test queries."""
    return load_task("beir/scifact", data_dir=data_dir).head(300, 40)


@pytest.fixture(scope="session")
def nfcorpus_slice(data_dir: Path) -> RetrievalTask:
    """300 real NFCorpus documents (graded qrels) for 30 queries per split."""
    return load_task("beir/nfcorpus", data_dir=data_dir).head(300, 30)


@pytest.fixture(scope="session")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> FrozenEncoder:
    """The real default base model, caching into a session-private folder."""
    cache = EmbeddingCache(tmp_path_factory.mktemp("cache") / "embeddings.sqlite")
    return FrozenEncoder(cache=cache, show_progress=False)
