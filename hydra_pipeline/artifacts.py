"""Stored results of the pipeline stages, as files other tools can open.

Frames are parquet (polars, DuckDB and pandas read them), embeddings are ``.npy`` arrays
with their row ids in a parquet file beside them, small records are JSON, compiled
retrievers and checkpoints are safetensors. Every write is atomic, so a reader (another
run, the Dagster UI, a DuckDB query) never sees half a file. A task's qrels are one long
frame with a ``split`` column, so one file holds all splits.

Beside each stored value, ``<base>.sha256.json`` records the SHA-256 of its files; a read
checks them, so a file damaged or truncated after it was written is named, not parsed, and
``hydra run`` rebuilds it (:func:`damage`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from hydra_core.atomic import atomic_path, write_text_atomic
from hydra_core.data.beir_folder import QRELS_HEADER
from hydra_core.data.cards import TaskCard
from hydra_core.data.opened_task import DocumentEncoder, OpenedTask
from hydra_core.data.retrieval_task import SPLITS, RetrievalTask
from hydra_core.encoding.embeddings import Embeddings
from hydra_core.errors import HydraInputError

QRELS_LONG_SCHEMA: dict[str, pl.DataType] = {
    "split": pl.String(),
    "query_id": pl.String(),
    "doc_id": pl.String(),
    "score": pl.Int64(),
}
IDS_SUFFIX = ".ids.parquet"
_DIGEST_KEY = "hydra.embeddings_digest"


@dataclass(frozen=True)
class CheckpointRecord:
    """A trained hypernet checkpoint and where it was tracked."""

    path: str
    checkpoint_id: str
    tasks: list[str]
    mlflow_run_id: str = ""
    tracking_uri: str = ""
    model_name: str = ""
    model_version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------ file formats


def save_frame(frame: pl.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.write_parquet(tmp)


def load_frame(path: Path) -> pl.DataFrame:
    return pl.read_parquet(path)


def embeddings_ids_path(path: Path) -> Path:
    return path.with_name(path.name.removesuffix(".npy") + IDS_SUFFIX)


def save_embeddings(embeddings: Embeddings, path: Path) -> None:
    """``path`` (.npy) gets the vectors; the ids go beside it. Ids are written first, so a
    reader that finds the array always finds ids for it. The ids file records the digest of
    ids and vectors together, so a write killed between the two files is caught on load
    rather than read back as ids paired with another write's vectors."""
    stored = Embeddings(
        ids=embeddings.ids, vectors=np.ascontiguousarray(embeddings.vectors, dtype=np.float32)
    )
    ids = pl.DataFrame({"id": stored.ids}, schema={"id": pl.String()})
    with atomic_path(embeddings_ids_path(path)) as tmp:
        ids.write_parquet(tmp, metadata={_DIGEST_KEY: stored.digest})
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, stored.vectors)


def load_embeddings(path: Path) -> Embeddings:
    ids_path = embeddings_ids_path(path)
    vectors = np.load(path)
    ids_file = ids_path.read_bytes()  # ids and their digest from one read of one file
    ids = pl.read_parquet(ids_file)["id"].to_list()
    expected = pl.read_parquet_metadata(ids_file).get(_DIGEST_KEY)
    try:
        embeddings: Embeddings | None = Embeddings(ids=ids, vectors=vectors)
    except ValueError:  # as many ids as rows is the least two files of one write agree on
        embeddings = None
    if embeddings is None or (expected is not None and embeddings.digest != expected):
        raise ValueError(
            f"{path} and {ids_path} come from different writes (a write was interrupted); "
            "materialize the asset again, e.g. with `hydra run --force`"
        )
    return embeddings


def save_json(data: dict[str, Any], path: Path) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def load_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def card_record(card: TaskCard) -> dict[str, Any]:
    """A card as JSON, with the file it came from (relative sources resolve against it)."""
    return {
        "card": card.model_dump(mode="json"),
        "card_path": str(card.card_path) if card.card_path is not None else None,
    }


def card_from_record(record: dict[str, Any]) -> TaskCard:
    card_path = record.get("card_path")
    return TaskCard.model_validate(
        {**record["card"], "card_path": Path(card_path) if card_path else None}
    )


# ------------------------------------------------------------------------------ any stored value

_SUFFIXES: tuple[str, ...] = (".parquet", ".npy", ".safetensors", ".json")
_DIGESTS = ".sha256.json"


def _with_suffix(base: Path, suffix: str) -> Path:
    return base.parent / f"{base.name}{suffix}"


def _files_of(path: Path) -> list[Path]:
    """The files one stored value occupies (embeddings: the array and its ids)."""
    return [path, embeddings_ids_path(path)] if path.suffix == ".npy" else [path]


def _digests(path: Path) -> dict[str, str]:
    """SHA-256 of each file of the value stored in ``path``, by file name."""
    digests = {}
    for file in _files_of(path):
        with open(file, "rb") as handle:
            digests[file.name] = hashlib.file_digest(handle, "sha256").hexdigest()
    return digests


def damage(path: Path) -> str | None:
    """Why the value stored in ``path`` cannot be trusted (a file missing, or not the
    bytes written), or ``None``. A value stored before digests were recorded passes."""
    record = _with_suffix(path.with_suffix(""), _DIGESTS)
    if not record.exists():
        return None
    expected = load_json(record)
    for file in _files_of(path):
        if not file.exists():
            return f"{file.name} is missing"
    actual = _digests(path)
    changed = [name for name, digest in expected.items() if actual.get(name) != digest]
    return f"{', '.join(changed)} changed since written (SHA-256)" if changed else None


