"""Training queries: where the teachers' orderings come from, never from a test split.

A task's ``train`` split queries are used when it has one (only their text: the teachers,
not the labels, decide what is relevant). A task with no training split gets queries
generated from its own corpus: a document's title, or a window of its words with
stopwords dropped (a keyword query). Generated queries carry the id of the document they
came from, so a test can check that none of them is a test query.
"""

from __future__ import annotations

import random
import re

import polars as pl
from bm25s.stopwords import STOPWORDS_EN

from hydra_core.tasks import RetrievalTask

TRAINING_SPLITS = ("train",)
"""Splits whose query texts may train. ``dev`` is kept for model selection; never ``test``."""

EVALUATION_SPLIT = "test"

_WORD = re.compile(r"[A-Za-z][A-Za-z0-9\-]+")
_STOPWORDS = frozenset(STOPWORDS_EN)
SCHEMA = {"query_id": pl.Utf8, "text": pl.Utf8, "origin": pl.Utf8}


def generated_queries(task: RetrievalTask, n_queries: int, seed: int = 0) -> pl.DataFrame:
    """Up to ``n_queries`` pseudo-queries from distinct random documents of the corpus."""
    rng = random.Random(seed)
    rows = list(task.corpus.select("doc_id", "title", "text").iter_rows())
    rng.shuffle(rows)
    queries: list[dict[str, str]] = []
    for doc_id, title, text in rows:
        if len(queries) >= n_queries:
            break
        query = _pseudo_query(title, text, rng)
        if query:
            queries.append({"query_id": f"gen-{doc_id}", "text": query, "origin": "generated"})
    return pl.DataFrame(queries, schema=SCHEMA)


def _pseudo_query(title: str, text: str, rng: random.Random) -> str:
    """A title when the document has title and body, else a keyword window of the text."""
    if title.strip() and text.strip() and rng.random() < 0.5:
        return title.strip()
    words = [w for w in _WORD.findall(f"{title} {text}") if w.lower() not in _STOPWORDS]
    if len(words) < 3:
        return ""
    length = rng.randint(3, 6)
    start = rng.randrange(0, max(1, len(words) - length))
    return " ".join(words[start : start + length])


def training_queries(
    task: RetrievalTask, *, n_generated: int = 600, max_queries: int = 1000, seed: int = 0
) -> pl.DataFrame:
    """Queries to distil on: the task's training split if any, else generated ones.

    Returns ``query_id``, ``text``, ``origin``; at most ``max_queries`` rows (a seeded
    sample), and never a query that appears in the task's test split.
    """
    labelled = [
        task.split_queries(split).with_columns(pl.lit(split).alias("origin"))
        for split in TRAINING_SPLITS
        if split in task.splits
    ]
    if labelled:
        queries = pl.concat(labelled).unique("query_id", keep="first", maintain_order=True)
    else:
        queries = generated_queries(task, n_generated, seed)
    if EVALUATION_SPLIT in task.splits:
        test = task.split_queries(EVALUATION_SPLIT)
        queries = queries.join(test.select("query_id"), on="query_id", how="anti")
        queries = queries.filter(~pl.col("text").is_in(test["text"].implode()))
    if queries.height > max_queries:
        queries = queries.sample(max_queries, seed=seed).sort("query_id")
    return queries.select(list(SCHEMA))
