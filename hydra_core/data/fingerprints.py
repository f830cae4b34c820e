"""Content fingerprints: short hashes that say whether an input or a result has changed.

The pipeline records one with every stored result (Dagster's data version) and compares
fingerprints of card files and dataset folders with the ones it saw last time, so that a
run rebuilds only what an edit really changed. Hashes are of content, never of
modification times: touching a file or checking it out again changes nothing.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import numpy as np
import polars as pl

from hydra_core.data.cards import TaskCard
from hydra_core.data.ir_datasets_source import dataset_name
from hydra_core.settings import load_settings

DIGEST_CHARS = 16


class _Digest(Protocol):
    def hexdigest(self) -> str: ...


_CHUNK = 1 << 20


def _short(digest: _Digest) -> str:
    return digest.hexdigest()[:DIGEST_CHARS]


def file_fingerprint(path: Path) -> str:
    """Hash of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return _short(digest)


def files_fingerprint(root: Path, files: Iterable[Path]) -> str:
    """Hash of several files' names (relative to ``root``) and bytes, in sorted order."""
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(file_fingerprint(path).encode())
    return _short(digest)


def beir_folder_fingerprint(folder: Path) -> str:
    """Hash of the files a BEIR folder is read from: corpus, queries and every qrels split."""
    files = [folder / "corpus.jsonl", folder / "queries.jsonl", *(folder / "qrels").glob("*.tsv")]
    return files_fingerprint(folder, [f for f in files if f.is_file()])


def card_source_folder(card: TaskCard, data_dir: Path | None = None) -> Path | None:
    """The BEIR folder a card's data is read from, resolved as ``load_task`` does.

    ``None`` means the source is an ir_datasets id with no local copy: its data is whatever
    that id names, so the id itself is the fingerprint.
    """
    base_dir = card.card_path.parent if card.card_path is not None else Path.cwd()
    candidate = Path(card.source).expanduser()
    if not candidate.is_absolute():
        candidate = base_dir / candidate
    if candidate.is_dir():
        return candidate.resolve()
    data_dir = data_dir if data_dir is not None else load_settings().data_dir
    if data_dir is not None and (data_dir / dataset_name(card.source)).is_dir():
        return (data_dir / dataset_name(card.source)).resolve()
    return None


def card_source_fingerprint(card: TaskCard, data_dir: Path | None = None) -> str:
    """Fingerprint of the dataset a card points at (its folder's files, or its id)."""
    folder = card_source_folder(card, data_dir)
    if folder is None:
        return f"ir_datasets:{card.source}"
    return beir_folder_fingerprint(folder)


def frame_digest(frame: pl.DataFrame) -> str:
    """Hash of a frame's schema and values, in row order (Arrow IPC bytes, uncompressed)."""
    buffer = io.BytesIO()
    frame.rechunk().write_ipc(buffer, compression="uncompressed")
    return _short(hashlib.sha256(buffer.getvalue()))


def array_digest(array: np.ndarray, ids: Iterable[str] = ()) -> str:
    """Hash of an array's dtype, shape and values, and of the ids naming its rows."""
    digest = hashlib.sha256()
    contiguous = np.ascontiguousarray(array)
    digest.update(f"{contiguous.dtype.str}{contiguous.shape}".encode())
    digest.update(contiguous.data)  # the array's own bytes, not a copy
    for row_id in ids:
        digest.update(row_id.encode())
        digest.update(b"\0")
    return _short(digest)


def text_digest(*parts: str) -> str:
    """Hash of a few strings (configs, names), unambiguous about where one ends."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\0")
    return _short(digest)
