"""Shared fixtures: real data slices, a real encoder with a throwaway cache, and a real
browser (Debian's chromium through Playwright, never ``playwright install``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from system_tools import require_or_skip

from hydra_core.data.retrieval_task import RetrievalTask
from hydra_core.data.tasks import load_task
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


CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def chromium() -> Path:
    """Debian's chromium; without it the test is skipped saying how to install it (CI makes
    it mandatory: see system_tools)."""
    return require_or_skip("chromium", "apt-get update && apt-get install -y chromium")


@pytest.fixture(scope="module")
def browser(chromium: Path) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture()
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    opened = context.new_page()
    opened.set_default_timeout(60_000)
    yield opened
    context.close()
