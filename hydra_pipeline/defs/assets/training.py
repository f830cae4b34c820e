"""Training assets: the hypernet checkpoint (across tasks) and one compiled head per task.

The hypernet reads the pairs and embeddings of the configured training tasks only, so a
card added later gets a head from the existing hypernet without a retraining: that is the
point of Hydra. Retraining is the weekly schedule's job (or a click in the UI).
"""

# No `from __future__ import annotations` here: Dagster reads these functions' annotations
# at definition time and needs real types (a string `context` annotation is refused).

from dataclasses import asdict

import dagster as dg
import polars as pl
from dagster import AssetExecutionContext

from hydra_core.artifacts import CheckpointRecord, Embeddings
from hydra_core.cards import TaskCard
from hydra_core.project_config import ProjectConfig
from hydra_pipeline.defs.partitions import TASK_PARTITIONS
from hydra_pipeline.defs.resources import EncoderResource, TrackingResource, WorkspaceResource
from hydra_pipeline.defs.versions import code_version

GROUP = "training"
HYPERNET_MODULES = (
    "hydra_core.trainer",
    "hydra_core.hypernet",
    "hydra_core.head_generator",
    "hydra_core.card_encoder",
    "hydra_core.losses",
    "hydra_core.head",
    "hydra_core.tracked_training",
)


def build(config: ProjectConfig) -> list[dg.AssetsDefinition]:
    training_tasks = config.training_task_names
    per_training_task = dg.AssetIn(
        partition_mapping=dg.SpecificPartitionsPartitionMapping(training_tasks)
    )
    train_settings = config.training.train
    hypernet_version = code_version(
        *HYPERNET_MODULES,
        config={"train": train_settings, "tasks": training_tasks, "model": config.encoder_model},
    )

    @dg.asset(
        ins={
            "task_card": per_training_task,
            "doc_embeddings": per_training_task,
            "query_embeddings": per_training_task,
            "preference_pairs": per_training_task,
        },
        group_name=GROUP,
        code_version=hypernet_version,
        description="The hypernet, trained on the preference pairs of " + ", ".join(training_tasks),
    )
    def hypernet_checkpoint(
        context: AssetExecutionContext,
        workspace: WorkspaceResource,
        encoder: EncoderResource,
        tracking: TrackingResource,
        task_card: dict[str, TaskCard],
        doc_embeddings: dict[str, Embeddings],
        query_embeddings: dict[str, Embeddings],
        preference_pairs: dict[str, pl.DataFrame],
    ) -> dg.Output[CheckpointRecord]:
        """Train once on all training tasks; tracked as one MLflow run with a model version."""
        from hydra_core.tracked_training import train_tracked
        from hydra_core.trainer import TrainConfig

        record = train_tracked(
            task_card,
            doc_embeddings,
            query_embeddings,
            preference_pairs,
            encoder=encoder.get(),
            config=TrainConfig(**train_settings),
            checkpoints_dir=workspace.checkpoints,
            target=tracking.target(),
            code_version=hypernet_version,
            params={"dagster_run_id": context.run.run_id},
            tags={"dagster_run_id": context.run.run_id},
        )
        return dg.Output(
            record,
            data_version=dg.DataVersion(record.checkpoint_id),
            metadata={
                "checkpoint": dg.MetadataValue.path(record.path),
                "mlflow_run_id": record.mlflow_run_id,
                "model_version": f"{record.model_name} v{record.model_version}",
                "tasks": ", ".join(record.tasks),
                "train_config": asdict(TrainConfig(**train_settings)),
            },
        )

    @dg.asset(
        partitions_def=TASK_PARTITIONS,
        group_name=GROUP,
        code_version=code_version(*HYPERNET_MODULES),
        automation_condition=dg.AutomationCondition.eager(),
    )
    def compiled_head(
        encoder: EncoderResource, hypernet_checkpoint: CheckpointRecord, task_card: TaskCard
    ) -> dg.Output:
        """The task's projection head, generated from its card by the hypernet."""
        from hydra_core.stages import compile_head, head_digest

        head = compile_head(hypernet_checkpoint.path, task_card, encoder.get())
        return dg.Output(
            head,
            data_version=dg.DataVersion(head_digest(head)),
            metadata={
                "parameters": head.num_parameters,
                "checkpoint": hypernet_checkpoint.checkpoint_id,
            },
        )

    return [hypernet_checkpoint, compiled_head]
