"""Faults: processes killed mid-epoch and mid-write, racing encoders, unavailable stores.

Users run Hydra for hours under Dagster, so a crash, a ``kill -9`` or a second process must
lose nothing and leave nothing half-written, and a missing service must say what to fix.
Every fault here is real: child processes (``tests/reliability_workers.py``) are SIGKILLed
or raced, MLflow is pointed at a closed loopback port, and DuckDB's lock is held by another
process. Nothing is mocked.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import TypedDict

import numpy as np
import polars as pl
import pytest
import torch
from mlflow.tracking import MlflowClient
from reliability_workers import ENCODE_TEXTS, TRAIN_EPOCHS, big_tensor
from safetensors import safe_open
from safetensors.numpy import save_file
from safetensors.torch import load_file

from hydra_core.atomic import atomic_path
from hydra_core.data.cards import TaskCard, find_card
from hydra_core.data.opened_task import OpenedTask
from hydra_core.data.retrieval_task import RetrievalTask
from hydra_core.data.training_queries import training_queries
from hydra_core.encoding.embedding_cache import EmbeddingCache, text_key
from hydra_core.encoding.embeddings import Embeddings
from hydra_core.encoding.encoder import FrozenEncoder
from hydra_core.evaluation.fusion_examples import card_fusion_examples, examples_frame
from hydra_core.model.hypernet import Hypernet
from hydra_core.model.module import WEIGHTS_FILE
from hydra_core.ranking.teacher_rankings import (
    bm25_rankings,
    dense_rankings,
    document_embeddings,
    fuse_teachers,
    query_embeddings,
)
from hydra_core.training.preferences import distillation_pairs
from hydra_core.training.trainer import STATE_FILE, TrainConfig
from hydra_pipeline import metrics_store
from hydra_pipeline.artifacts import load_value, save_value, stored_path
from hydra_pipeline.tracked_training import TrackingUnavailableError, train_tracked
from hydra_pipeline.tracking import TrackingTarget

WORKERS = Path(__file__).with_name("reliability_workers.py")
# One BLAS/torch thread per child: the same arithmetic in every process, and the shared
# two-core machine is not oversubscribed.
SINGLE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
STARTUP_SECONDS = 240.0


class Worker:
    """A child process running one worker command; its stdout lines are collected live.

    It leads its own process group, so the processes it forks end with it.
    """

    def __init__(self, *args: object, single_thread: bool = True) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(WORKERS), *map(str, args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(SINGLE_THREAD if single_thread else {})},
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.strip())

    def printed(self, prefix: str) -> str | None:
        return next((line for line in self.lines if line.startswith(prefix)), None)

    def wait_for(self, prefix: str, timeout: float = STARTUP_SECONDS) -> str:
        """The first line starting with ``prefix``, once printed; fails if the child died."""
        deadline = time.monotonic() + timeout
        while (line := self.printed(prefix)) is None:
            if self.process.poll() is not None:
                self._reader.join(5)
                if (line := self.printed(prefix)) is not None:
                    return line
                pytest.fail(f"worker exited ({self.process.returncode}): {self.stderr()}")
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"worker never printed {prefix!r}; got {self.lines}: {self.stderr()}")
            time.sleep(0.01)
        return line

    def finish(self, timeout: float = STARTUP_SECONDS) -> list[str]:
        """Wait for a clean exit and return everything it printed."""
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"worker did not finish in {timeout}s; printed {self.lines}")
        self._reader.join(5)
        assert code == 0, self.stderr()
        return self.lines

    def kill(self) -> None:
        """SIGKILL to its process group: no cleanup handler, no finally block runs."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)
        self._reader.join(5)

    def stderr(self) -> str:
        if self.process.poll() is None or self.process.stderr is None:
            return ""
        return self.process.stderr.read()[-3000:]


@pytest.fixture()
def workers() -> Iterator[list[Worker]]:
    """Children started by a test; any still running when it ends are killed."""
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.kill()


def _start(workers: list[Worker], *args: object, single_thread: bool = True) -> Worker:
    worker = Worker(*args, single_thread=single_thread)
    workers.append(worker)
    return worker


def _epochs_done(out_dir: Path) -> int:
    with safe_open(str(out_dir / STATE_FILE), framework="pt") as handle:
        return int((handle.metadata() or {})["epochs_done"])


# ------------------------------------------------------------------------------ training


STEPS_PER_EPOCH = 60  # 0.5-1.5 s per epoch: a kill 0.1 s after epoch 1 lands inside epoch 2


