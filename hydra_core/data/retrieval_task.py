"""A retrieval task: a corpus, queries and per-split relevance judgments.

Everything downstream (BM25, encoders, metrics, the hypernetwork) sees one
:class:`RetrievalTask` whatever the data came from (``tasks.load_task``: a BEIR folder or an
ir_datasets id); its frames are checked against fixed schemas on construction.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from hydra_core.errors import HydraInputError

SPLITS: tuple[str, ...] = ("train", "dev", "test")
"""Split names in the order they are listed; other qrels file names sort after these."""


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


def split_order(split: str) -> tuple[int, str]:
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
        return sorted(self.qrels, key=split_order)

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
