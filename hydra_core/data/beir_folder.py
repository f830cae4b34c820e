"""Reading a folder in BEIR layout (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``).

It is validated strictly so that a broken file fails here with ``file:line`` instead of as a
silently wrong metric later. Loading never writes to the dataset folder.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl

from hydra_core.data.retrieval_task import (
    CORPUS_SCHEMA,
    QUERIES_SCHEMA,
    RetrievalTask,
    split_order,
)
from hydra_core.errors import HydraInputError

QRELS_HEADER: tuple[str, str, str] = ("query-id", "corpus-id", "score")


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
        (p for p in qrels_dir.glob("*.tsv") if p.is_file()), key=lambda p: split_order(p.stem)
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
