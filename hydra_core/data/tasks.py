"""Retrieval tasks: a corpus, queries and per-split relevance judgments, from disk or ir_datasets.

Everything downstream (BM25, encoders, metrics, the hypernetwork) sees one
:class:`RetrievalTask` whatever the data came from:

- a folder in BEIR layout (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``), which is
  validated strictly so that a broken file fails here with ``file:line`` instead of as a silently
  wrong metric later;
- an ir_datasets id (``beir/scifact``, ``cranfield``), looked up first as a BEIR folder of the same
  name in the data dir, because machines here cannot reach the ir_datasets download hosts.

Loading never writes to the dataset folder. ``ir_datasets`` is imported only when it is really
needed: importing it creates folders under ``~/.ir_datasets``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from hydra_core.errors import HydraInputError
from hydra_core.settings import load_settings

_log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "dev", "test")
"""Split names in the order they are listed; other qrels file names sort after these."""

QRELS_HEADER: tuple[str, str, str] = ("query-id", "corpus-id", "score")

CORPUS_SCHEMA: dict[str, pl.DataType] = {
    "doc_id": pl.String(),
    "title": pl.String(),
    "text": pl.String(),
}
QUERIES_SCHEMA: dict[str, pl.DataType] = {"query_id": pl.String(), "text": pl.String()}
QRELS_SCHEMA: dict[str, pl.DataType] = {
    "query_id": pl.String(),
    "doc_id": pl.String(),
    "score": pl.Int64(),
}


class UnknownSplitError(HydraInputError, KeyError):
    """A split that the task has no qrels for; a ``KeyError`` so dict-style callers can catch it."""

    def __str__(self) -> str:
        # KeyError would repr() the message; keep the plain, readable text.
        return str(self.args[0]) if self.args else ""


def _split_order(split: str) -> tuple[int, str]:
    return (SPLITS.index(split) if split in SPLITS else len(SPLITS), split)


def _check_schema(frame: pl.DataFrame, schema: dict[str, pl.DataType], what: str) -> None:
    if dict(frame.schema) != schema:
        expected = ", ".join(f"{k}: {v}" for k, v in schema.items())
        actual = ", ".join(f"{k}: {v}" for k, v in frame.schema.items())
        raise ValueError(f"{what} must have columns ({expected}), got ({actual})")


@dataclass(frozen=True, eq=False, repr=False)
class RetrievalTask:
    """One retrieval task; frames are immutable by convention, so share them freely.

    ``eq=False``: comparing DataFrames field by field is neither cheap nor a boolean, so tasks
    compare (and hash) by identity.
    """

    name: str
    source: str
    corpus: pl.DataFrame
    queries: pl.DataFrame
    qrels: dict[str, pl.DataFrame]

    def __post_init__(self) -> None:
        _check_schema(self.corpus, CORPUS_SCHEMA, "corpus")
        _check_schema(self.queries, QUERIES_SCHEMA, "queries")
        for split, frame in self.qrels.items():
            _check_schema(frame, QRELS_SCHEMA, f"qrels[{split!r}]")

    def __repr__(self) -> str:
        sizes = {split: self.qrels[split].height for split in self.splits}
        return (
            f"RetrievalTask(name={self.name!r}, source={self.source!r}, "
            f"docs={self.corpus.height}, queries={self.queries.height}, qrels={sizes})"
        )

    @property
    def splits(self) -> list[str]:
        """Split names with qrels, train/dev/test first."""
        return sorted(self.qrels, key=_split_order)

    def split_qrels(self, split: str) -> pl.DataFrame:
        """Judgments of one split; an unknown split names the ones that exist."""
        try:
            return self.qrels[split]
        except KeyError:
            raise UnknownSplitError(
                f"task {self.name!r} has no {split!r} split; available: {', '.join(self.splits)}"
            ) from None

    def split_queries(self, split: str) -> pl.DataFrame:
        """Queries with at least one judgment (any score) in ``split``, in queries order."""
        judged = self.split_qrels(split)["query_id"].unique()
        return self.queries.filter(pl.col("query_id").is_in(judged.implode()))

    def with_qrels(self, qrels: dict[str, pl.DataFrame]) -> RetrievalTask:
        """The same corpus and queries judged by ``qrels`` alone (e.g. held-out labels)."""
        return RetrievalTask(self.name, self.source, self.corpus, self.queries, qrels)

    def qrels_dict(self, split: str) -> dict[str, dict[str, int]]:
        """``{query_id: {doc_id: score}}``, the shape pytrec_eval and friends take."""
        result: dict[str, dict[str, int]] = {}
        for query_id, doc_id, score in self.split_qrels(split).iter_rows():
            result.setdefault(query_id, {})[doc_id] = score
        return result

    def doc_texts(self) -> list[str]:
        """``(title + " " + text).strip()`` per document, the BEIR/MTEB encoding convention."""
        titles: list[str] = self.corpus["title"].to_list()
        texts: list[str] = self.corpus["text"].to_list()
        return [f"{title} {text}".strip() for title, text in zip(titles, texts, strict=True)]

    def head(self, n_docs: int, n_queries: int | None = None) -> RetrievalTask:
        """A small real slice for tests and smoke runs, with metrics that still mean something.

        Per split, keeps the first ``n_queries`` judged queries (all when ``None``). Documents
        judged for them come first: relevant ones before non-relevant, round-robin over queries
        (each query's first judged document, then each query's second, ...) so that as many
        queries as possible keep a relevant document when ``n_docs`` is tight. Unjudged
        documents, in corpus order, fill the rest up to ``n_docs``. Qrels keep only kept queries
        and documents; queries keep only those still judged somewhere. Corpus and queries stay in
        their original order.
        """
        if n_docs < 1:
            raise ValueError(f"n_docs must be at least 1, got {n_docs}")
        if n_queries is not None and n_queries < 1:
            raise ValueError(f"n_queries must be at least 1 or None, got {n_queries}")

        kept_qrels: dict[str, pl.DataFrame] = {}
        ranked: list[pl.DataFrame] = []
        for split_pos, split in enumerate(self.splits):
            judged = self.split_queries(split).select("query_id")
            if n_queries is not None:
                judged = judged.head(n_queries)
            qrels = self.qrels[split].filter(pl.col("query_id").is_in(judged["query_id"].implode()))
            kept_qrels[split] = qrels
            ranked.append(
                qrels.with_row_index("file_pos")
                .join(judged.with_row_index("query_pos"), on="query_id", how="inner")
                .with_columns(
                    (pl.col("score") <= 0).alias("non_relevant"),
                    pl.lit(split_pos, dtype=pl.UInt32).alias("split_pos"),
                )
                .with_columns(
                    pl.col("file_pos")
                    .rank("ordinal")
                    .over("query_id", "non_relevant")
                    .alias("rank_in_query")
                )
                .select("doc_id", "non_relevant", "rank_in_query", "split_pos", "query_pos")
            )

        if not ranked:  # a task built by hand without qrels: just the first documents
            ranked.append(
                pl.DataFrame(
                    schema={
                        "doc_id": pl.String(),
                        "non_relevant": pl.Boolean(),
                        "rank_in_query": pl.UInt32(),
                        "split_pos": pl.UInt32(),
                        "query_pos": pl.UInt32(),
                    }
                )
            )
        judged_docs = (
            pl.concat(ranked)
            .sort("non_relevant", "rank_in_query", "split_pos", "query_pos")
            .unique("doc_id", keep="first", maintain_order=True)
            .head(n_docs)["doc_id"]
        )
        fill = self.corpus.filter(~pl.col("doc_id").is_in(judged_docs.implode())).head(
            n_docs - judged_docs.len()
        )["doc_id"]
        kept_docs = pl.concat([judged_docs, fill]).implode()

        qrels = {
            split: frame.filter(pl.col("doc_id").is_in(kept_docs))
            for split, frame in kept_qrels.items()
        }
        judged_queries = pl.concat(
            [
                pl.Series("query_id", [], pl.String()),
                *(frame["query_id"] for frame in qrels.values()),
            ]
        ).unique()
        return RetrievalTask(
            name=self.name,
            source=self.source,
            corpus=self.corpus.filter(pl.col("doc_id").is_in(kept_docs)),
            queries=self.queries.filter(pl.col("query_id").is_in(judged_queries.implode())),
            qrels=qrels,
        )


# --------------------------------------------------------------------------- BEIR folders


def _read_lines(path: Path) -> list[str]:
    """The file's lines as UTF-8 text; split on ``\\n`` only (JSON strings may hold U+2028)."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise HydraInputError(f"not valid UTF-8 ({exc.reason})", path=path, line=line) from exc
    text = text.removeprefix("\ufeff")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", bool: "a boolean", type(None): "null"}
    for cls, label in names.items():
        if isinstance(value, cls):
            return label
    if isinstance(value, int | float):
        return "a number"
    return type(value).__name__


