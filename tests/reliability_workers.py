"""Child processes for the reliability tests: work that a test kills, races or locks.

Run as ``python tests/reliability_workers.py <command> ...``. Each command does real work
through Hydra's own code (training, atomic writes, encoding, holding a DuckDB file), so the
test process can SIGKILL it at a bad moment or run two of them at once. Not collected by
pytest (the file name does not start with ``test_``).

Importing torch and sentence-transformers takes half a minute on a busy machine, so the
training and encoding commands import once and ``fork`` their real processes from there:
each is a separate process with its own pid, memory and files, killed or raced on its own.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np


def _say(line: str) -> None:
    print(line, flush=True)


def _wait_for(go_file: str) -> None:
    """A start line: processes get ready first (slow), then start work together on cue."""
    while go_file and not Path(go_file).exists():
        time.sleep(0.01)


def _fork(name: str, work: Callable[[], None]) -> int:
    """Run ``work`` in a new child process that announces its pid; returns the pid."""
    sys.stdout.flush()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        _say(f"{name} pid {os.getpid()}")
        work()
        code = 0
    except BaseException:  # a child must never return into the parent's code
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _reap(pids: list[int]) -> int:
    """Wait for the children; the number of them that failed (a SIGKILL counts as failed)."""
    return sum(os.waitpid(pid, 0)[1] != 0 for pid in pids)


# ------------------------------------------------------------------------------ training


def synthetic_tasks(n_tasks: int = 2, seed: int = 0) -> list:
    """Training tasks of random (but fixed) embeddings: the point is process death, not data."""
    import torch

    from hydra_core.encoding.card_parts import CARD_PARTS
    from hydra_core.training.trainer import TrainingTask

    generator = torch.Generator().manual_seed(seed)

    def unit(rows: int) -> torch.Tensor:
        vectors = torch.randn(rows, 384, generator=generator)
        return vectors / vectors.norm(dim=1, keepdim=True)

    tasks = []
    for index in range(n_tasks):
        n_queries, n_docs, n_pairs = 200, 1000, 4000
        tasks.append(
            TrainingTask(
                name=f"synthetic-{index}",
                card_parts=unit(len(CARD_PARTS)),
                query_vectors=unit(n_queries),
                doc_vectors=unit(n_docs),
                query_index=torch.randint(n_queries, (n_pairs,), generator=generator),
                pos_index=torch.randint(n_docs, (n_pairs,), generator=generator),
                neg_index=torch.randint(n_docs, (n_pairs,), generator=generator),
                weight=torch.rand(n_pairs, generator=generator),
            )
        )
    return tasks


TRAIN_EPOCHS = 3


def train(steps_per_epoch: str, straight_dir: str, victim_dir: str, go_file: str) -> None:
    """Three training processes: ``straight`` and ``victim`` start at once (the test kills the
    victim), ``resumer`` starts on ``victim_dir`` once ``go_file`` exists. Each prints its
    pid and every finished epoch."""
    import torch

    from hydra_core.training.trainer import TrainConfig, train_hypernet

    torch.set_num_threads(1)  # the same arithmetic in every process, and gentle on the CPU
    config = TrainConfig(
        epochs=TRAIN_EPOCHS, steps_per_epoch=int(steps_per_epoch), pairs_per_task=64
    )

    def job(name: str, out_dir: str) -> Callable[[], None]:
        def work() -> None:
            train_hypernet(
                synthetic_tasks(),
                config,
                out_dir,
                base_model="all-MiniLM-L6-v2",
                on_epoch=lambda epoch, _: _say(f"{name} epoch {epoch}"),
                show_progress=False,
            )
            _say(f"{name} done")

        return work

    straight = _fork("straight", job("straight", straight_dir))
    victim = _fork("victim", job("victim", victim_dir))
    _wait_for(go_file)
    resumer = _fork("resumer", job("resumer", victim_dir))
    failed = _reap([straight, resumer])
    _reap([victim])
    sys.exit(failed)


# ------------------------------------------------------------------------------ atomic writes


def big_tensor(version: int, megabytes: int) -> dict[str, np.ndarray]:
    """A large tensor whose every value is ``version``, so a partial read cannot pass for it."""
    return {"values": np.full(megabytes * 1024 * 1024 // 4, float(version), dtype=np.float32)}


def write_safetensors(target: str, megabytes: str, start: str) -> None:
    """Rewrite ``target`` forever through ``atomic_path``, version ``start``, ``start + 1``, ..."""
    from safetensors.numpy import save_file

    from hydra_core.atomic import atomic_path

    version = int(start)
    while True:
        tensors = big_tensor(version, int(megabytes))
        with atomic_path(target) as tmp:
            save_file(tensors, str(tmp), metadata={"version": str(version)})
        _say(f"wrote {version}")
        version += 1


def write_embeddings(base: str, rows: str, start: str) -> None:
    """Store :class:`Embeddings` at ``base`` forever through the pipeline's ``save_value``."""
    from hydra_core.encoding.embeddings import Embeddings
    from hydra_pipeline.artifacts import save_value

    version = int(start)
    n_rows = int(rows)
    while True:
        vectors = np.full((n_rows, 384), float(version), dtype=np.float32)
        ids = [f"v{version}-d{i}" for i in range(n_rows)]
        save_value(Embeddings(ids=ids, vectors=vectors), Path(base))
        _say(f"wrote {version}")
        version += 1


