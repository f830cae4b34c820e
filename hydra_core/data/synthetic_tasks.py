"""Synthetic variants of a labelled task, whose best fusion lies far from the usual one.

A pool of real collections rarely shows the fusion a task unlike them needs, so each pool
task also teaches through variants built from its own corpus, queries and labels:

- ``cipher``: every letter of corpus, queries and card examples replaced by another, the
  same throughout (a script the encoder cannot read; BM25 matches words as before). The
  corpus is cut to the judged documents and a seeded sample of the others, at most
  :data:`CIPHER_DOCS`, since the encoder has to read it anew.
- ``keywords``: each query (and example query) cut to its three rarest words.
- ``titles``: each document cut to its title (corpora that have titles).

A variant is labelled like its task, so under leave-one-task-out it leaves with it.
"""

from __future__ import annotations

import random
import re
import string
from collections import Counter
from collections.abc import Callable

import polars as pl

from hydra_core.data.cards import TaskCard
from hydra_core.data.retrieval_task import RetrievalTask

VARIANTS = ("cipher", "keywords", "titles")
VARIANT_MARK = "~"
CIPHER_DOCS = 2_000
KEYWORDS = 3
_WORD = re.compile(r"[a-z0-9]+")
_SHORT_WORDS = 2


def _cipher() -> Callable[[str], str]:
    """A fixed letter substitution (seeded), upper and lower case alike."""
    letters = list(string.ascii_lowercase)
    shuffled = letters[:]
    random.Random(13).shuffle(shuffled)
    table = dict(zip(letters, shuffled, strict=True))
    table.update({key.upper(): value.upper() for key, value in table.items()})
    mapping = str.maketrans(table)
    return lambda text: text.translate(mapping)


def _rarest_words(doc_texts: list[str]) -> Callable[[str], str]:
    """A query's :data:`KEYWORDS` rarest words (by document frequency), in query order."""
    frequency = Counter(word for text in doc_texts for word in set(_WORD.findall(text.lower())))

    def keywords(text: str) -> str:
        words = list(dict.fromkeys(w for w in _WORD.findall(text.lower()) if len(w) > _SHORT_WORDS))
        rarest = set(sorted(words, key=lambda w: frequency.get(w, 0))[:KEYWORDS])
        kept = [word for word in words if word in rarest]
        return " ".join(kept) if kept else text

    return keywords


def _texts(
    frame: pl.DataFrame, columns: tuple[str, ...], change: Callable[[str], str]
) -> pl.DataFrame:
    return frame.with_columns(
        pl.col(column).map_elements(change, return_dtype=pl.Utf8) for column in columns
    )


def has_titles(task: RetrievalTask) -> bool:
    """Most documents have a title."""
    titled = task.corpus.filter(pl.col("title").str.len_chars() > 0).height
    return titled * 2 > task.corpus.height


def variant_names(task: RetrievalTask) -> list[str]:
    """The variants that make sense for ``task`` (``titles`` needs titled documents)."""
    return [name for name in VARIANTS if name != "titles" or has_titles(task)]


def made_from(name: str) -> str:
    """The task a variant named ``<task>~<kind>`` was made from (a task's own name: itself)."""
    return name.split(VARIANT_MARK)[0]


def synthetic_variant(
    task: RetrievalTask, card: TaskCard, kind: str
) -> tuple[RetrievalTask, TaskCard]:
    """The ``kind`` variant of ``task`` and its card, named ``<task>~<kind>``."""
    corpus, queries = task.corpus, task.queries
    examples = {
        "example_queries": card.example_queries,
        "example_documents": card.example_documents,
    }
    if kind == "cipher":
        change = _cipher()
        judged = pl.concat([frame["doc_id"] for frame in task.qrels.values()]).unique()
        others = corpus.filter(~pl.col("doc_id").is_in(judged.implode()))
        budget = max(CIPHER_DOCS - judged.len(), 0)
        kept = pl.concat([judged, others["doc_id"].sample(min(budget, others.height), seed=0)])
        corpus = _texts(
            corpus.filter(pl.col("doc_id").is_in(kept.implode())), ("title", "text"), change
        )
        queries = _texts(queries, ("text",), change)
        examples = {field: [change(text) for text in texts] for field, texts in examples.items()}
    elif kind == "keywords":
        change = _rarest_words(task.doc_texts())
        queries = _texts(queries, ("text",), change)
        examples["example_queries"] = [change(text) for text in card.example_queries]
    elif kind == "titles":
        corpus = corpus.with_columns(pl.col("title").alias("text"), pl.lit("").alias("title"))
        examples["example_documents"] = [text.split(". ")[0] for text in card.example_documents]
    else:
        raise ValueError(f"unknown synthetic variant {kind!r}; known: {', '.join(VARIANTS)}")
    name = f"{task.name}{VARIANT_MARK}{kind}"
    variant = RetrievalTask(
        name=name, source=task.source, corpus=corpus, queries=queries, qrels=task.qrels
    )
    return variant, card.model_copy(update={"name": name, **examples})
