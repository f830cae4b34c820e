"""Score fusion: how a compiled retriever mixes its lexical and dense channels.

Per query, the candidates are the union of each channel's top ``candidate_depth``. Each
channel's scores are z-normalised over those candidates (BM25 scores and cosines live on
unrelated scales, and their spread changes from query to query), then mixed with the
query's lexical weight: ``w * z(bm25) + (1 - w) * z(cos)``. With ``feedback > 0`` the dense
query first moves towards the mean of the first pass's top ``feedback_depth`` documents
(Rocchio pseudo-relevance feedback in the head's space), and the mix is computed again.

The weight and the feedback are the task's (``lexical_weight``, ``feedback``), moved per
query by a :class:`QueryGate` when the retriever has one: evidence each query carries
(:data:`QUERY_EVIDENCE`: its length, how many of its words BM25 knows, how peaked each
channel's scores are, how much the two channels agree) shifts both on the logit scale, so
a query whose words the encoder cannot read, or that BM25 barely matches, leans on the
other channel (:mod:`hydra_core.model.fusion_gate` learns the gate from labels).

Chosen on validation queries (SciFact's held-out fifth of train, NFCorpus dev), with the
frozen base as the dense channel: z over the union of both top-100s, lexical weight 0.4
(0.3 to 0.5 are within 0.001 on both); feedback 0.5 from the top 3 adds +0.000 on SciFact
and +0.008 on NFCorpus there (1.0 +0.011 on NFCorpus but -0.010 on SciFact; depth 5 or 10
no better).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hydra_core.errors import HydraInputError
from hydra_core.ranking.ann_index import HnswIndex
from hydra_core.ranking.teachers import BM25Index

_QUERY_CHUNK = 256
_STD_EPS = 1e-6
_AGREEMENT_DEPTH = 10

QUERY_EVIDENCE = ("log_words", "lexical_coverage", "lexical_peak", "dense_peak", "agreement")
"""Per-query evidence a gate reads: log word count, the share of the query's BM25 tokens in
the corpus' vocabulary, each channel's best z-score over the candidates, and the overlap of
the two channels' top 10."""


