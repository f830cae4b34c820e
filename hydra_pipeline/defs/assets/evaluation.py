"""Per-task metrics: every method scored on the test split, recorded in DuckDB.

Baselines (bm25, base, teacher) come from the stored teacher rankings, hydra from the
compiled head, the ablations (generic card, another task's card) from the same hypernet,
the reference rows from the reference hypernets (see the training assets), the ``oracle``
ceiling (the best fusion grid point on the test split: its own asset, which depends on the
task's data only) and, for a card that declares labels, a supervised head fitted on them
(likewise its own asset): one table per task.
"""

# No `from __future__ import annotations` here: Dagster reads these functions' annotations
# at definition time and needs real types (a string `context` annotation is refused).

from typing import TYPE_CHECKING, cast

import dagster as dg
import polars as pl
from dagster import AssetExecutionContext

from hydra_core.data.cards import TaskCard
from hydra_core.encoding.embeddings import Embeddings
from hydra_pipeline.artifacts import CheckpointRecord, stored_task, task_from_frames
from hydra_pipeline.defs.assets.data import frame_output
from hydra_pipeline.defs.metadata import table_value
from hydra_pipeline.defs.partitions import TASK_PARTITIONS
from hydra_pipeline.defs.project import project
from hydra_pipeline.defs.resources import EncoderResource, MetricsDbResource
from hydra_pipeline.defs.versions import code_version
from hydra_pipeline.project_config import RobustnessConfig

if TYPE_CHECKING:
    from hydra_core.model.compiled_retriever import CompiledRetriever  # torch: body only

GROUP = "evaluation"
KINDS = {"polars", "duckdb"}


@dg.asset(
    partitions_def=TASK_PARTITIONS,
    group_name=GROUP,
    kinds={"pytorch", "polars"},
    code_version=code_version("hydra_pipeline.stages", "hydra_pipeline.artifacts"),
)
def supervised_metrics(
    context: AssetExecutionContext,
    encoder: EncoderResource,
    task_card: TaskCard,
    corpus: pl.DataFrame,
    queries: pl.DataFrame,
    qrels: pl.DataFrame,
    doc_embeddings: Embeddings,
    query_embeddings: Embeddings,
) -> dg.Output[pl.DataFrame]:
    """The supervised-head reference: a head fitted on the card's labels, scored on the
    test split per query (no rows when the card declares no labels). Apart from
    task_metrics so that a retrained hypernet does not refit it."""
    from hydra_pipeline.stages import supervised_metrics as fit_and_score

    task = task_from_frames(context.partition_key, task_card.source, corpus, queries, qrels)
    opened = stored_task(task, encoder.get(), doc_embeddings)
    return frame_output(fit_and_score(opened, task_card, encoder.get(), query_embeddings))


@dg.asset(
    partitions_def=TASK_PARTITIONS,
    group_name=GROUP,
    kinds={"polars"},
    code_version=code_version("hydra_pipeline.stages", "hydra_pipeline.artifacts"),
)
def oracle_metrics(
    context: AssetExecutionContext,
    encoder: EncoderResource,
    task_card: TaskCard,
    corpus: pl.DataFrame,
    queries: pl.DataFrame,
    qrels: pl.DataFrame,
    doc_embeddings: Embeddings,
) -> dg.Output[pl.DataFrame]:
    """The ``oracle`` ceiling: the best point of the fusion grid (lexical weight x feedback
    x BM25 b, frozen base) chosen on the test split itself, per query, each row carrying
    that point. A ceiling for the fusion a card compiles to, never a result."""
    from hydra_pipeline.stages import ORACLE_POINT, oracle_fusion
    from hydra_pipeline.stages import oracle_metrics as score_oracle

    task = task_from_frames(context.partition_key, task_card.source, corpus, queries, qrels)
    rows = score_oracle(stored_task(task, encoder.get(), doc_embeddings), encoder.get())
    point = oracle_fusion(rows)  # none for a task without test queries
    metadata = (
        {}
        if point is None
        else {name: dg.MetadataValue.float(float(getattr(point, name))) for name in ORACLE_POINT}
    )
    return frame_output(rows, "result", **metadata)


