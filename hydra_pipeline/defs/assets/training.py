"""Training assets: the hypernet checkpoint (across tasks) and one compiled head per task.

The hypernet reads the pairs and embeddings of the configured training tasks only, so a
card added later gets a head from the existing hypernet without a retraining: that is the
point of Hydra. Retraining is the weekly schedule's job (or a click in the UI).

Two reference hypernets give the report its comparison rows: ``labelled_hypernet`` also
learns the labels the cards declare (``hydra+labels``), and ``unseen_hypernet`` is trained
per task without that task (leave one out), so its card is scored as a new task's would be.
The leave-one-out hypernets follow the hypernet through their eager automation condition,
so a retrain (the schedule, a click) retrains them too; each checkpoint links to its MLflow
run in its metadata (``mlflow_run``).
"""

# No `from __future__ import annotations` here: Dagster reads these functions' annotations
# at definition time and needs real types (a string `context` annotation is refused).

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, NamedTuple

import dagster as dg
import polars as pl
from dagster import AssetExecutionContext

from hydra_core.data.cards import TaskCard
from hydra_core.encoding.embeddings import Embeddings
from hydra_pipeline.artifacts import CheckpointRecord, stored_task, task_from_frames
from hydra_pipeline.defs.jobs import HYPERNET_ASSET
from hydra_pipeline.defs.partitions import TASK_PARTITIONS
from hydra_pipeline.defs.project import project
from hydra_pipeline.defs.resources import EncoderResource, TrackingResource, WorkspaceResource
from hydra_pipeline.defs.versions import code_version
from hydra_pipeline.project_config import ProjectConfig

if TYPE_CHECKING:  # torch: bodies only
    from hydra_core.model.hypernet import HypernetConfig
    from hydra_core.training.trainer import TrainConfig, TrainingTask

GROUP = "training"
KINDS = {"pytorch", "mlflow"}

TRAINING_INPUTS = (
    "task_card",
    "doc_embeddings",
    "query_embeddings",
    "training_queries",
    "preference_pairs",
    "fusion_examples",
)
"""What every hypernet reads of each training task (a ``{task: value}`` map per name)."""


class TrainingInputs(NamedTuple):
    """The :data:`TRAINING_INPUTS` maps a hypernet asset receives, by task."""

    cards: Mapping[str, TaskCard]
    documents: Mapping[str, Embeddings]
    queries: Mapping[str, Embeddings]
    training_queries: Mapping[str, pl.DataFrame]
    pairs: Mapping[str, pl.DataFrame]
    fusion_examples: Mapping[str, pl.DataFrame]

    def only(self, names: Sequence[str]) -> "TrainingInputs":
        return TrainingInputs(
            {name: self.cards[name] for name in names},
            {name: self.documents[name] for name in names},
            {name: self.queries[name] for name in names},
            {name: self.training_queries[name] for name in names},
            {name: self.pairs[name] for name in names},
            {name: self.fusion_examples[name] for name in names},
        )


@dataclass(frozen=True)
class HypernetTraining:
    """Where a hypernet asset trains: its run, the workspace, the encoder, the MLflow store."""

    context: AssetExecutionContext
    workspace: WorkspaceResource
    encoder: EncoderResource
    tracking: TrackingResource

    def train(
        self,
        inputs: TrainingInputs,
        *,
        config: "TrainConfig",
        architecture: "HypernetConfig",
        version: str,
        variant: str | None = None,
        label_streams: "Sequence[TrainingTask]" = (),
    ) -> CheckpointRecord:
        """Train on ``inputs`` as one MLflow run, nested under the ``hydra run`` that
        launched it."""
        from hydra_pipeline.tracked_training import train_tracked
        from hydra_pipeline.tracking import nested_under

        run = self.context.run
        return train_tracked(
            *inputs,
            encoder=self.encoder.get(),
            config=config,
            architecture=architecture,
            checkpoints_dir=self.workspace.checkpoints,
            target=self.tracking.target(),
            run_name=variant or "hypernet",
            code_version=version,
            params={"dagster_run_id": run.run_id},
            tags={
                "dagster_run_id": run.run_id,
                **({"hydra/variant": variant} if variant else {}),
                **nested_under(run.tags),
            },
            label_streams=label_streams,
        )


def _checkpoint_output(
    record: CheckpointRecord, **metadata: "dg.RawMetadataValue"
) -> dg.Output[CheckpointRecord]:
    """A checkpoint, versioned by its id, with a link to its MLflow run (``mlflow_run``)
    when the store knows the run."""
    from hydra_pipeline.tracking import run_url

    url = run_url(record.tracking_uri, record.mlflow_run_id)
    return dg.Output(
        record,
        data_version=dg.DataVersion(record.checkpoint_id),
        metadata={
            "checkpoint": dg.MetadataValue.path(record.path),
            **({"mlflow_run": dg.MetadataValue.url(url)} if url is not None else {}),
            **metadata,
        },
    )


