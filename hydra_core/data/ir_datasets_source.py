"""Tasks through ir_datasets, and the names and ids of task sources.

An ir_datasets id (``beir/scifact``, ``cranfield``) names a task; its short name is also the
folder looked up in the data dir first, because machines here cannot reach the ir_datasets
download hosts. ``ir_datasets`` is imported only when it is really needed: importing it creates
folders under ``~/.ir_datasets``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import polars as pl

from hydra_core.data.retrieval_task import (
    CORPUS_SCHEMA,
    QRELS_SCHEMA,
    QUERIES_SCHEMA,
    SPLITS,
    RetrievalTask,
)
from hydra_core.errors import HydraInputError

_log = logging.getLogger(__name__)


def looks_like_path(source: str) -> bool:
    """Only unmistakable paths; ``beir/scifact`` has a ``/`` but is an ir_datasets id."""
    return (
        source.startswith((".", "~", "/"))
        or os.path.isabs(source)
        or "\\" in source
        or (os.altsep is not None and os.altsep in source)
    )


def parse_ir_datasets_id(dataset_id: str) -> tuple[str, str | None]:
    """Split ``beir/scifact/test`` into ``("beir/scifact", "test")``; no split gives ``None``."""
    cleaned = dataset_id.strip().strip("/")
    base, _, last = cleaned.rpartition("/")
    if base and last in SPLITS:
        return base, last
    return cleaned, None


def dataset_name(source: str) -> str:
    """Short name for a source, also the folder looked up in the data dir.

    ``beir/scifact`` and ``beir/scifact/test`` give ``scifact``; ``cranfield`` stays; deeper ids
    join their parts (``beir/cqadupstack/android`` gives ``cqadupstack-android``) so names stay
    unique; a folder path (one that looks like a path, or an existing folder) gives its name.
    """
    cleaned = source.strip()
    if looks_like_path(cleaned) or (cleaned and Path(cleaned).is_dir()):
        path = Path(cleaned).expanduser()
        return path.name or path.resolve().name
    base, _ = parse_ir_datasets_id(cleaned)
    parts = [part for part in base.split("/") if part]
    if len(parts) > 1 and parts[0] == "beir":
        parts = parts[1:]
    return "-".join(parts)


# --------------------------------------------------------------------------- ir_datasets


def _ir_datasets() -> Any:
    """Import lazily: the import itself creates folders under ``~/.ir_datasets``."""
    import ir_datasets

    return ir_datasets


def _ir_lookup(dataset_id: str) -> Any | None:
    """The registered dataset, or ``None``; lookups never download anything."""
    try:
        return _ir_datasets().registry[dataset_id]
    except KeyError:
        return None


def ir_datasets_split_ids(base_id: str) -> dict[str, str]:
    """``{split: ir_datasets id}`` whose qrels make each split of ``base_id``.

    BEIR-style ids have ``<base>/train|dev|test`` subsets; a dataset without them (cranfield,
    vaswani, beir/arguana) is a test collection, so its own qrels are the ``test`` split.
    An id unknown to ir_datasets gives ``{}``.
    """
    found: dict[str, str] = {}
    for split in SPLITS:
        subset = _ir_lookup(f"{base_id}/{split}")
        if subset is not None and subset.has_qrels():
            found[split] = f"{base_id}/{split}"
    if found:
        return found
    base = _ir_lookup(base_id)
    if base is not None and base.has_qrels():
        return {"test": base_id}
    return {}


def _ir_text(record: Any, field: str) -> str:
    value = getattr(record, field, None)
    if isinstance(value, str):
        return value
    default_text = getattr(record, "default_text", None)
    return str(default_text()) if callable(default_text) else ""


def _ir_corpus(dataset: Any) -> pl.DataFrame:
    """Docs with a ``title`` keep it; others (vaswani) get ``""``; text is ``text`` or else
    ir_datasets' ``default_text()`` (which may already hold the title, so title is then blank)."""
    ids: list[str] = []
    titles: list[str] = []
    texts: list[str] = []
    fields: tuple[str, ...] = tuple(dataset.docs_cls()._fields)
    has_text = "text" in fields
    has_title = "title" in fields and has_text
    for doc in dataset.docs_iter():
        ids.append(str(doc.doc_id))
        titles.append(str(doc.title or "") if has_title else "")
        texts.append(_ir_text(doc, "text") if has_text else str(doc.default_text()))
    corpus = pl.DataFrame({"doc_id": ids, "title": titles, "text": texts}, schema=CORPUS_SCHEMA)
    unique = corpus.unique("doc_id", keep="first", maintain_order=True)
    if unique.height < corpus.height:
        _log.warning("%s: dropped %d duplicate doc ids", dataset, corpus.height - unique.height)
    return unique


