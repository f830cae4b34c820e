"""The frozen encoder and its cache: real model, real SQLite file."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pytest
from pipeline_support import make_project
from system_tools import HYDRA, mounted

from hydra_core.data.retrieval_task import RetrievalTask
from hydra_core.encoding.embedding_cache import EmbeddingCache, text_key
from hydra_core.encoding.encoder import DEFAULT_MODEL, FrozenEncoder, resolve_model_path


def test_default_model_resolves_to_bundled_folder() -> None:
    path = Path(resolve_model_path(DEFAULT_MODEL))
    assert path.is_dir()
    assert (path / "modules.json").is_file()
    assert resolve_model_path("some/other-model") == "some/other-model"


def test_encodes_normalised_vectors_and_caches_them(tmp_path: Path) -> None:
    encoder = FrozenEncoder(cache=EmbeddingCache(tmp_path / "e.sqlite"), show_progress=False)
    texts = ["protein folding in yeast", "supersonic wing flutter", "protein folding in yeast"]
    first = encoder.encode(texts, "document")
    assert first.shape == (3, 384)
    assert first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(first[0], first[2])
    assert encoder.stats.encoded == 2

    # A fresh encoder on the same cache file encodes nothing and never loads the model.
    again = FrozenEncoder(cache=EmbeddingCache(tmp_path / "e.sqlite"), show_progress=False)
    second = again.encode(texts, "document")
    np.testing.assert_array_equal(first, second)
    assert (again.stats.encoded, again.stats.cached) == (0, 3)
    assert "model" not in again.__dict__

    # Cached and new texts mixed, a new one repeated: only the new one is encoded, once.
    mixed = ["wing flutter at mach two", *texts, "wing flutter at mach two"]
    third = again.encode(mixed, "document")
    assert (again.stats.encoded, again.stats.cached) == (1, 7)  # the repeat is not re-encoded
    np.testing.assert_array_equal(third[1:4], first)
    np.testing.assert_array_equal(third[0], third[4])
    np.testing.assert_allclose(np.linalg.norm(third, axis=1), 1.0, atol=1e-5)


def test_query_and_document_with_same_text_do_not_collide(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "e.sqlite")
    cache.put_many("m", "query", [text_key("same text")], np.ones((1, 4), np.float32))
    cache.put_many("m", "document", [text_key("same text")], np.zeros((1, 4), np.float32))
    assert cache.count() == 2
    key = text_key("same text")
    query, found = cache.get_matrix("m", "query", [key, "absent", key])
    document, _ = cache.get_matrix("m", "document", [key])
    assert query.tolist() == [[1, 1, 1, 1], [0, 0, 0, 0], [1, 1, 1, 1]]
    assert found.tolist() == [True, False, True]
    assert document.tolist() == [[0, 0, 0, 0]]
    nothing, found = cache.get_matrix("other-model", "query", [key])
    assert nothing.shape == (1, 0) and not found.any()


def test_model_identity_includes_weights_and_precision(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "e.sqlite")
    fp32 = FrozenEncoder(cache=cache, precision="fp32")
    bf16 = FrozenEncoder(cache=cache, precision="bf16")
    assert fp32.identity != bf16.identity
    assert fp32.identity.startswith(DEFAULT_MODEL + "@")


def test_bf16_matches_fp32(encoder: FrozenEncoder, tmp_path: Path) -> None:
    texts = ["dielectric constant of liquids measured with microwaves", "statins and cancer"]
    cache = EmbeddingCache(tmp_path / "e.sqlite")
    fp32 = FrozenEncoder(cache=cache, precision="fp32", show_progress=False).encode(texts, "query")
    bf16 = FrozenEncoder(cache=cache, precision="bf16", show_progress=False).encode(texts, "query")
    cosine = np.sum(fp32 * bf16, axis=1)
    assert cosine.min() > 0.999


def test_corrupted_entry_is_recomputed(tmp_path: Path) -> None:
    path = tmp_path / "e.sqlite"
    encoder = FrozenEncoder(cache=EmbeddingCache(path), show_progress=False)
    good = encoder.encode(["a corrupted cache entry"], "query")
    with sqlite3.connect(path) as db:
        db.execute("UPDATE embeddings SET vector = zeroblob(length(vector))")
    fresh = FrozenEncoder(cache=EmbeddingCache(path), show_progress=False)
    again = fresh.encode(["a corrupted cache entry"], "query")
    assert fresh.stats.encoded == 1
    np.testing.assert_allclose(again, good, atol=1e-6)


def _damage(path: Path, kind: str) -> None:
    data = bytearray(path.read_bytes())
    if kind == "truncated":
        del data[len(data) // 2 :]
    elif kind == "bad header":
        data[:16] = b"not a database!!"
    else:  # a damaged page in the middle
        middle = len(data) // 2
        data[middle : middle + 4096] = np.random.default_rng(0).bytes(4096)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("kind", ["truncated", "bad header", "damaged middle"])
def test_a_damaged_cache_file_is_set_aside_and_recomputed(tmp_path: Path, kind: str) -> None:
    """SQLite's own damage (not just a bad vector) used to end in a traceback."""
    path = tmp_path / "e.sqlite"
    texts = [f"document number {index} about wing flutter" for index in range(300)]
    good = FrozenEncoder(cache=EmbeddingCache(path), show_progress=False).encode(texts, "document")
    _damage(path, kind)
    fresh = FrozenEncoder(cache=EmbeddingCache(path), show_progress=False)
    again = fresh.encode(texts, "document")
    np.testing.assert_allclose(again, good, atol=1e-5)
    assert fresh.stats.encoded > 0  # what the damage took is encoded again
    if kind != "damaged middle":  # a damaged vector is caught by its checksum instead
        assert (tmp_path / "e.sqlite.corrupt").is_file()
    assert EmbeddingCache(path).count() == len(texts)


