"""The registered hypernet: the checkpoint as a version of the registered model, made only
once every task has been evaluated with it and has passed the quality check.

Training registers nothing, so a version in the registry (and the ``champion`` alias on
it) always stands for a checkpoint whose metrics were recorded and checked. The check is
blocking: in a run that also evaluates, a failed check stops the run before this asset;
in a later run (``hydra run`` again, a click in the UI) this asset reads the checks' last
results itself, so a failed one keeps the checkpoint unregistered until its inputs change.
"""

# No `from __future__ import annotations` here: Dagster reads these functions' annotations
# at definition time and needs real types (a string `context` annotation is refused).

from collections.abc import Sequence
from dataclasses import replace

import dagster as dg
from dagster import AssetExecutionContext

from hydra_core.data.fingerprints import text_digest
from hydra_pipeline.artifacts import CheckpointRecord
from hydra_pipeline.defs.asset_checks import QUALITY_CHECK
from hydra_pipeline.defs.jobs import HYPERNET_ASSET
from hydra_pipeline.defs.project import project
from hydra_pipeline.defs.resources import MetricsDbResource, TrackingResource
from hydra_pipeline.defs.versions import code_version


class CheckNotPassedError(RuntimeError):
    """A task's quality check failed (or never ran): no version."""


def _unpassed(
    instance: dg.DagsterInstance, tasks: Sequence[str], evaluated: Sequence[str]
) -> list[str]:
    """``task (why)`` for each of ``tasks`` not ``evaluated`` with the checkpoint yet, or
    whose last completed quality check did not pass.

    The last completed one, not the one on the latest materialization: two runs at once
    each materialize the metrics (the same numbers), and the other run's check may still be
    running when this one registers. A check records its evaluation only once it has
    completed (passed or failed), so the newest evaluation per task is the last completed
    check. The event log indexes evaluations by neither asset nor partition, and paging
    through them needs a cursor that differs between storages, so this reads them all: a
    few per task and run, once per registration.
    """
    latest: dict[str | None, bool] = {}
    records = instance.get_event_records(
        dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    )
    for record in records:  # newest first
        event = record.event_log_entry.dagster_event
        evaluation = None if event is None else event.asset_check_evaluation_data
        if evaluation is not None and evaluation.asset_check_key == QUALITY_CHECK:
            latest.setdefault(evaluation.partition, evaluation.passed)
    return [
        f"{task} (not evaluated with it)"
        if task not in evaluated
        else f"{task} (never ran)"
        if task not in latest
        else f"{task} (FAILED)"
        for task in tasks
        if task not in evaluated or not latest.get(task, False)
    ]


def registered_model_asset(model_name: str, tasks: Sequence[str]) -> dg.AssetsDefinition:
    """Versioned on the registered model's name: another name registers anew.

    Eager on the metrics only: a retrained hypernet is registered once its tasks' metrics
    (and their checks) are in, not the moment it is trained (``hydra_automation`` runs it
    after the weekly retrain). Every one of the configured ``tasks`` must have been
    evaluated with the checkpoint and passed.
    """

    @dg.asset(
        deps=["task_metrics"],
        group_name="evaluation",
        code_version=code_version(
            "hydra_pipeline.tracking",
            "hydra_pipeline.results_figures",
            config={"registered_model": model_name},
        ),
        automation_condition=dg.AutomationCondition.eager().ignore(
            dg.AssetSelection.assets(HYPERNET_ASSET)
        )
        & dg.AutomationCondition.all_deps_blocking_checks_passed(),
        description=f"The hypernet as a version of {model_name} with the alias "
        f"champion, once every task passed {QUALITY_CHECK.name}.",
    )
    def registered_model(
        context: AssetExecutionContext,
        metrics_db: MetricsDbResource,
        tracking: TrackingResource,
        hypernet_checkpoint: CheckpointRecord,
    ) -> dg.Output[CheckpointRecord]:
        """Register the checkpoint (one version per checkpoint, found again by its
        ``checkpoint_id`` tag), move the alias to it, and describe it by its mean gains."""
        from hydra_pipeline.results_figures import checkpoint_results, gains_description
        from hydra_pipeline.tracking import (
            CHAMPION_ALIAS,
            model_version_url,
            register_checkpoint,
            run_url,
        )

        try:
            results = checkpoint_results(
                metrics_db.database, tasks, hypernet_checkpoint.checkpoint_id
            )
        except ValueError as error:  # no task evaluated with it yet
            raise CheckNotPassedError(f"{error}: not registered as {model_name}") from None
        evaluated = results["task"].unique(maintain_order=True).to_list()
        problems = _unpassed(context.instance, tasks, evaluated)
        if problems:
            raise CheckNotPassedError(
                f"checkpoint {hypernet_checkpoint.checkpoint_id} not registered as "
                f"{model_name}: {QUALITY_CHECK.name} has not passed on " + ", ".join(problems)
            )
        description = (
            f"Checkpoint {hypernet_checkpoint.checkpoint_id}. {gains_description(results)}"
        )
        target = tracking.target()
        version = register_checkpoint(target, hypernet_checkpoint, description)
        record = replace(
            hypernet_checkpoint,
            model_name=target.registered_model,
            model_version=str(version.version),
        )
        metadata: dict[str, dg.RawMetadataValue] = {
            "model_version": f"{record.model_name} v{record.model_version}",
            "alias": CHAMPION_ALIAS,
            "description": description,
            "mlflow_model": dg.MetadataValue.url(
                model_version_url(target.tracking_uri, record.model_name, record.model_version)
            ),
        }
        url = run_url(record.tracking_uri, record.mlflow_run_id)
        if url is not None:
            metadata["mlflow_run"] = dg.MetadataValue.url(url)
        return dg.Output(
            record,
            data_version=dg.DataVersion(text_digest(record.model_version, description)),
            metadata=metadata,
        )

    return registered_model


@dg.definitions
def defs() -> dg.Definitions:
    config = project()
    return dg.Definitions(assets=[registered_model_asset(config.registered_model, config.tasks)])