def task_metrics_asset(refine_steps: int) -> dg.AssetsDefinition:
    """Versioned on ``refine_steps``, the project's setting for the refined unseen row."""

    @dg.asset(
        partitions_def=TASK_PARTITIONS,
        group_name=GROUP,
        kinds=KINDS,
        code_version=code_version(
            "hydra_pipeline.stages",
            "hydra_pipeline.artifacts",
            "hydra_pipeline.metrics_store",
            "hydra_core.evaluation.report",
            "hydra_pipeline.results_figures",
            "hydra_core.evaluation.significance",
            "hydra_pipeline.tracking",
            config={"refine_steps": refine_steps},
        ),
        automation_condition=dg.AutomationCondition.eager(),
    )
    def task_metrics(
        context: AssetExecutionContext,
        encoder: EncoderResource,
        metrics_db: MetricsDbResource,
        task_card: TaskCard,
        corpus: pl.DataFrame,
        queries: pl.DataFrame,
        qrels: pl.DataFrame,
        bm25_rankings: pl.DataFrame,
        dense_rankings: pl.DataFrame,
        fused_rankings: pl.DataFrame,
        doc_embeddings: Embeddings,
        query_embeddings: Embeddings,
        compiled_retriever: object,
        hypernet_checkpoint: CheckpointRecord,
        labelled_hypernet: CheckpointRecord,
        unseen_hypernet: CheckpointRecord,
        supervised_metrics: pl.DataFrame,
        oracle_metrics: pl.DataFrame,
    ) -> dg.Output[pl.DataFrame]:
        """NDCG@10, MRR@10, Recall@100 of bm25, base, teacher, hydra, its ablations and the
        reference rows (with labels, supervised-head, unseen, unseen refined, oracle), with
        their per-query values (DuckDB table per_query), the fusion each card compiled to
        beside the oracle's (DuckDB table fusion) and the paired significance tests.

        Metadata: the results and the significance tests as tables, ``ndcg@10/<method>``
        and ``gain_over_base/<method>`` floats (plotted across materializations on the
        asset page) and ``mlflow_run``, a link to the checkpoint's MLflow run when it has
        one.

        The shuffled-card ablation uses another of the hypernet's training tasks' cards.
        """
        from hydra_core.evaluation.method import Method
        from hydra_core.evaluation.significance import paired_tests, table_from_per_query
        from hydra_core.ranking.teacher_rankings import TeacherRankings
        from hydra_pipeline.metrics_store import fusion_frame, record_metrics
        from hydra_pipeline.results_figures import (
            headline_metadata,
            method_table,
            significance_frame,
        )
        from hydra_pipeline.stages import (
            cards_named,
            evaluate_task,
            reference_retrievers,
        )
        from hydra_pipeline.tracking import run_url

        task = task_from_frames(context.partition_key, task_card.source, corpus, queries, qrels)
        opened = stored_task(task, encoder.get(), doc_embeddings)
        references = reference_retrievers(
            opened,
            task_card,
            encoder.get(),
            labelled=labelled_hypernet,
            unseen=unseen_hypernet,
            refine_steps=refine_steps,
        )
        teachers = TeacherRankings(
            {Method.BM25: bm25_rankings, Method.BASE: dense_rankings}, fused_rankings
        )
        evaluation = evaluate_task(
            opened,
            task_card,
            teachers=teachers,
            queries=query_embeddings,
            compiled=cast("CompiledRetriever", compiled_retriever),
            checkpoint=hypernet_checkpoint.path,
            other_cards=cards_named(hypernet_checkpoint.tasks),
            encoder=encoder.get(),
            references=references,
            scored=supervised_metrics,
            oracle=oracle_metrics,
        )
        record_metrics(
            metrics_db.database,
            evaluation.metrics,
            run_id=hypernet_checkpoint.mlflow_run_id,
            checkpoint=hypernet_checkpoint.checkpoint_id,
            per_query=evaluation.per_query,
            queries=queries,
            fusion=fusion_frame(context.partition_key, evaluation.fusion),
            dagster_run_id=context.run.run_id,
        )
        table = table_from_per_query(evaluation.per_query)
        tests = paired_tests(context.partition_key, table)
        metadata: dict[str, dg.MetadataValue] = {
            "results": table_value(method_table(evaluation.metrics)),
            "significance": table_value(significance_frame(tests).drop("task")),
        }
        metadata |= {
            key: dg.MetadataValue.float(value)
            for key, value in headline_metadata(evaluation.metrics).items()
        }
        url = run_url(hypernet_checkpoint.tracking_uri, hypernet_checkpoint.mlflow_run_id)
        if url is not None:
            metadata["mlflow_run"] = dg.MetadataValue.url(url)
        return frame_output(evaluation.metrics, "result", **metadata)

    return task_metrics