def test_a_command_over_a_damaged_cache_says_so_in_one_line(
    tmp_path: Path, scifact_slice: RetrievalTask
) -> None:
    project = make_project(tmp_path / "project", {"scifact": scifact_slice.head(30, 3)})
    cache = tmp_path / "cache"
    env = {**os.environ, **project.env(cache)}
    command = [str(HYDRA), "baselines", "scifact", "--json"]
    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    _damage(cache / "embeddings.sqlite", "bad header")
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout
    assert "Traceback" not in second.stderr
    damaged = [line for line in second.stderr.splitlines() if "damaged" in line]
    assert len(damaged) == 1
    assert damaged[0].endswith(
        f"embedding cache {cache / 'embeddings.sqlite'} is damaged (file is not a database): "
        "moved to embeddings.sqlite.corrupt, starting a new one"
    )


def test_a_full_disk_under_the_cache_is_one_line(
    tmp_path: Path, scifact_slice: RetrievalTask
) -> None:
    """A real 64 KB tmpfs holds the cache: SQLite's "database or disk is full" used to end
    in a traceback."""
    project = make_project(tmp_path / "project", {"scifact": scifact_slice.head(80, 3)})
    cache = tmp_path / "cache"
    cache.mkdir()
    env = {**os.environ, **project.env(cache), "HYDRA_ENCODER_BACKEND": "torch"}
    result = subprocess.run(
        mounted(f"mount -t tmpfs -o size=64k tmpfs {cache}", [str(HYDRA), "baselines", "scifact"]),
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"error: {cache / 'embeddings.sqlite'}: No space left on device"
    )


def test_store_false_reads_the_cache_but_writes_nothing(tmp_path: Path) -> None:
    """What ``hydra serve`` does with queries: users' text never lands in the cache file."""
    cache = EmbeddingCache(tmp_path / "e.sqlite")
    encoder = FrozenEncoder(cache=cache, show_progress=False)
    stored = encoder.encode(["a cached query"], "query")
    vectors = encoder.encode(["a cached query", "a private query"], "query", store=False)
    assert cache.count() == 1
    assert (encoder.stats.encoded, encoder.stats.cached) == (2, 1)
    np.testing.assert_array_equal(vectors[0], stored[0])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