def test_training_killed_mid_epoch_resumes_to_the_same_checkpoint(
    tmp_path: Path, workers: list[Worker]
) -> None:
    straight_dir, killed_dir, go = tmp_path / "straight", tmp_path / "killed", tmp_path / "go"
    # Processes "straight" and "victim" train at once; "resumer" starts on go, on killed_dir.
    fleet = _start(workers, "train", STEPS_PER_EPOCH, straight_dir, killed_dir, go)
    victim = int(fleet.wait_for("victim pid").split()[-1])

    fleet.wait_for("victim epoch 1")
    assert _epochs_done(killed_dir) == 1
    time.sleep(0.1)  # a few steps into epoch 2
    os.kill(victim, signal.SIGKILL)
    time.sleep(0.2)
    assert fleet.printed("victim epoch 2") is None
    assert _epochs_done(killed_dir) == 1, "the kill was meant to land inside epoch 2"
    # What the kill left is complete and loadable: epoch 1's weights.
    assert len(Hypernet.load(killed_dir).metadata["history"]) == 1

    go.touch()  # a new process resumes on the killed run's directory
    lines = fleet.finish()
    assert fleet.printed("victim done") is None
    assert [line for line in lines if line.startswith("resumer epoch")] == [
        f"resumer epoch {n}" for n in range(2, TRAIN_EPOCHS + 1)
    ], "the new process resumes after the last completed epoch, not from scratch"
    assert "straight done" in lines

    resumed_weights = load_file(str(killed_dir / WEIGHTS_FILE))
    straight_weights = load_file(str(straight_dir / WEIGHTS_FILE))
    assert resumed_weights.keys() == straight_weights.keys()
    for name, tensor in straight_weights.items():
        assert torch.equal(resumed_weights[name], tensor), name
    assert _epochs_done(killed_dir) == _epochs_done(straight_dir) == TRAIN_EPOCHS


# ------------------------------------------------------------------------------ atomic writes


def _read_version(path: Path) -> int:
    """A complete file of one version, or an exception: every value must be the version."""
    with safe_open(str(path), framework="np") as handle:
        version = int((handle.metadata() or {})["version"])
        values = handle.get_tensor("values")
    assert values.size == big_tensor(0, MEGABYTES)["values"].size
    assert bool((values == float(version)).all()), f"mixed contents in version {version}"
    return version


def _temporaries(target: Path) -> list[Path]:
    return sorted(target.parent.glob(f".{target.name}.*.tmp"))


def _wait_for_temporary(target: Path, timeout: float = 60.0) -> None:
    """Until a writer's temporary file beside ``target`` holds bytes: it is mid-write."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for tmp in _temporaries(target):
            try:
                if tmp.stat().st_size > 0:
                    return
            except FileNotFoundError:  # renamed over the target meanwhile
                pass
        time.sleep(0.001)
    pytest.fail(f"no temporary file appeared beside {target}")


MEGABYTES = 48


def test_killed_safetensors_write_leaves_the_old_file_whole(
    tmp_path: Path, workers: list[Worker]
) -> None:
    target = tmp_path / "model.safetensors"
    with atomic_path(target) as tmp:
        save_file(big_tensor(0, MEGABYTES), str(tmp), metadata={"version": "0"})
    writer = _start(workers, "write-safetensors", target, MEGABYTES, 1)

    # Readers racing the writer only ever see whole versions, never a growing file.
    seen: set[int] = set()
    deadline = time.monotonic() + STARTUP_SECONDS
    while "wrote 3" not in writer.lines and time.monotonic() < deadline:
        seen.add(_read_version(target))
    assert "wrote 3" in writer.lines, writer.stderr()
    assert len(seen) >= 2, "the reads should have overlapped several rewrites"

    _wait_for_temporary(target)
    writer.kill()
    last = max(int(line.split()[1]) for line in writer.lines if line.startswith("wrote"))
    assert _read_version(target) in {last, last + 1}
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == [target.name]

    # The next run writes over it normally; the killed writer's temporary is never read.
    with atomic_path(target) as tmp:
        save_file(big_tensor(99, MEGABYTES), str(tmp), metadata={"version": "99"})
    assert _read_version(target) == 99


def _consistent_version(base: Path) -> int:
    """The stored embeddings' version, checking that ids and vectors come from one write."""
    embeddings = load_value(base)
    assert isinstance(embeddings, Embeddings)
    versions = {row_id.split("-")[0] for row_id in embeddings.ids}
    assert len(versions) == 1, versions
    version = int(versions.pop().removeprefix("v"))
    assert bool((embeddings.vectors == float(version)).all()), (
        f"ids of version {version} paired with vectors of version {embeddings.vectors[0, 0]}"
    )
    return version


