"""Perturbed queries for robustness evaluation: typos, dropped or swapped words, noise, and
inflection changes, each at a rate, seeded per query.

Each kind is a function ``(text, rate, rng) -> text``. :meth:`Perturbation.apply` seeds
the generator from the run's seed and a stable hash of the query id, so a query's perturbed
text depends only on (kind, rate, seed, id, text): never on which other queries are present
or on their order, and the same in every process (Python's own ``hash`` is salted per run).
"""

from __future__ import annotations

import hashlib
import string
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import polars as pl

from hydra_core.data.retrieval_task import RetrievalTask
from hydra_core.errors import HydraInputError
from hydra_core.evaluation.method import HEADLINE_METRIC
from hydra_core.evaluation.report import ResultsTable

Perturb = Callable[[str, float, np.random.Generator], str]

LETTERS = string.ascii_lowercase
PUNCTUATION = ",.;:!?-"


def _random_letter(rng: np.random.Generator, other_than: str = "") -> str:
    choices = [letter for letter in LETTERS if letter != other_than.lower()]
    return choices[int(rng.integers(len(choices)))]


def _typo(word: str, rng: np.random.Generator) -> str:
    """One swap, deletion, substitution or insertion among the word's letters; always a
    change (a swap of equal letters or the deletion of a word's only letter substitutes)."""
    letters = [i for i, char in enumerate(word) if char.isalpha()]
    if not letters:
        return word
    operation = int(rng.integers(4))
    swappable = [i for i in letters if i + 1 in letters and word[i] != word[i + 1]]
    if operation == 0 and swappable:
        i = swappable[int(rng.integers(len(swappable)))]
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    i = letters[int(rng.integers(len(letters)))]
    if operation == 1 and len(letters) > 1:
        return word[:i] + word[i + 1 :]
    if operation == 3:
        return word[: i + 1] + _random_letter(rng) + word[i + 1 :]
    letter = _random_letter(rng, other_than=word[i])
    return word[:i] + (letter.upper() if word[i].isupper() else letter) + word[i + 1 :]


def typos(text: str, rate: float, rng: np.random.Generator) -> str:
    """Each word gets a typo with probability ``rate``: the misspellings of a hurried user."""
    return " ".join(_typo(w, rng) if rng.random() < rate else w for w in text.split())


def drop(text: str, rate: float, rng: np.random.Generator) -> str:
    """Each word is dropped with probability ``rate``; one word always stays, so a query is
    never empty (an empty query measures nothing)."""
    words = text.split()
    kept = [word for word in words if rng.random() >= rate]
    if words and not kept:
        kept = [words[int(rng.integers(len(words)))]]
    return " ".join(kept)


def swap(text: str, rate: float, rng: np.random.Generator) -> str:
    """Adjacent word pairs swapped with probability ``rate``, each word in at most one swap:
    the same bag of words (BM25 sees nothing), a different order (the encoder may)."""
    words = text.split()
    i = 0
    while i + 1 < len(words):
        if rng.random() < rate:
            words[i], words[i + 1] = words[i + 1], words[i]
            i += 2
        else:
            i += 1
    return " ".join(words)


def _noisy(word: str, rng: np.random.Generator) -> str:
    """The word's case flipped, or its punctuation removed (one mark added if it has none)."""
    if rng.random() < 0.5 and word.swapcase() != word:
        return word.swapcase()
    stripped = "".join(char for char in word if char not in string.punctuation)
    if stripped and stripped != word:
        return stripped
    return word + PUNCTUATION[int(rng.integers(len(PUNCTUATION)))]


def noise(text: str, rate: float, rng: np.random.Generator) -> str:
    """Each word with probability ``rate`` gets its case flipped or its punctuation removed
    or added: the formatting noise of pasted or typed-in-caps queries."""
    return " ".join(_noisy(w, rng) if rng.random() < rate else w for w in text.split())


def _inflected(word: str) -> str:
    """Plural <-> singular and ``-ing``/``-ed`` -> stem by a few English suffix rules."""
    lower = word.lower()
    if lower.endswith("ies"):
        return word[:-3] + "y"
    if lower.endswith(("sses", "xes", "ches", "shes")):
        return word[:-2]
    if lower.endswith("ing") and len(word) > 5:
        return word[:-3]
    if lower.endswith("ed") and len(word) > 4:
        return word[:-2]
    if lower.endswith("is"):
        return word[:-2] + "es"
    if lower.endswith("s") and not lower.endswith(("ss", "us")):
        return word[:-1]
    if lower.endswith("y") and lower[-2] not in "aeiou":
        return word[:-1] + "ies"
    if lower.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    return word + "s"


