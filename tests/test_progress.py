"""Progress lines: long encoding and training say how far they are, with their rate."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from hydra_core.encoding import encoder as encoder_module
from hydra_core.encoding.embedding_cache import EmbeddingCache
from hydra_core.encoding.encoder import FrozenEncoder
from hydra_core.progress import ProgressLog
from hydra_pipeline.defs.jobs import Wave
from hydra_pipeline.defs.progress import hydra_progress
from hydra_pipeline.planning import PlannedRun
from hydra_pipeline.runner import execute_planned

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


def test_the_last_steps_line_reaches_stderr_not_the_runs_captured_log(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Dagster copies a run's captured stderr back with ``tail -F`` and stops it when the run
    ends, so a line that went through the capture could be lost: the progress lines bypass it."""

    @dg.asset
    def last() -> None:
        pass

    defs = dg.Definitions(
        assets=[last],
        jobs=[dg.define_asset_job("last_job", selection=[last])],
        loggers={"hydra_progress": hydra_progress},
    )
    planned = PlannedRun(Wave("last", "last_job", ("last",), False), None, ("last",), ("new",))
    with dg.DagsterInstance.local_temp(str(tmp_path)) as instance:
        assert execute_planned(defs, instance, planned).success
    captured = [path.read_text() for path in tmp_path.rglob("*.err")]
    assert captured, "the run's stderr was captured"
    assert not any("done last" in text for text in captured)
    assert re.search(r"^ +last  done last \([\d.]+s\)$", capfd.readouterr().err, re.MULTILINE)