@dataclass(frozen=True)
class QueryGate:
    """Per-query shifts of the task's lexical weight and feedback, on the logit scale:
    ``logit(w_q) = logit(w) + sum(lexical[i] * (evidence[i] - center[i]))`` (feedback alike)."""

    center: tuple[float, ...]
    lexical: tuple[float, ...]
    feedback: tuple[float, ...]

    def __post_init__(self) -> None:
        sizes = {len(self.center), len(self.lexical), len(self.feedback)}
        if sizes != {len(QUERY_EVIDENCE)}:
            raise HydraInputError(f"a query gate has {len(QUERY_EVIDENCE)} coefficients a part")
        if not all(math.isfinite(v) for v in (*self.center, *self.lexical, *self.feedback)):
            raise HydraInputError("a query gate's coefficients must be finite")

    def shifts(self, evidence: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(queries x 1) logit shifts of the lexical weight and of the feedback."""
        centred = evidence - torch.tensor(self.center, dtype=evidence.dtype)
        lexical = centred @ torch.tensor(self.lexical, dtype=evidence.dtype)
        feedback = centred @ torch.tensor(self.feedback, dtype=evidence.dtype)
        return lexical.unsqueeze(1), feedback.unsqueeze(1)


@dataclass(frozen=True)
class FusionParameters:
    """What a card decides about mixing the channels (see the module docstring)."""

    lexical_weight: float
    feedback: float = 0.0
    feedback_depth: int = 3
    candidate_depth: int = 100
    bm25_b: float = 0.75
    """BM25's length normalisation of the lexical channel."""
    gate: QueryGate | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.lexical_weight <= 1.0 or math.isnan(self.lexical_weight):
            raise HydraInputError(f"lexical_weight must be in [0, 1], got {self.lexical_weight}")
        if not 0.0 <= self.feedback <= 100.0:
            raise HydraInputError(f"feedback must be in [0, 100], got {self.feedback}")
        for name in ("feedback_depth", "candidate_depth"):
            value = getattr(self, name)
            if not 1 <= value <= 10_000:
                raise HydraInputError(f"{name} must be in [1, 10000], got {value}")
        if not 0.0 <= self.bm25_b <= 1.0:
            raise HydraInputError(f"bm25_b must be in [0, 1], got {self.bm25_b}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def query_weights(
        self, evidence: torch.Tensor | None, rows: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows x 1) lexical weight and feedback per query: the task's, moved by the gate."""
        weight = torch.full((rows, 1), self.lexical_weight, dtype=torch.float32)
        feedback = torch.full((rows, 1), self.feedback, dtype=torch.float32)
        if self.gate is None or evidence is None:
            return weight, feedback
        lexical, extra = self.gate.shifts(evidence)
        return (
            torch.sigmoid(_logit(self.lexical_weight) + lexical),
            torch.sigmoid(_logit(self.feedback) + extra),
        )

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FusionParameters:
        """Parameters read from a file; an unknown or mistyped field is a clear error."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise HydraInputError(f"unknown fusion field(s) {unknown}; known: {sorted(known)}")
        try:
            gate = values.get("gate")
            return cls(
                lexical_weight=float(values["lexical_weight"]),
                feedback=float(values.get("feedback", 0.0)),
                feedback_depth=int(values.get("feedback_depth", 3)),
                candidate_depth=int(values.get("candidate_depth", 100)),
                bm25_b=float(values.get("bm25_b", 0.75)),
                gate=None if gate is None else QueryGate(**{k: tuple(gate[k]) for k in gate}),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise HydraInputError(f"bad fusion parameters ({error!r})") from None


def _logit(value: float) -> float:
    clipped = min(max(value, 1e-4), 1 - 1e-4)
    return math.log(clipped / (1 - clipped))


def top_rows(scores: torch.Tensor, depth: int) -> torch.Tensor:
    """Each row's ``depth`` best columns (fewer when there are fewer)."""
    return torch.topk(scores, min(depth, scores.shape[1]), dim=1).indices


def candidates(
    lexical_top: torch.Tensor, dense_top: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each query's candidates: the union of the lexical channel's top documents (given:
    feedback moves only the dense query, so they are found once) and the dense channel's.

    Returns (queries x both depths) document indices and a mask that is False on the second
    copy of a document both channels retrieved, so every candidate counts once.
    """
    both = torch.cat([lexical_top, dense_top], 1)
    ordered, _ = torch.sort(both, dim=1)
    valid = torch.ones_like(ordered, dtype=torch.bool)
    valid[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    return ordered, valid


def moments(values: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row mean and standard deviation of the valid entries, as (rows x 1) columns."""
    weight = valid.to(values.dtype)
    count = weight.sum(1, keepdim=True).clamp_min(1.0)
    mean = (values * weight).sum(1, keepdim=True) / count
    var = (((values - mean) * weight) ** 2).sum(1, keepdim=True) / count
    return mean, var.sqrt().clamp_min(_STD_EPS)


def zscore(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Values standardised per row over the valid entries."""
    mean, std = moments(values, valid)
    return (values - mean) / std


def mix(
    lexical: torch.Tensor,
    lexical_top: torch.Tensor,
    dense: DenseChannel,
    weight: float | torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(candidate document indices, fused scores): ``-inf`` on repeated candidates.
    ``weight``: one lexical weight, or a (queries x 1) column of them."""
    docs, valid = candidates(lexical_top, dense.top)
    fused = weight * zscore(lexical.gather(1, docs), valid) + (1.0 - weight) * zscore(
        dense.at(docs), valid
    )
    return docs, fused.masked_fill(~valid, float("-inf"))


def text_evidence(query_texts: Sequence[str], lexical: BM25Index | None) -> np.ndarray:
    """(queries x 2) evidence from the query texts: log word count, and the share of their
    BM25 tokens the corpus knows (none without a lexical channel)."""
    words = np.log(np.array([max(len(text.split()), 1) for text in query_texts], np.float32))
    known = (
        np.zeros(len(query_texts), np.float32) if lexical is None else lexical.coverage(query_texts)
    )
    return np.stack([words, known], 1)


def score_evidence(
    lexical: torch.Tensor, lexical_top: torch.Tensor, dense: DenseChannel
) -> torch.Tensor:
    """(queries x 3) evidence from the channels' first-pass scores: each channel's best
    z-score over the candidates, and the share of top 10 the two channels agree on."""
    docs, valid = candidates(lexical_top, dense.top)
    hidden = torch.finfo(torch.float32).min
    peaks = [
        zscore(scores, valid).masked_fill(~valid, hidden).max(1).values
        for scores in (lexical.gather(1, docs), dense.at(docs))
    ]
    depth = min(_AGREEMENT_DEPTH, lexical_top.shape[1], dense.top.shape[1])
    shared = (lexical_top[:, :depth, None] == dense.top[:, None, :depth]).any(2).sum(1)
    return torch.stack([*peaks, shared.float() / max(depth, 1)], 1)


@dataclass(frozen=True)
class DenseChannel:
    """The dense channel of a chunk of queries: their top documents, and their inner
    products with any documents (``at``: (queries x candidates) rows to scores)."""

    top: torch.Tensor
    at: Callable[[torch.Tensor], torch.Tensor]

    @classmethod
    def of_scores(cls, scores: torch.Tensor, depth: int) -> DenseChannel:
        """From the full (queries x docs) product: exact search."""
        return cls(top_rows(scores, depth), lambda rows: scores.gather(1, rows))


def dense_channel(
    queries: torch.Tensor, docs: torch.Tensor, depth: int, index: HnswIndex | None
) -> DenseChannel:
    """Exact without ``index``; with one, its top documents, and every candidate rescored
    exactly, so the union and its z-scores differ from exact search only where the index
    missed a document (and a query costs no product with all documents)."""
    if index is None:
        return DenseChannel.of_scores(queries @ docs.T, depth)
    rows, _ = index.top_k(queries.numpy(), depth)
    return DenseChannel(
        torch.as_tensor(rows),
        lambda candidates: torch.bmm(docs[candidates], queries.unsqueeze(2)).squeeze(2),
    )


def fused_top_k(
    lexical_scores: np.ndarray,
    query_vectors: np.ndarray,
    doc_vectors: np.ndarray,
    params: FusionParameters,
    k: int,
    index: HnswIndex | None = None,
    text_evidence: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Indices and fused scores of the k best documents per query.

    ``lexical_scores`` is (queries x docs) BM25; ``query_vectors`` and ``doc_vectors`` are
    normalised vectors in one space (the head's, or the base's). Queries go in chunks, so
    memory stays at chunk x docs; fusion itself works on the candidates only. With an
    approximate ``index`` over ``doc_vectors`` the dense top documents come from it (see
    :class:`DenseChannel`). A gated ``params`` needs each query's ``text_evidence``
    (:func:`text_evidence`).
    """
    all_docs = torch.as_tensor(doc_vectors, dtype=torch.float32)
    depth = params.candidate_depth
    if params.gate is not None and text_evidence is None:
        raise ValueError("a gated fusion needs the queries' text evidence")
    indices, scores = [], []
    # On all threads: 1,000 SciFact queries take 190 ms on an idle 2-core machine against
    # 305 ms on one thread (when other work keeps both cores busy, one thread is faster:
    # 676 against 927 ms; tuned for a machine that serves, not for a shared one).
    with torch.inference_mode():
        for start in range(0, query_vectors.shape[0], _QUERY_CHUNK):
            rows = slice(start, start + _QUERY_CHUNK)
            lexical = torch.as_tensor(lexical_scores[rows], dtype=torch.float32)
            lexical_top = top_rows(lexical, depth)
            queries = torch.as_tensor(query_vectors[rows], dtype=torch.float32)
            dense = dense_channel(queries, all_docs, depth, index)
            evidence = None
            if params.gate is not None and text_evidence is not None:
                words = torch.as_tensor(text_evidence[rows], dtype=torch.float32)
                evidence = torch.cat([words, score_evidence(lexical, lexical_top, dense)], 1)
            weight, feedback = params.query_weights(evidence, queries.shape[0])
            docs, fused = mix(lexical, lexical_top, dense, weight)
            if params.feedback > 0 or params.gate is not None:
                feedback_depth = min(params.feedback_depth, all_docs.shape[0])
                top = docs.gather(1, torch.topk(fused, feedback_depth, dim=1).indices)
                queries = rocchio(queries, all_docs[top], feedback)
                dense = dense_channel(queries, all_docs, depth, index)
                docs, fused = mix(lexical, lexical_top, dense, weight)
            top = torch.topk(fused, min(k, fused.shape[1]), dim=1)
            indices.append(docs.gather(1, top.indices).numpy())
            scores.append(top.values.numpy())
    if not indices:
        return np.zeros((0, k), dtype=np.int64), np.zeros((0, k), dtype=np.float32)
    return np.concatenate(indices), np.concatenate(scores)


@dataclass(frozen=True)
class FusionFeatures:
    """What training needs to score pairs the way a compiled retriever fuses them.

    The lexical channel is fixed, so each pair's BM25 z-score margin is computed once; the
    dense channel changes with the head, so its per-query scale (the frozen base's standard
    deviation over the candidates) and the Rocchio feedback documents (the validated prior's
    first-pass top) are kept to fuse the head's cosines the same way.
    """

    lexical_margin: torch.Tensor  # per pair: z(bm25, positive) - z(bm25, negative)
    dense_scale: torch.Tensor  # per query
    feedback_rows: torch.Tensor  # (queries x feedback_depth) document rows


def fusion_features(
    lexical_scores: np.ndarray,
    base_scores: np.ndarray,
    pairs: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    prior: FusionParameters,
) -> FusionFeatures:
    """Features of ``pairs`` (query, positive, negative rows) over (queries x docs) scores."""
    lexical = torch.as_tensor(lexical_scores, dtype=torch.float32)
    dense = torch.as_tensor(base_scores, dtype=torch.float32)
    depth = prior.candidate_depth
    lexical_top = top_rows(lexical, depth)
    channel = DenseChannel.of_scores(dense, depth)
    docs, valid = candidates(lexical_top, channel.top)
    lexical_mean, lexical_std = moments(lexical.gather(1, docs), valid)
    _, dense_std = moments(dense.gather(1, docs), valid)
    z_lexical = (lexical - lexical_mean) / lexical_std
    first_docs, first = mix(lexical, lexical_top, channel, prior.lexical_weight)
    feedback = torch.topk(first, min(prior.feedback_depth, first.shape[1]), dim=1).indices
    query, positive, negative = pairs
    return FusionFeatures(
        lexical_margin=z_lexical[query, positive] - z_lexical[query, negative],
        dense_scale=dense_std[:, 0],
        feedback_rows=first_docs.gather(1, feedback),
    )


def rocchio(
    queries: torch.Tensor, feedback_docs: torch.Tensor, weight: float | torch.Tensor
) -> torch.Tensor:
    """Queries moved towards the mean of their (queries x depth x dim) feedback documents;
    ``weight``: one, or a (queries x 1) column."""
    return F.normalize(queries + weight * feedback_docs.mean(1), dim=1)
