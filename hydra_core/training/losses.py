"""Training losses: a confidence-weighted pairwise loss plus in-batch InfoNCE.

The pairwise term learns the teachers' orderings directly; InfoNCE keeps the head's
space well spread, so documents no teacher compared still land sensibly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def weighted_pairwise_loss(
    positive: torch.Tensor, negative: torch.Tensor, weight: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Mean of ``-w * log sigmoid((s_pos - s_neg) / t)``, normalised by the total weight."""
    losses = -F.logsigmoid((positive - negative) / temperature)
    return (weight * losses).sum() / weight.sum().clamp_min(1e-8)


def in_batch_infonce(
    queries: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor,
    query_keys: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """Cross-entropy of each query's positive against every other row's documents.

    ``query_keys`` identifies each row's query: another row of the same query is not
    used as a negative, since its positive may be just as relevant.
    """
    documents = torch.cat([positives, negatives])
    logits = queries @ documents.T / temperature
    rows = torch.arange(queries.shape[0])
    same_query = query_keys[:, None] == query_keys[None, :]
    same_query[rows, rows] = False
    mask = torch.cat([same_query, torch.zeros_like(same_query)], dim=1)
    logits = logits.masked_fill(mask, float("-inf"))
    return F.cross_entropy(logits, rows)