# ------------------------------------------------------------------------------ encoding


ENCODE_TEXTS = [
    f"{topic} {aspect}"
    for topic in (
        "protein folding",
        "supersonic wing flutter",
        "vitamin D and bone density",
        "compiler register allocation",
        "boundary layer transition",
        "statins and cancer risk",
        "information retrieval evaluation",
        "magnetic resonance imaging",
        "heat transfer in nozzles",
        "library catalogue search",
    )
    for aspect in ("measurements", "a review", "in children", "numerical methods", "open problems")
]


def encode(cache_path: str, go_file: str, out_prefix: str, racers: str) -> None:
    """``racers`` processes encode ENCODE_TEXTS into one cache file, all starting on cue.

    The model is loaded before forking, so the encodings themselves overlap; each process
    opens its own connections to the cache and writes ``<out_prefix>-<i>.npy``.
    """
    from hydra_core.encoding.embedding_cache import EmbeddingCache
    from hydra_core.encoding.encoder import FrozenEncoder

    encoder = FrozenEncoder(cache=EmbeddingCache(cache_path), show_progress=False)
    encoder.model  # noqa: B018  (load it once, before the processes split)

    def job(index: int) -> Callable[[], None]:
        def work() -> None:
            _wait_for(go_file)
            vectors = encoder.encode(ENCODE_TEXTS, "document")
            np.save(f"{out_prefix}-{index}.npy", vectors)
            _say(f"racer-{index} encoded {encoder.stats.encoded} cached {encoder.stats.cached}")

        return work

    pids = [_fork(f"racer-{index}", job(index)) for index in range(int(racers))]
    sys.exit(_reap(pids))


# ------------------------------------------------------------------------------ DuckDB


def hold_duckdb(database: str, seconds: str) -> None:
    """Hold ``database`` open for writing (DuckDB's file lock) for ``seconds``."""
    import duckdb

    connection = duckdb.connect(database)
    connection.execute("create table if not exists held (x int)")
    _say("locked")
    time.sleep(float(seconds))
    connection.close()


COMMANDS: dict[str, Callable[..., None]] = {
    "train": train,
    "write-safetensors": write_safetensors,
    "write-embeddings": write_embeddings,
    "encode": encode,
    "hold-duckdb": hold_duckdb,
}

if __name__ == "__main__":
    COMMANDS[sys.argv[1]](*sys.argv[2:])
