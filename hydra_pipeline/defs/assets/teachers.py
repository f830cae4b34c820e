"""Teacher assets per task: BM25 and dense rankings, their RRF fusion, preference pairs.

Every teacher ranks the test queries (for the baselines) and the training queries (for
distillation) in one pass; the pairs use only the training queries.
"""

# No `from __future__ import annotations` here: Dagster reads these functions' annotations
# at definition time and needs real types (a string `context` annotation is refused).

from typing import Any

import dagster as dg
import polars as pl
from dagster import AssetExecutionContext

from hydra_core.encoding.embeddings import Embeddings
from hydra_pipeline.artifacts import task_from_frames
from hydra_pipeline.defs.assets.data import frame_output
from hydra_pipeline.defs.partitions import TASK_PARTITIONS
from hydra_pipeline.defs.project import project
from hydra_pipeline.defs.versions import code_version

GROUP = "teachers"
KINDS = {"polars", "parquet"}


@dg.asset(
    partitions_def=TASK_PARTITIONS,
    group_name=GROUP,
    kinds=KINDS,
    code_version=code_version("hydra_core.ranking.teacher_rankings", "hydra_pipeline.artifacts"),
)
def bm25_rankings(
    context: AssetExecutionContext,
    corpus: pl.DataFrame,
    queries: pl.DataFrame,
    qrels: pl.DataFrame,
    training_queries: pl.DataFrame,
) -> dg.Output[pl.DataFrame]:
    """BM25 (k1=1.5, b=0.75, stemmed) top-200 per test and training query."""
    from hydra_core.data.opened_task import OpenedTask
    from hydra_core.ranking.teacher_rankings import bm25_rankings as rank_bm25
    from hydra_core.ranking.teacher_rankings import ranked_queries

    task = task_from_frames(context.partition_key, "", corpus, queries, qrels)
    return frame_output(rank_bm25(OpenedTask(task), ranked_queries(task, training_queries)))


@dg.asset(
    partitions_def=TASK_PARTITIONS,
    group_name=GROUP,
    kinds=KINDS,
    code_version=code_version("hydra_core.ranking.teacher_rankings"),
)
def dense_rankings(
    doc_embeddings: Embeddings, query_embeddings: Embeddings
) -> dg.Output[pl.DataFrame]:
    """The frozen base model's exact top-200 per test and training query."""
    from hydra_core.ranking.teacher_rankings import dense_rankings as rank_dense

    return frame_output(rank_dense(doc_embeddings, query_embeddings))


@dg.asset(
    partitions_def=TASK_PARTITIONS,
    group_name=GROUP,
    kinds=KINDS,
    code_version=code_version(
        "hydra_core.ranking.teacher_rankings", "hydra_core.evaluation.method"
    ),
)
def fused_rankings(
    bm25_rankings: pl.DataFrame, dense_rankings: pl.DataFrame
) -> dg.Output[pl.DataFrame]:
    """Reciprocal rank fusion of BM25 and the base (k=60), top 100, teacher ranks kept."""
    from hydra_core.evaluation.method import Method
    from hydra_core.ranking.teacher_rankings import fuse_teachers

    return frame_output(fuse_teachers({Method.BM25: bm25_rankings, Method.BASE: dense_rankings}))


def preference_pairs_asset(pair_settings: dict[str, Any]) -> dg.AssetsDefinition:
    """How fused rankings become pairs is the project's choice; its code version hashes it."""

    @dg.asset(
        partitions_def=TASK_PARTITIONS,
        group_name=GROUP,
        kinds=KINDS,
        code_version=code_version("hydra_core.training.preferences", config=pair_settings),
    )
    def preference_pairs(
        context: AssetExecutionContext, fused_rankings: pl.DataFrame, training_queries: pl.DataFrame
    ) -> dg.Output[pl.DataFrame]:
        """(query, better doc, worse doc, weight) from the fused ranking of training queries.

        None for a task too small for its teachers to rank documents below their top ones:
        the hypernet trains without it (it still gets baselines and a compiled head)."""
        from hydra_core.training.preferences import PairConfig, distillation_pairs

        pairs = distillation_pairs(fused_rankings, training_queries, PairConfig(**pair_settings))
        if pairs.is_empty():
            context.log.warning(
                f"{context.partition_key}: no preference pairs from its "
                f"{training_queries.height} training queries (too few documents); the hypernet "
                "trains without it, and it still gets baselines and a compiled head"
            )
        return frame_output(pairs, queries=pairs["query_id"].n_unique())

    return preference_pairs


@dg.definitions
def defs() -> dg.Definitions:
    pairs = preference_pairs_asset(project().training.pairs)
    return dg.Definitions(assets=[bm25_rankings, dense_rankings, fused_rankings, pairs])