def test_killed_pipeline_store_never_pairs_ids_with_other_vectors(
    tmp_path: Path, workers: list[Worker]
) -> None:
    """The IO manager stores embeddings as two files (vectors .npy, ids .parquet).

    A write killed between them must not read back as a silent mix of two versions, and the
    next materialization must complete.
    """
    base = tmp_path / "doc_embeddings" / "scifact"
    rows = 24_000  # ~37 MB of vectors
    save_value(Embeddings([f"v0-d{i}" for i in range(rows)], np.zeros((rows, 384), "f4")), base)
    writer = _start(workers, "write-embeddings", base, rows, 1)
    writer.wait_for("wrote 1")
    vectors_path = stored_path(base)
    assert vectors_path is not None
    _wait_for_temporary(vectors_path)
    writer.kill()

    try:
        _consistent_version(base)
    except ValueError as error:  # a detected mix is fine: it names the files and the cure
        # (the files' digests or the ids' own check sees it first, depending on the kill)
        message = str(error)
        assert str(vectors_path) in message, message
        assert "interrupted" in message or "changed since written" in message, message
    save_value(Embeddings([f"v7-d{i}" for i in range(rows)], np.full((rows, 384), 7.0, "f4")), base)
    assert _consistent_version(base) == 7


# ------------------------------------------------------------------------------ shared cache


def test_two_processes_encoding_one_corpus_leave_one_valid_entry_per_text(
    tmp_path: Path, workers: list[Worker], encoder: FrozenEncoder
) -> None:
    cache_path, go = tmp_path / "shared" / "embeddings.sqlite", tmp_path / "go"
    # Default torch threads, like the test process whose lone encode they are compared to.
    racers = _start(workers, "encode", cache_path, go, tmp_path / "vectors", 2, single_thread=False)
    for index in range(2):
        racers.wait_for(f"racer-{index} pid")
    go.touch()
    racers.finish()
    reports = [racers.wait_for(f"racer-{index} encoded") for index in range(2)]
    encoded = [int(report.split()[2]) for report in reports]
    assert sum(encoded) >= len(ENCODE_TEXTS), reports  # nobody skipped work it needed

    first, second = (np.load(tmp_path / f"vectors-{index}.npy") for index in range(2))
    np.testing.assert_array_equal(first, second)

    keys = [text_key(text) for text in ENCODE_TEXTS]
    with sqlite3.connect(cache_path) as db:
        rows = db.execute(
            "SELECT model, role, text_sha256, vector, crc32 FROM embeddings"
        ).fetchall()
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert len(rows) == len(set(keys)) == len(ENCODE_TEXTS)
    assert {row[2] for row in rows} == set(keys)
    assert {(row[0], row[1]) for row in rows} == {(encoder.identity, "document")}
    assert all(zlib.crc32(row[3]) == row[4] for row in rows)
    cached, found = EmbeddingCache(cache_path).get_matrix(encoder.identity, "document", keys)
    assert found.all()
    np.testing.assert_array_equal(cached, first)

    single = encoder.encode(ENCODE_TEXTS, "document")  # one process alone, its own cache
    np.testing.assert_array_equal(single, first)


# ------------------------------------------------------------------------------ stores down

TINY = TrainConfig(epochs=2, steps_per_epoch=3, pairs_per_task=16)
CLOSED_PORT = "http://127.0.0.1:9"  # discard port on loopback: nothing listens there


class TrainingInputs(TypedDict):
    cards: dict[str, TaskCard]
    documents: dict[str, Embeddings]
    queries: dict[str, Embeddings]
    training_queries: dict[str, pl.DataFrame]
    pairs: dict[str, pl.DataFrame]
    fusion_examples: dict[str, pl.DataFrame]


