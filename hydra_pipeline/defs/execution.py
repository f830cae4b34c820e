"""How runs execute: the executor, and the loggers that print ``hydra run``'s progress."""

from __future__ import annotations

import dagster as dg

from hydra_pipeline.defs.progress import hydra_progress
from hydra_pipeline.defs.project import project
from hydra_pipeline.project_config import ProjectConfig


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


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(
        loggers={"console": dg.colored_console_logger, "hydra_progress": hydra_progress},
        executor=build_executor(project()),
    )