def _ir_queries(datasets: list[Any]) -> pl.DataFrame:
    """Union of the queries of several subsets; the first text seen for an id wins."""
    texts: dict[str, str] = {}
    for dataset in datasets:
        if not dataset.has_queries():
            continue
        for query in dataset.queries_iter():
            texts.setdefault(str(query.query_id), _ir_text(query, "text"))
    return pl.DataFrame(
        {"query_id": list(texts), "text": list(texts.values())}, schema=QUERIES_SCHEMA
    )


def _ir_qrels(dataset: Any, doc_ids: pl.Series, query_ids: pl.Series) -> pl.DataFrame:
    """Qrels rows whose query and document exist; upstream data cannot be fixed by the user,
    so dangling rows are dropped with a warning instead of failing the load."""
    rows = [(str(q.query_id), str(q.doc_id), int(q.relevance)) for q in dataset.qrels_iter()]
    frame = pl.DataFrame(rows, schema=QRELS_SCHEMA, orient="row")
    kept = frame.filter(
        pl.col("query_id").is_in(query_ids.implode()) & pl.col("doc_id").is_in(doc_ids.implode())
    )
    if kept.height < frame.height:
        _log.warning(
            "%s: dropped %d of %d qrels rows naming unknown queries or documents",
            dataset,
            frame.height - kept.height,
            frame.height,
        )
    return kept


def load_ir_datasets(dataset_id: str, name: str | None = None, *, hint: str = "") -> RetrievalTask:
    """Load through ir_datasets: docs of the base id, queries and qrels of every split subset.

    A split suffix (``beir/scifact/test``) is dropped: a task always carries all its splits, and
    callers pick one with :meth:`RetrievalTask.split_qrels`. ``hint`` ends each error line (where
    else the task was looked for).
    """
    base_id, _ = parse_ir_datasets_id(dataset_id)
    base = _ir_lookup(base_id)
    if base is None:
        base_id = dataset_id.strip().strip("/")  # maybe a dataset whose name ends in "test"
        base = _ir_lookup(base_id)
    if base is None:
        raise HydraInputError(f"{dataset_id!r} is not a known ir_datasets id{hint}")
    if not base.has_docs():
        raise HydraInputError(f"ir_datasets id {base_id!r} has no documents{hint}")
    split_ids = ir_datasets_split_ids(base_id)
    if not split_ids:
        raise HydraInputError(f"ir_datasets id {base_id!r} has no relevance judgments{hint}")
    try:
        corpus = _ir_corpus(base)
        subsets = {split: _ir_lookup(subset_id) for split, subset_id in split_ids.items()}
        queries = _ir_queries([base, *subsets.values()])
        qrels = {
            split: _ir_qrels(subset, corpus["doc_id"], queries["query_id"])
            for split, subset in subsets.items()
        }
    except HydraInputError:
        raise
    except Exception as exc:  # downloads fail in many ways; say what to do instead
        raise HydraInputError(
            f"could not load {base_id!r} through ir_datasets ({type(exc).__name__}: {exc}); "
            f"offline, put a BEIR folder named {dataset_name(base_id)!r} in the data dir "
            f"(HYDRA_DATA_DIR){hint}"
        ) from exc
    return RetrievalTask(
        name=name or dataset_name(base_id),
        source=base_id,
        corpus=corpus,
        queries=queries,
        qrels=qrels,
    )