@pytest.fixture(scope="module")
def training_inputs(scifact_slice: RetrievalTask, encoder: FrozenEncoder) -> TrainingInputs:
    """What the pipeline's hypernet asset receives, built by the pipeline's own stages."""
    task = scifact_slice.head(80, 10)
    training = training_queries(task)
    opened = OpenedTask(task, encoder)
    documents = document_embeddings(opened)
    queries = query_embeddings(encoder, training)
    fused = fuse_teachers(
        {"bm25": bm25_rankings(opened, training), "base": dense_rankings(documents, queries)}
    )
    return {
        "cards": {"scifact": find_card("scifact")},
        "documents": {"scifact": documents},
        "queries": {"scifact": queries},
        "training_queries": {"scifact": training},
        "pairs": {"scifact": distillation_pairs(fused, training)},
        "fusion_examples": {
            "scifact": examples_frame(card_fusion_examples(find_card("scifact"), opened, encoder))
        },
    }


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> TrackingTarget:
    """A working local MLflow store (sqlite), shared: creating one takes seconds."""
    root = tmp_path_factory.mktemp("mlflow")
    return TrackingTarget(
        f"sqlite:///{root / 'mlflow.db'}", "hydra", "hydra-hypernet", root / "mlartifacts"
    )


def test_unreachable_mlflow_still_saves_the_checkpoint_and_says_what_to_fix(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    encoder: FrozenEncoder,
    training_inputs: TrainingInputs,
    mlflow_store: TrackingTarget,
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    checkpoints = tmp_path / "checkpoints"
    down = TrackingTarget(CLOSED_PORT, "hydra", "hydra-hypernet")
    with pytest.raises(TrackingUnavailableError) as info:
        train_tracked(
            **training_inputs,
            encoder=encoder,
            config=TINY,
            checkpoints_dir=checkpoints,
            target=down,
        )
    message = str(info.value)
    assert CLOSED_PORT in message and "MLFLOW_TRACKING_URI" in message, message
    saved = info.value.checkpoint
    assert str(saved) in message and saved.parent == checkpoints
    assert _epochs_done(saved) == TINY.epochs
    Hypernet.load(saved)
    weights = (saved / WEIGHTS_FILE).read_bytes()

    # Once the store is fixed, the same call tracks the saved checkpoint without retraining.
    record = train_tracked(
        **training_inputs,
        encoder=encoder,
        config=TINY,
        checkpoints_dir=checkpoints,
        target=mlflow_store,
    )
    assert Path(record.path) == saved
    assert (saved / WEIGHTS_FILE).read_bytes() == weights
    client = MlflowClient(mlflow_store.tracking_uri)
    history = client.get_metric_history(record.mlflow_run_id, "pairwise")
    assert sorted(metric.step for metric in history) == list(range(1, TINY.epochs + 1))


def _results() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "task": ["scifact"],
            "method": ["hydra"],
            "split": ["test"],
            "metric": ["ndcg@10"],
            "value": [0.5],
        }
    )


def test_locked_duckdb_fails_clearly_and_keeps_the_checkpoint(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    workers: list[Worker],
    encoder: FrozenEncoder,
    training_inputs: TrainingInputs,
    mlflow_store: TrackingTarget,
) -> None:
    record = train_tracked(
        **training_inputs,
        encoder=encoder,
        config=TINY,
        checkpoints_dir=tmp_path / "checkpoints",
        target=mlflow_store,
    )
    database = str(tmp_path / "metrics.duckdb")
    holder = _start(workers, "hold-duckdb", database, 60)
    holder.wait_for("locked")
    monkeypatch.setattr(metrics_store, "_LOCK_WAIT_SECONDS", 1.0)  # not the default 2 minutes
    with pytest.raises(metrics_store.MetricsDbUnavailable) as info:
        metrics_store.record_metrics(
            database, _results(), run_id=record.mlflow_run_id, checkpoint=record.checkpoint_id
        )
    message = str(info.value)
    assert database in message and "HYDRA_METRICS_DB" in message and "lock" in message
    assert str(holder.process.pid) in message  # who holds it, from DuckDB itself
    Hypernet.load(record.path)  # the training result is untouched

    holder.kill()
    metrics_store.record_metrics(
        database, _results(), run_id=record.mlflow_run_id, checkpoint=record.checkpoint_id
    )
    assert metrics_store.latest_long(database)["checkpoint"].to_list() == [record.checkpoint_id]


def test_a_metrics_database_that_is_not_a_file_names_the_setting(tmp_path: Path) -> None:
    folder = tmp_path / "a-folder"
    folder.mkdir()
    with pytest.raises(metrics_store.MetricsDbUnavailable) as info:
        metrics_store.record_metrics(str(folder), _results(), run_id="r", checkpoint="c")
    assert str(folder) in str(info.value) and "HYDRA_METRICS_DB" in str(info.value)