def task_robustness_asset(robustness: RobustnessConfig) -> dg.AssetsDefinition:
    """Versioned on the project's perturbations and their seed."""
    perturbations = robustness.parsed()

    @dg.asset(
        partitions_def=TASK_PARTITIONS,
        group_name=GROUP,
        kinds=KINDS,
        code_version=code_version(
            "hydra_core.workflows",
            "hydra_pipeline.stages",
            "hydra_pipeline.artifacts",
            "hydra_pipeline.metrics_store",
            config={
                "perturbations": [str(p) for p in perturbations],
                "seed": robustness.seed,
            },
        ),
        automation_condition=dg.AutomationCondition.eager(),
    )
    def task_robustness(
        context: AssetExecutionContext,
        encoder: EncoderResource,
        metrics_db: MetricsDbResource,
        task_card: TaskCard,
        corpus: pl.DataFrame,
        queries: pl.DataFrame,
        qrels: pl.DataFrame,
        hypernet_checkpoint: CheckpointRecord,
    ) -> dg.Output[pl.DataFrame]:
        """NDCG@10 of every method of the task's table but the supervised reference (its
        fit costs more than the rest) on the clean test queries and on each configured
        perturbation of them, and the drop (DuckDB table robustness). Without
        perturbations: no rows, no model loaded."""
        from hydra_pipeline.metrics_store import (
            ROBUSTNESS_SCHEMA,
            record_robustness,
            robustness_frame,
        )

        if not perturbations:
            return frame_output(pl.DataFrame(schema=ROBUSTNESS_SCHEMA))
        from hydra_core.data.opened_task import OpenedTask
        from hydra_core.workflows import task_robustness
        from hydra_pipeline.stages import cards_named, load_hypernet

        task = task_from_frames(context.partition_key, task_card.source, corpus, queries, qrels)
        results = task_robustness(
            task_card,
            OpenedTask(task, encoder.get()),
            load_hypernet(hypernet_checkpoint.path),
            encoder.get(),
            perturbations,
            other_cards=cards_named(hypernet_checkpoint.tasks),
            supervised=False,
        )
        rows = robustness_frame(context.partition_key, results)
        record_robustness(
            metrics_db.database,
            rows,
            run_id=hypernet_checkpoint.mlflow_run_id,
            checkpoint=hypernet_checkpoint.checkpoint_id,
            dagster_run_id=context.run.run_id,
        )
        return frame_output(rows)

    return task_robustness


@dg.definitions
def defs() -> dg.Definitions:
    config = project()
    return dg.Definitions(
        assets=[
            supervised_metrics,
            oracle_metrics,
            task_metrics_asset(config.training.refine_steps),
            task_robustness_asset(config.robustness),
        ]
    )
