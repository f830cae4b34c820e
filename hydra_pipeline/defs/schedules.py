"""The retrain schedule: weekly, stopped until switched on (as Dagster schedules are).

It retrains the hypernet on the training tasks' current pairs; heads, the leave-one-out
hypernets, metrics, the report and the registered model follow through their eager
automation conditions (the ``hydra_automation`` sensor), so a retrain that passes its
checks becomes the champion.
"""

from __future__ import annotations

import dagster as dg

from hydra_pipeline.defs.jobs import HYPERNET_JOB
from hydra_pipeline.defs.project import project


@dg.definitions
def defs() -> dg.Definitions:
    weekly_retrain = dg.ScheduleDefinition(
        name="weekly_retrain",
        cron_schedule=project().retrain_cron,
        job_name=HYPERNET_JOB,
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description="Retrain the hypernet; heads, metrics, report and champion follow.",
    )
    return dg.Definitions(schedules=[weekly_retrain])