def _shown(value: str, limit: int = 60) -> str:
    """A value quoted for an error message, cut short: a 1 MB id must not make a 1 MB error."""
    return repr(value) if len(value) <= limit else f"{value[:limit]!r}... ({len(value):,} chars)"


def _parse_object(line: str, path: Path, lineno: int) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        raise HydraInputError(
            f"invalid JSON: {exc.msg} (column {exc.colno})", path=path, line=lineno
        ) from None
    except RecursionError:
        raise HydraInputError("invalid JSON: nested too deeply", path=path, line=lineno) from None
    if not isinstance(value, dict):
        raise HydraInputError(
            f"expected a JSON object per line, got {_json_type(value)}", path=path, line=lineno
        )
    return value


def _string_field(
    record: dict[str, Any], field: str, path: Path, lineno: int, *, required: bool
) -> str:
    if field not in record:
        if required:
            raise HydraInputError(f"missing {field!r}", path=path, line=lineno, field=field)
        return ""
    value = record[field]
    if not isinstance(value, str):
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        hint = f' (write it as "{value}")' if field == "_id" and is_number else ""
        shown = "" if value is None else f" {json.dumps(value)[:40]}"
        raise HydraInputError(
            f"must be a JSON string, got {_json_type(value)}{shown}{hint}",
            path=path,
            line=lineno,
            field=field,
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone "\ud800"-style escape: valid JSON, not text
        raise HydraInputError(
            f"contains an unpaired surrogate escape ({value[exc.start]!r} at character "
            f"{exc.start}), which is not valid Unicode text",
            path=path,
            line=lineno,
            field=field,
        ) from None
    return value


def _record_id(record: dict[str, Any], seen: dict[str, int], path: Path, lineno: int) -> str:
    record_id = _string_field(record, "_id", path, lineno, required=True)
    if not record_id.strip():
        raise HydraInputError("empty id", path=path, line=lineno, field="_id")
    if record_id in seen:
        raise HydraInputError(
            f"duplicate id {_shown(record_id)} (first on line {seen[record_id]})",
            path=path,
            line=lineno,
            field="_id",
        )
    seen[record_id] = lineno
    return record_id


def _records(path: Path) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """Each non-blank line of a JSONL file: its number, its checked ``_id`` and its object."""
    seen: dict[str, int] = {}
    for lineno, line in enumerate(_read_lines(path), start=1):
        if line.strip():
            record = _parse_object(line, path, lineno)
            yield lineno, _record_id(record, seen, path, lineno), record


def _read_corpus(path: Path) -> pl.DataFrame:
    """Documents in file order; an empty title *and* text is allowed (Cranfield 471 and 995)."""
    ids: list[str] = []
    titles: list[str] = []
    texts: list[str] = []
    for lineno, record_id, record in _records(path):
        ids.append(record_id)
        titles.append(_string_field(record, "title", path, lineno, required=False))
        texts.append(_string_field(record, "text", path, lineno, required=True))
    if not ids:
        raise HydraInputError("no documents: the corpus file is empty", path=path)
    if not any(title.strip() or text.strip() for title, text in zip(titles, texts, strict=True)):
        raise HydraInputError("every document has an empty title and text", path=path)
    return pl.DataFrame({"doc_id": ids, "title": titles, "text": texts}, schema=CORPUS_SCHEMA)


def _read_queries(path: Path) -> pl.DataFrame:
    """Queries in file order; a query must have non-empty text, or there is nothing to search."""
    ids: list[str] = []
    texts: list[str] = []
    for lineno, record_id, record in _records(path):
        ids.append(record_id)
        text = _string_field(record, "text", path, lineno, required=True)
        if not text.strip():
            raise HydraInputError("empty query text", path=path, line=lineno, field="text")
        texts.append(text)
    if not ids:
        raise HydraInputError("no queries: the queries file is empty", path=path)
    return pl.DataFrame({"query_id": ids, "text": texts}, schema=QUERIES_SCHEMA)


def read_qrels_file(path: Path, task: RetrievalTask) -> pl.DataFrame:
    """Judgments of ``task``'s queries and documents from a BEIR qrels TSV (e.g. a user's own
    labels), checked as a split file is: the first bad line is named."""
    return _read_qrels(path, task.queries["query_id"], task.corpus["doc_id"])


def _read_qrels(path: Path, query_ids: pl.Series, doc_ids: pl.Series) -> pl.DataFrame:
    """One qrels TSV, checked row by row with polars; the earliest bad line is reported."""
    header_text = "\t".join(QRELS_HEADER)
    lines = _read_lines(path)
    if not lines or not "".join(lines).strip():
        raise HydraInputError(f"empty file; expected the header {header_text!r}", path=path)
    header = [cell.strip() for cell in lines[0].split("\t")]
    if header != list(QRELS_HEADER):
        if len(header) == 3 and header[2].lstrip("+-").isdigit():
            problem = f"missing header line; the first line must be {header_text!r}"
        else:
            problem = f"expected the header {header_text!r}, got {_shown(lines[0].strip())}"
        raise HydraInputError(problem, path=path, line=1)

    parts = pl.col("raw").str.split("\t")
    table = (
        pl.DataFrame({"raw": lines[1:]}, schema={"raw": pl.String()})
        .with_row_index("line", offset=2)
        .filter(pl.col("raw").str.strip_chars() != "")
        .with_columns(
            parts.list.len().alias("columns"),
            parts.list.get(0, null_on_oob=True).str.strip_chars().alias("query_id"),
            parts.list.get(1, null_on_oob=True).str.strip_chars().alias("doc_id"),
            parts.list.get(2, null_on_oob=True).str.strip_chars().alias("score_text"),
        )
        .with_columns(pl.col("score_text").cast(pl.Int64, strict=False).alias("score"))
    )
    if table.height == 0:
        raise HydraInputError("no judgments after the header", path=path)

    bad = table.filter(
        (pl.col("columns") != 3)
        | pl.col("score").is_null()
        | ~pl.col("query_id").is_in(query_ids.implode())
        | ~pl.col("doc_id").is_in(doc_ids.implode())
        | ~pl.struct("query_id", "doc_id").is_first_distinct()
    )
    if bad.height:
        _raise_qrels_row_error(bad.row(0, named=True), table, path, query_ids)
    if not (table["score"] > 0).any():
        raise HydraInputError(
            "no positive judgment (every score is 0 or less): every method would score 0",
            path=path,
        )
    return table.select("query_id", "doc_id", "score")


def _raise_qrels_row_error(
    row: dict[str, Any], table: pl.DataFrame, path: Path, query_ids: pl.Series
) -> None:
    """Explain what is wrong with the first bad qrels row."""
    lineno: int = row["line"]
    if row["columns"] != 3:
        hint = " (is the file tab-separated?)" if row["columns"] == 1 and " " in row["raw"] else ""
        raise HydraInputError(
            f"expected 3 tab-separated columns (query-id, corpus-id, score), "
            f"got {row['columns']}{hint}",
            path=path,
            line=lineno,
        )
    if row["score"] is None:
        raise HydraInputError(
            f"score {_shown(row['score_text'])} is not an integer (or is out of range)",
            path=path,
            line=lineno,
            field="score",
        )
    query_id: str = row["query_id"]
    doc_id: str = row["doc_id"]
    if not (query_ids == query_id).any():
        raise HydraInputError(
            f"unknown query id {_shown(query_id)}: not in queries.jsonl",
            path=path,
            line=lineno,
            field="query-id",
        )
    same_pair = table.filter((pl.col("query_id") == query_id) & (pl.col("doc_id") == doc_id))
    first: int = same_pair["line"][0]
    if first == lineno:
        raise HydraInputError(
            f"unknown document id {_shown(doc_id)}: not in corpus.jsonl",
            path=path,
            line=lineno,
            field="corpus-id",
        )
    raise HydraInputError(
        f"duplicate judgment for query {_shown(query_id)} and document {_shown(doc_id)} "
        f"(first on line {first})",
        path=path,
        line=lineno,
    )


def load_beir_folder(path: Path | str, name: str | None = None) -> RetrievalTask:
    """Load and validate a BEIR-layout folder; every split file in ``qrels/`` becomes a split."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise HydraInputError("no such folder (expected a BEIR dataset folder)", path=folder)
    layout = "a BEIR folder holds corpus.jsonl, queries.jsonl and qrels/<split>.tsv"
    corpus_path = folder / "corpus.jsonl"
    queries_path = folder / "queries.jsonl"
    qrels_dir = folder / "qrels"
    for required in (corpus_path, queries_path):
        if not required.is_file():
            raise HydraInputError(f"file not found; {layout}", path=required)
    if not qrels_dir.is_dir():
        raise HydraInputError(f"qrels folder not found; {layout}", path=qrels_dir)
    split_files = sorted(
        (p for p in qrels_dir.glob("*.tsv") if p.is_file()), key=lambda p: _split_order(p.stem)
    )
    if not split_files:
        raise HydraInputError(f"no <split>.tsv files; {layout}", path=qrels_dir)

    corpus = _read_corpus(corpus_path)
    queries = _read_queries(queries_path)
    qrels = {p.stem: _read_qrels(p, queries["query_id"], corpus["doc_id"]) for p in split_files}
    resolved = folder.resolve()
    return RetrievalTask(
        name=name or resolved.name,
        source=str(resolved),
        corpus=corpus,
        queries=queries,
        qrels=qrels,
    )


# --------------------------------------------------------------------------- names and ids


def _looks_like_path(source: str) -> bool:
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
    if _looks_like_path(cleaned) or (cleaned and Path(cleaned).is_dir()):
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


def load_ir_datasets(dataset_id: str, name: str | None = None) -> RetrievalTask:
    """Load through ir_datasets: docs of the base id, queries and qrels of every split subset.

    A split suffix (``beir/scifact/test``) is dropped: a task always carries all its splits, and
    callers pick one with :meth:`RetrievalTask.split_qrels`.
    """
    return _load_ir_datasets(dataset_id, name=name, hint="")


def _load_ir_datasets(dataset_id: str, *, name: str | None, hint: str) -> RetrievalTask:
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


# --------------------------------------------------------------------------- entry point


def load_task(
    source: str,
    *,
    base_dir: Path | None = None,
    data_dir: Path | None = None,
    name: str | None = None,
) -> RetrievalTask:
    """Load a task from a BEIR folder path or an ir_datasets id.

    An existing folder (relative paths resolve against ``base_dir``, e.g. a card's folder, else
    the working directory) is read as BEIR layout. Anything else is an ir_datasets id: a folder
    named :func:`dataset_name` in ``data_dir`` (default: settings) wins over downloading.
    """
    cleaned = source.strip()
    if not cleaned:
        raise HydraInputError("empty task source: give a folder path or an ir_datasets id")
    candidate = Path(cleaned).expanduser()
    if not candidate.is_absolute() and base_dir is not None:
        candidate = Path(base_dir) / candidate
    if candidate.is_dir():
        return load_beir_folder(candidate, name=name)
    if candidate.exists():
        raise HydraInputError("expected a BEIR dataset folder, got a file", path=candidate)
    if _looks_like_path(cleaned):
        raise HydraInputError("no such folder (expected a BEIR dataset folder)", path=candidate)

    if data_dir is None:
        data_dir = load_settings().data_dir
    short_name = dataset_name(cleaned)
    if data_dir is not None:
        local = Path(data_dir) / short_name
        if local.is_dir():
            return load_beir_folder(local, name=name or short_name)
        hint = f"; no folder {local} either"
    else:
        hint = "; no data dir is set (HYDRA_DATA_DIR) to look for a local copy"
    return _load_ir_datasets(cleaned, name=name, hint=hint)