def inflect(text: str, rate: float, rng: np.random.Generator) -> str:
    """Each alphabetic word of four or more letters has its inflection changed with
    probability ``rate`` (``proteins`` -> ``protein``, ``cell`` -> ``cells``, ``reducing`` ->
    ``reduc``).

    The meaning-preserving kind: synonyms need a thesaurus or a model, and clause reordering
    rarely applies to short one-clause queries, whereas every query has inflected words.
    BM25 stems them away (Snowball), so this measures how much the dense side depends on a
    word's surface form.
    """
    words = text.split()
    return " ".join(
        _inflected(w) if w.isalpha() and len(w) >= 4 and rng.random() < rate else w for w in words
    )


KINDS: dict[str, tuple[Perturb, float]] = {
    "typos": (typos, 0.1),
    "drop": (drop, 0.2),
    "swap": (swap, 0.2),
    "noise": (noise, 0.2),
    "inflect": (inflect, 0.3),
}
"""Each kind's function and its default rate (of words affected)."""


def _query_seed(query_id: str) -> int:
    """A stable 64-bit hash of a query id, the same in every process."""
    return int.from_bytes(hashlib.blake2b(query_id.encode(), digest_size=8).digest(), "little")


@dataclass(frozen=True)
class Perturbation:
    """A kind at a rate with a seed: everything a perturbed query's text depends on."""

    kind: str
    rate: float
    seed: int = 0

    def apply(self, query_id: str, text: str) -> str:
        function, _ = KINDS[self.kind]
        rng = np.random.default_rng([self.seed, _query_seed(query_id)])
        return function(text, self.rate, rng)

    def __str__(self) -> str:
        return f"{self.kind}:{self.rate:g}"


def parse_perturbation(spec: str, seed: int = 0, *, label: str = "--perturb") -> Perturbation:
    """``KIND[:RATE]`` as a perturbation; a bad kind or rate is one line naming both the
    value (after ``label``, where it came from) and what is accepted."""
    kind, has_rate, rate_text = spec.strip().partition(":")
    expected = f"expected KIND[:RATE] with KIND one of {', '.join(KINDS)} and RATE in (0, 1]"
    given = f"{label} {spec!r}" if label else repr(spec)
    if kind not in KINDS:
        raise HydraInputError(f"{given}: unknown kind {kind!r}; {expected}")
    if not has_rate:
        return Perturbation(kind, KINDS[kind][1], seed)
    try:
        rate = float(rate_text)
    except ValueError:
        rate = float("nan")
    if not 0.0 < rate <= 1.0:  # also refuses nan
        raise HydraInputError(f"{given}: bad rate {rate_text!r}; {expected}")
    return Perturbation(kind, rate, seed)


def perturbed_task(task: RetrievalTask, perturbation: Perturbation, split: str) -> RetrievalTask:
    """The task with its ``split`` queries' texts perturbed: same ids, corpus and qrels, and
    other splits' queries untouched (training-side references stay as they were)."""
    judged = set(task.split_queries(split)["query_id"].to_list())
    ids: list[str] = task.queries["query_id"].to_list()
    texts: list[str] = task.queries["text"].to_list()
    perturbed = [
        perturbation.apply(query_id, text) if query_id in judged else text
        for query_id, text in zip(ids, texts, strict=True)
    ]
    queries = task.queries.with_columns(pl.Series("text", perturbed, dtype=pl.String))
    return replace(task, queries=queries)


@dataclass(frozen=True)
class Robustness:
    """Every method's tables on the clean and on the perturbed test queries."""

    perturbation: Perturbation
    clean: ResultsTable
    perturbed: ResultsTable

    def rows(self) -> dict[str, tuple[float, float, float]]:
        """Per method: clean, perturbed and the drop (perturbed - clean) in NDCG@10."""
        rows: dict[str, tuple[float, float, float]] = {}
        for method, metrics in self.clean.items():
            clean = metrics[HEADLINE_METRIC]
            perturbed = self.perturbed[method][HEADLINE_METRIC]
            rows[method] = (clean, perturbed, perturbed - clean)
        return rows

    def as_json(self) -> dict[str, object]:
        """``{"kind", "rate", "seed", "metric", "methods": {method: {"clean", "perturbed",
        "drop"}}}``."""
        methods = {
            method: {"clean": clean, "perturbed": perturbed, "drop": drop}
            for method, (clean, perturbed, drop) in self.rows().items()
        }
        return {
            "kind": self.perturbation.kind,
            "rate": self.perturbation.rate,
            "seed": self.perturbation.seed,
            "metric": HEADLINE_METRIC,
            "methods": methods,
        }
