"""Jobs, and the order in which ``hydra run`` materializes the graph.

The graph alternates between per-task and cross-task stages: every task's data, teachers,
pairs, fusion examples, supervised reference and oracle; then the hypernet (all training tasks at
once) and its with-labels reference; then every task's head, leave-one-out hypernet and
metrics; then the report and the registered model (only after every task's metrics passed
their checks). Those four waves are what ``hydra run`` executes in order, the per-task ones
one run per partition.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

TASK_JOB = "task_pipeline"
HYPERNET_JOB = "train_hypernet"
REPORT_JOB = "results_report_job"

TASK_DATA_ASSETS: tuple[str, ...] = (
    "task_card",
    "corpus",
    "queries",
    "qrels",
    "training_queries",
    "doc_embeddings",
    "query_embeddings",
    "bm25_rankings",
    "dense_rankings",
    "fused_rankings",
    "preference_pairs",
    "fusion_examples",
    "supervised_metrics",
    "oracle_metrics",
)
TASK_EVAL_ASSETS: tuple[str, ...] = (
    "compiled_retriever",
    "unseen_hypernet",
    "task_metrics",
    "task_robustness",
)
HYPERNET_ASSET = "hypernet_checkpoint"
LABELLED_ASSET = "labelled_hypernet"
REPORT_ASSET = "results_report"
REGISTERED_ASSET = "registered_model"
TRAINING_ASSETS = frozenset({HYPERNET_ASSET, LABELLED_ASSET, "unseen_hypernet"})
"""The assets that train a hypernet: each one's training is an MLflow run."""


@dataclass(frozen=True)
class Wave:
    """Assets materialized together: per task partition (``partitioned``) or once."""

    name: str
    job: str
    assets: tuple[str, ...]
    partitioned: bool


WAVES: tuple[Wave, ...] = (
    Wave("task data", TASK_JOB, TASK_DATA_ASSETS, partitioned=True),
    Wave("hypernet", HYPERNET_JOB, (HYPERNET_ASSET, LABELLED_ASSET), partitioned=False),
    Wave("heads and metrics", TASK_JOB, TASK_EVAL_ASSETS, partitioned=True),
    Wave("report", REPORT_JOB, (REPORT_ASSET, REGISTERED_ASSET), partitioned=False),
)


task_pipeline = dg.define_asset_job(
    TASK_JOB,
    selection=dg.AssetSelection.assets(*TASK_DATA_ASSETS, *TASK_EVAL_ASSETS),
    description="Every per-task asset of one task partition.",
)
train_hypernet = dg.define_asset_job(
    HYPERNET_JOB,
    selection=dg.AssetSelection.assets(HYPERNET_ASSET, LABELLED_ASSET),
    description="Retrain the hypernet (and its with-labels reference) on stored pairs.",
)
results_report_job = dg.define_asset_job(
    REPORT_JOB,
    selection=dg.AssetSelection.assets(REPORT_ASSET, REGISTERED_ASSET),
    description="Rebuild the results report from the metrics store and register the "
    "hypernet whose metrics passed their checks.",
)