def save_value(value: object, base: Path) -> Path:
    """Store a stage result at ``base`` plus the suffix of its format; returns the file.

    Frames become parquet, :class:`Embeddings` ``.npy``, compiled retrievers safetensors, cards
    and checkpoint records JSON. A file left by an earlier value of another format is
    removed, so :func:`load_value` never reads a stale one.
    """
    if isinstance(value, pl.DataFrame):
        path = _with_suffix(base, ".parquet")
        save_frame(value, path)
    elif isinstance(value, Embeddings):
        path = _with_suffix(base, ".npy")
        save_embeddings(value, path)
    elif isinstance(value, TaskCard):
        path = _with_suffix(base, ".json")
        save_json({"kind": "task_card", **card_record(value)}, path)
    elif isinstance(value, CheckpointRecord):
        path = _with_suffix(base, ".json")
        save_json({"kind": "checkpoint", **asdict(value)}, path)
    else:
        # imports torch: only when a retriever is saved
        from hydra_core.model.compiled_retriever import CompiledRetriever

        if not isinstance(value, CompiledRetriever):
            raise TypeError(f"no storage format for {type(value).__name__}")
        path = _with_suffix(base, ".safetensors")
        value.save(path)
    for suffix in _SUFFIXES:
        other = _with_suffix(base, suffix)
        if other != path and other.exists():
            other.unlink()
    save_json(_digests(path), _with_suffix(base, _DIGESTS))
    return path


def stored_path(base: Path) -> Path | None:
    """The file a value was stored in at ``base``, or ``None``."""
    for suffix in _SUFFIXES:
        if _with_suffix(base, suffix).exists():
            return _with_suffix(base, suffix)
    return None


def load_value(base: Path) -> Any:
    """Read back what :func:`save_value` stored at ``base``."""
    path = stored_path(base)
    if path is None:
        raise FileNotFoundError(f"nothing stored at {base} (looked for {', '.join(_SUFFIXES)})")
    problem = damage(path)
    if problem is not None:
        raise HydraInputError(f"damaged: {problem}; `hydra run` rebuilds it", path=path)
    if path.suffix == ".parquet":
        return load_frame(path)
    if path.suffix == ".npy":
        return load_embeddings(path)
    if path.suffix == ".safetensors":
        from hydra_core.model.compiled_retriever import CompiledRetriever

        return CompiledRetriever.load(path)
    data = load_json(path)
    kind = data.pop("kind", None)
    if kind == "task_card":
        return card_from_record(data)
    if kind == "checkpoint":
        return CheckpointRecord(**data)
    return data


# ------------------------------------------------------------------------------ tasks <-> frames


def qrels_long(task: RetrievalTask) -> pl.DataFrame:
    """All of a task's judgments in one frame, splits in train/dev/test order."""
    frames = [
        task.qrels[split].select(pl.lit(split).alias("split"), "query_id", "doc_id", "score")
        for split in task.splits
    ]
    if not frames:
        return pl.DataFrame(schema=QRELS_LONG_SCHEMA)
    return pl.concat(frames)


def task_from_frames(
    name: str, source: str, corpus: pl.DataFrame, queries: pl.DataFrame, qrels: pl.DataFrame
) -> RetrievalTask:
    """Rebuild a :class:`RetrievalTask` from stored frames (the inverse of ``qrels_long``)."""
    splits = qrels["split"].unique(maintain_order=True).to_list()
    return RetrievalTask(
        name=name,
        source=source,
        corpus=corpus,
        queries=queries,
        qrels={split: qrels.filter(pl.col("split") == split).drop("split") for split in splits},
    )


def stored_task(task: RetrievalTask, encoder: DocumentEncoder, documents: Embeddings) -> OpenedTask:
    """A task opened on its stored base document embeddings (nothing re-encoded)."""
    doc_ids = task.corpus["doc_id"].to_list()
    return OpenedTask(task, encoder, doc_vectors=documents.select(doc_ids))


def save_beir_folder(task: RetrievalTask, folder: Path) -> Path:
    """Write ``task`` as a BEIR folder that ``load_beir_folder`` reads back to the same task.

    Used to hand a slice of a real dataset to anything that takes a dataset path (a card's
    ``source``, a test, a colleague).
    """
    folder.mkdir(parents=True, exist_ok=True)
    corpus_lines = [
        json.dumps({"_id": doc_id, "title": title, "text": text}, ensure_ascii=False)
        for doc_id, title, text in task.corpus.iter_rows()
    ]
    write_text_atomic(folder / "corpus.jsonl", "\n".join(corpus_lines) + "\n")
    query_lines = [
        json.dumps({"_id": query_id, "text": text}, ensure_ascii=False)
        for query_id, text in task.queries.iter_rows()
    ]
    write_text_atomic(folder / "queries.jsonl", "\n".join(query_lines) + "\n")
    for split in sorted(task.qrels, key=lambda s: SPLITS.index(s) if s in SPLITS else len(SPLITS)):
        rows = ["\t".join(QRELS_HEADER)]
        rows += [f"{q}\t{d}\t{s}" for q, d, s in task.qrels[split].iter_rows()]
        write_text_atomic(folder / "qrels" / f"{split}.tsv", "\n".join(rows) + "\n")
    return folder
