"""The Dagster definitions of the Hydra pipeline, built from the project configuration.

``workspace.yaml`` points Dagster (``dagster dev``, the webserver, the daemon) at this
module; ``hydra run`` builds the same definitions in-process. Everything that varies between
a laptop and a cluster (workspace, stores, executor, training settings) comes from
``hydra.yaml`` and the environment, never from code.
"""

from __future__ import annotations

import dagster as dg

from hydra_pipeline.defs import asset_checks, schedules, sensors
from hydra_pipeline.defs.assets import (
    data,
    embeddings,
    evaluation,
    registry,
    report,
    sources,
    teachers,
    training,
)
from hydra_pipeline.defs.io_manager import HydraIOManager
from hydra_pipeline.defs.jobs import build_jobs
from hydra_pipeline.defs.progress import hydra_progress
from hydra_pipeline.defs.resources import build_resources
from hydra_pipeline.project_config import ProjectConfig, load_project_config


def build_executor(config: ProjectConfig) -> dg.ExecutorDefinition:
    """Steps of one run execute in its process, except on Kubernetes.

    Locally, parallelism is across task partitions (separate runs, each its own process),
    not across the steps of a run: a step process would pay ~15 s of torch and
    sentence-transformers imports for steps that take seconds.
    """
    if config.executor.kind != "k8s":
        return dg.in_process_executor
    try:
        from dagster_k8s import k8s_job_executor  # type: ignore[import-not-found]
    except ImportError as exc:
        raise ImportError(
            "executor.kind is k8s but dagster-k8s is not installed: `uv add dagster-k8s`"
        ) from exc
    return (
        k8s_job_executor.configured(config.executor.k8s)
        if config.executor.k8s
        else (k8s_job_executor)
    )


def build_definitions(config: ProjectConfig | None = None) -> dg.Definitions:
    """All assets, checks, jobs, schedules, sensors and resources for ``config``."""
    config = config or load_project_config()
    assets = [
        sources.card_file,
        sources.dataset_files,
        *data.build(config),
        *embeddings.build(config),
        *teachers.build(config),
        *training.build(config),
        *evaluation.build(config),
        *report.build(config),
        *registry.build(config),
    ]
    return dg.Definitions(
        assets=assets,
        asset_checks=asset_checks.build(config),
        jobs=build_jobs(),
        schedules=schedules.build(config),
        sensors=sensors.build(config),
        resources={
            **build_resources(config),
            "io_manager": HydraIOManager(root=str(config.workspace / "assets")),
        },
        loggers={"console": dg.colored_console_logger, "hydra_progress": hydra_progress},
        executor=build_executor(config),
    )


@dg.definitions
def defs() -> dg.Definitions:
    """What Dagster loads (see ``workspace.yaml``): the definitions for ``hydra.yaml``."""
    return build_definitions()
