"""Sensors: new or edited task cards, and automation of what follows a retrain.

``task_card_sensor`` watches the cards of the configured tasks (``tasks`` of ``hydra.yaml``,
or ``HYDRA_TASKS``) in the cards folder, and only those: a card of a task not in the list
starts nothing. A configured task without a partition gets one; a new or changed card (or
dataset) is recorded as an observation and gets a run of its task's assets, up to its
metrics when a hypernet exists: a new task gets a head from the current hypernet, no
retraining. A card that does not load is reported and retried next tick.

``hydra_automation`` runs the eager conditions of heads, leave-one-out hypernets, metrics,
the report and the registered model, so a retrained hypernet (the schedule, or a click in
the UI) refreshes everything after it and, once every task's quality check passed,
becomes the ``champion``.
"""

# No `from __future__ import annotations` here: Dagster reads these functions' annotations
# at definition time and needs real types (a string `context` annotation is refused).

import dagster as dg

from hydra_core.settings import load_settings
from hydra_pipeline.defs.assets.sources import changed_observations, task_states
from hydra_pipeline.defs.jobs import (
    HYPERNET_ASSET,
    REGISTERED_ASSET,
    REPORT_ASSET,
    TASK_DATA_ASSETS,
    TASK_EVAL_ASSETS,
    TASK_JOB,
)
from hydra_pipeline.defs.partitions import TASK_PARTITIONS
from hydra_pipeline.defs.project import project

CARD_SENSOR = "task_card_sensor"

hydra_automation = dg.AutomationConditionSensorDefinition(
    "hydra_automation",
    target=dg.AssetSelection.assets(*TASK_EVAL_ASSETS, REPORT_ASSET, REGISTERED_ASSET),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Refreshes heads, leave-one-out hypernets, metrics and the report after "
    "their inputs change, and "
    "registers the hypernet as champion once every task passed its quality check.",
)


@dg.definitions
def defs() -> dg.Definitions:
    """The card sensor watches the configured tasks; the automation sensor is fixed."""
    tasks = list(project().tasks)
    cards_dir = load_settings().cards_dir

    @dg.sensor(
        name=CARD_SENSOR,
        job_name=TASK_JOB,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            f"Watches the cards of {', '.join(tasks)} (the configured tasks: hydra.yaml or "
            f"HYDRA_TASKS) in {cards_dir}: a new one gets its partition, a new or changed "
            "card or dataset a run of its task. Other cards in the folder are ignored."
        ),
    )
    def task_card_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        states, problems = task_states(tasks, cards_dir)
        for problem in problems.values():
            context.log.warning(f"skipping: {problem}")
        observations = changed_observations(context.instance, states)
        if not observations:
            return dg.SkipReason(f"{len(states)} cards of {len(tasks)} tasks, none new or changed")
        existing = set(context.instance.get_dynamic_partitions(TASK_PARTITIONS.name or "task"))
        new = sorted(set(states) - existing)
        changed = sorted({event.partition for event in observations if event.partition})
        has_hypernet = (
            context.instance.get_latest_materialization_event(dg.AssetKey(HYPERNET_ASSET))
            is not None
        )
        selection = [dg.AssetKey(name) for name in TASK_DATA_ASSETS]
        if has_hypernet:
            selection += [dg.AssetKey(name) for name in TASK_EVAL_ASSETS]
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key=f"{name}:{states[name].card_version}:{states[name].data_version}",
                    partition_key=name,
                    asset_selection=selection,
                    tags={"hydra/trigger": "new card" if name in new else "changed card"},
                )
                for name in changed
            ],
            dynamic_partitions_requests=[TASK_PARTITIONS.build_add_request(new)] if new else [],
            asset_events=observations,
        )

    return dg.Definitions(sensors=[task_card_sensor, hydra_automation])
