"""Training queries: where the teachers' orderings come from, never from a test split.

A task's ``train`` split queries are used when it has one (only their text: the teachers,
not the labels, decide what is relevant). A task with no training split gets queries
generated from its own corpus: a run of 5-12 consecutive words of a random document
(title and body, as written). Chosen on validation labels, by training per-task heads on
generated queries only (SciFact train holdout, NFCorpus dev; NDCG@10 change after 800
steps): titles or 3-6 stopword-free words, the first generator, -0.032 / +0.004; these
runs of words +0.006 / +0.003. Generated queries carry the id of the document they came
from, so a test can check that none of them is a test query.
"""

from __future__ import annotations

import random

import polars as pl

from hydra_core.data.retrieval_task import RetrievalTask

TRAINING_SPLITS = ("train",)
"""Splits whose query texts may train. ``dev`` is kept for model selection; never ``test``."""

EVALUATION_SPLIT = "test"

QUERY_WORDS = (5, 12)
"""Length range, in words, of a generated query."""
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
        query = _pseudo_query(f"{title} {text}", rng)
        if query:
            queries.append({"query_id": f"gen-{doc_id}", "text": query, "origin": "generated"})
    return pl.DataFrame(queries, schema=SCHEMA)


def _pseudo_query(text: str, rng: random.Random) -> str:
    """A run of ``QUERY_WORDS`` consecutive words of ``text``; empty if it is shorter."""
    words = text.split()
    length = rng.randint(*QUERY_WORDS)
    if len(words) < length:
        return ""
    start = rng.randrange(0, len(words) - length + 1)
    return " ".join(words[start : start + length]).strip(" ,.;:")


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
