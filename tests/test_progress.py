"""Progress lines: long encoding and training say how far they are, with their rate."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest

from hydra_core.encoding import encoder as encoder_module
from hydra_core.encoding.embedding_cache import EmbeddingCache
from hydra_core.encoding.encoder import FrozenEncoder
from hydra_core.progress import ProgressLog

LINE = re.compile(r"^work: (\d+)/10 items \([\d.]+/s, about \d+s left\)$")


def test_lines_come_at_most_every_interval_and_always_at_the_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("test.progress")
    with caplog.at_level(logging.INFO, logger="test.progress"):
        every = ProgressLog(logger, "work", 10, "items", interval=0.0)
        for done in range(1, 11):
            every.advance(done)
        matches = [LINE.match(record.message) for record in caplog.records]
        assert [int(match[1]) for match in matches if match] == list(range(1, 11))
        caplog.clear()
        rare = ProgressLog(logger, "work", 10, "items", interval=3600.0)
        for done in range(1, 11):
            rare.advance(done)
        assert [record.message[:11] for record in caplog.records] == ["work: 10/10"]


def test_encoding_in_blocks_logs_progress_and_gives_the_same_vectors(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    texts = [f"document number {i} about retrieval and {i % 3} topics" for i in range(10)]
    whole = FrozenEncoder(
        cache=EmbeddingCache(tmp_path_factory.mktemp("a") / "e.sqlite"), show_progress=False
    ).encode(texts, "document")
    monkeypatch.setattr(encoder_module, "PROGRESS_BLOCK", 4)
    blocked = FrozenEncoder(
        cache=EmbeddingCache(tmp_path_factory.mktemp("b") / "e.sqlite"), show_progress=False
    )
    with caplog.at_level(logging.INFO, logger=encoder_module.progress_log.name):
        vectors = blocked.encode(texts, "document")
    lines = [r.message for r in caplog.records if r.name == encoder_module.progress_log.name]
    assert lines and lines[-1].startswith("all-MiniLM-L6-v2: 10/10 documents encoded (")
    np.testing.assert_allclose(vectors, whole, atol=1e-5)