def hypernet_assets(config: ProjectConfig) -> list[dg.AssetsDefinition]:
    """The hypernet and its two references, reading the project's training tasks only and
    versioned on its training settings."""
    training_tasks = config.training_task_names
    per_training_task = dg.AssetIn(
        partition_mapping=dg.SpecificPartitionsPartitionMapping(training_tasks)
    )
    training_inputs = {name: per_training_task for name in TRAINING_INPUTS}
    train_settings = config.training.train
    architecture_settings = config.training.architecture
    hypernet_version = code_version(
        "hydra_pipeline.tracked_training",
        "hydra_core.training.trainer",
        config={
            "train": train_settings,
            "architecture": architecture_settings,
            "tasks": training_tasks,
            "model": config.encoder_model,
        },
    )

    @dg.asset(
        ins=training_inputs,
        group_name=GROUP,
        kinds=KINDS,
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
        training_queries: dict[str, pl.DataFrame],
        preference_pairs: dict[str, pl.DataFrame],
        fusion_examples: dict[str, pl.DataFrame],
    ) -> dg.Output[CheckpointRecord]:
        """Train once on all training tasks; tracked as one MLflow run (``registered_model``
        makes it a model version once its evaluation passed)."""
        from hydra_core.model.hypernet import HypernetConfig
        from hydra_core.training.trainer import TrainConfig

        train = TrainConfig(**train_settings)
        architecture = HypernetConfig(**architecture_settings)
        record = HypernetTraining(context, workspace, encoder, tracking).train(
            TrainingInputs(
                task_card,
                doc_embeddings,
                query_embeddings,
                training_queries,
                preference_pairs,
                fusion_examples,
            ),
            config=train,
            architecture=architecture,
            version=hypernet_version,
        )
        return _checkpoint_output(
            record,
            tasks=", ".join(record.tasks),
            train_config=asdict(train),
            architecture=asdict(architecture),
        )

    labelled_settings = config.training.labelled_train
    labelled_version = code_version(
        "hydra_pipeline.tracked_training",
        "hydra_core.training.trainer",
        "hydra_pipeline.stages",
        config={
            "train": labelled_settings,
            "architecture": architecture_settings,
            "tasks": training_tasks,
            "model": config.encoder_model,
        },
    )

    @dg.asset(
        ins={
            **training_inputs,
            **{name: per_training_task for name in ("corpus", "queries", "qrels")},
        },
        group_name=GROUP,
        kinds=KINDS,
        code_version=labelled_version,
        description="The hypernet trained with the labels the training cards declare",
    )
    def labelled_hypernet(
        context: AssetExecutionContext,
        workspace: WorkspaceResource,
        encoder: EncoderResource,
        tracking: TrackingResource,
        hypernet_checkpoint: CheckpointRecord,
        task_card: dict[str, TaskCard],
        doc_embeddings: dict[str, Embeddings],
        query_embeddings: dict[str, Embeddings],
        training_queries: dict[str, pl.DataFrame],
        preference_pairs: dict[str, pl.DataFrame],
        fusion_examples: dict[str, pl.DataFrame],
        corpus: dict[str, pl.DataFrame],
        queries: dict[str, pl.DataFrame],
        qrels: dict[str, pl.DataFrame],
    ) -> dg.Output[CheckpointRecord]:
        """The ``hydra+labels`` reference: the teachers' pairs plus each card's labels stream.

        With no card declaring labels it is the hypernet itself, and no task gets the row.
        """
        from hydra_core.model.hypernet import HypernetConfig
        from hydra_core.training.trainer import LABELLED_TRAINING
        from hydra_pipeline.stages import label_streams

        streams = label_streams(task_card, corpus, queries, qrels, encoder.get())
        if not streams:
            return dg.Output(hypernet_checkpoint, metadata={"label_streams": "none"})
        record = HypernetTraining(context, workspace, encoder, tracking).train(
            TrainingInputs(
                task_card,
                doc_embeddings,
                query_embeddings,
                training_queries,
                preference_pairs,
                fusion_examples,
            ),
            config=replace(LABELLED_TRAINING, **labelled_settings),
            architecture=HypernetConfig(**architecture_settings),
            version=labelled_version,
            variant="labels",
            label_streams=streams,
        )
        return _checkpoint_output(
            record,
            label_streams=", ".join(stream.name for stream in streams),
        )

    @dg.asset(
        partitions_def=TASK_PARTITIONS,
        ins=training_inputs,
        group_name=GROUP,
        kinds=KINDS,
        code_version=hypernet_version,
        # Follows the hypernet (the weekly retrain, a click in the UI), as the heads do.
        automation_condition=dg.AutomationCondition.eager().allow(
            dg.AssetSelection.assets(HYPERNET_ASSET)
        ),
    )
    def unseen_hypernet(
        context: AssetExecutionContext,
        workspace: WorkspaceResource,
        encoder: EncoderResource,
        tracking: TrackingResource,
        hypernet_checkpoint: CheckpointRecord,
        task_card: dict[str, TaskCard],
        doc_embeddings: dict[str, Embeddings],
        query_embeddings: dict[str, Embeddings],
        training_queries: dict[str, pl.DataFrame],
        preference_pairs: dict[str, pl.DataFrame],
        fusion_examples: dict[str, pl.DataFrame],
    ) -> dg.Output[CheckpointRecord]:
        """The hypernet trained without this task (leave one out), to which the task's card
        is as new as an unseen task's: for a task that never trained (not a training task,
        or one too small to yield pairs), the hypernet itself. An empty record when no other
        task trains."""
        from hydra_core.model.hypernet import HypernetConfig
        from hydra_core.training.trainer import TrainConfig

        held_out = context.partition_key
        if held_out not in hypernet_checkpoint.tasks:
            return dg.Output(
                hypernet_checkpoint, data_version=dg.DataVersion(hypernet_checkpoint.checkpoint_id)
            )
        others = [name for name in hypernet_checkpoint.tasks if name != held_out]
        if not others:  # (then the inputs may not even be {task: value} maps)
            return dg.Output(CheckpointRecord(path="", checkpoint_id="", tasks=[]))
        record = HypernetTraining(context, workspace, encoder, tracking).train(
            TrainingInputs(
                task_card,
                doc_embeddings,
                query_embeddings,
                training_queries,
                preference_pairs,
                fusion_examples,
            ).only(others),
            config=TrainConfig(**train_settings),
            architecture=HypernetConfig(**architecture_settings),
            version=hypernet_version,
            variant=f"without-{held_out}",
        )
        return _checkpoint_output(record, tasks=", ".join(others))

    return [hypernet_checkpoint, labelled_hypernet, unseen_hypernet]


@dg.asset(
    partitions_def=TASK_PARTITIONS,
    group_name=GROUP,
    code_version=code_version("hydra_core.evaluation.fusion_examples", "hydra_pipeline.artifacts"),
    kinds={"pandas", "parquet"},
)
def fusion_examples(
    context: AssetExecutionContext,
    encoder: EncoderResource,
    task_card: TaskCard,
    corpus: pl.DataFrame,
    queries: pl.DataFrame,
    qrels: pl.DataFrame,
    doc_embeddings: Embeddings,
) -> dg.Output[pl.DataFrame]:
    """The task and its synthetic variants scored over the fusion grid, a row per labelled
    query (none for a task without labels): what the hypernets' fusion gate learns from."""
    from hydra_core.evaluation.fusion_examples import card_fusion_examples, examples_frame
    from hydra_pipeline.defs.assets.data import frame_output

    task = task_from_frames(context.partition_key, task_card.source, corpus, queries, qrels)
    opened = stored_task(task, encoder.get(), doc_embeddings)
    return frame_output(examples_frame(card_fusion_examples(task_card, opened, encoder.get())))


@dg.asset(
    partitions_def=TASK_PARTITIONS,
    group_name=GROUP,
    kinds={"pytorch", "safetensors"},
    code_version=code_version("hydra_pipeline.stages"),
    automation_condition=dg.AutomationCondition.eager(),
)
def compiled_retriever(
    encoder: EncoderResource,
    hypernet_checkpoint: CheckpointRecord,
    task_card: TaskCard,
    corpus: pl.DataFrame,
    doc_embeddings: Embeddings,
) -> dg.Output:
    """The task's whole retriever (head and fusion), compiled from its card over its corpus
    (a fitted fusion gate reads the task's profile)."""
    from hydra_core.data.opened_task import corpus_task
    from hydra_pipeline.stages import compile_card, retriever_digest

    opened = stored_task(corpus_task(corpus), encoder.get(), doc_embeddings)
    compiled = compile_card(hypernet_checkpoint.path, task_card, opened, encoder.get())
    return dg.Output(
        compiled,
        data_version=dg.DataVersion(retriever_digest(compiled)),
        metadata={
            **compiled.fusion.to_dict(),
            "checkpoint": hypernet_checkpoint.checkpoint_id,
        },
    )


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(assets=[fusion_examples, *hypernet_assets(project()), compiled_retriever])
