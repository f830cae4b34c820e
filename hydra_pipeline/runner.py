"""``hydra run``: materialize the whole graph in this process, rebuilding only what changed.

On the embedded defaults everything lives in the workspace: a local Dagster instance
(``<workspace>/dagster``), the MLflow sqlite store, the DuckDB metrics file. The steps:

1. add a task partition for every configured card and observe the card and dataset
   fingerprints (an unchanged file records nothing);
2. for each wave (task data, hypernet, heads and metrics, report) ask Dagster what is
   missing or stale and run exactly that, task partitions in parallel processes with the
   ``multiprocess`` executor, one after another with ``in_process``.

A second run with nothing changed finds nothing stale and launches no run at all.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from hydra_core.artifacts import CheckpointRecord, load_value, stored_path
from hydra_core.cards import find_card
from hydra_core.errors import HydraInputError
from hydra_core.project_config import ProjectConfig
from hydra_core.settings import load_settings
from hydra_pipeline.defs.assets.sources import card_state, changed_observations
from hydra_pipeline.defs.jobs import HYPERNET_ASSET, WAVES
from hydra_pipeline.defs.partitions import TASK_PARTITIONS
from hydra_pipeline.planning import PlannedRun, plan_wave

Echo = Callable[[str], None]

DAGSTER_YAML = """\
# Written by hydra for its local Dagster instance; edit freely, hydra never overwrites it.
run_queue:
  max_concurrent_runs: {max_concurrent}
telemetry:
  enabled: false
"""


class PipelineError(RuntimeError):
    """A run failed; the message names the task and step, the UI has the full log."""


@dataclass
class RunSummary:
    """What ``hydra run`` did: the runs it launched, by wave, and how long it took."""

    launched: list[PlannedRun] = field(default_factory=list)
    seconds: float = 0.0


def prepare_dagster_home(config: ProjectConfig) -> Path:
    """Point ``DAGSTER_HOME`` at the workspace unless the environment already set one."""
    home = Path(os.environ.get("DAGSTER_HOME") or config.dagster_home)
    home.mkdir(parents=True, exist_ok=True)
    settings = home / "dagster.yaml"
    if not settings.exists():
        settings.write_text(DAGSTER_YAML.format(max_concurrent=config.executor.max_concurrent))
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def register_tasks(
    instance: dg.DagsterInstance, tasks: list[str], echo: Echo
) -> list[dg.AssetObservation]:
    """Add missing task partitions and record changed card/dataset fingerprints."""
    cards_dir = load_settings().cards_dir
    states = {}
    for name in tasks:
        card = find_card(name, cards_dir)
        if card.name != name:
            raise HydraInputError(f"task {name!r} resolves to a card named {card.name!r}")
        states[name] = card_state(card)
    partitions_name = TASK_PARTITIONS.name or "task"
    missing = [name for name in tasks if not instance.has_dynamic_partition(partitions_name, name)]
    if missing:
        instance.add_dynamic_partitions(partitions_name, missing)
        echo(f"new task partitions: {', '.join(missing)}")
    observations = changed_observations(instance, states)
    for event in observations:
        instance.report_runless_asset_event(event)
    changed = sorted({event.partition for event in observations if event.partition})
    if changed and set(changed) != set(missing):
        echo(f"changed cards or datasets: {', '.join(changed)}")
    return observations


def current_checkpoint(config: ProjectConfig) -> CheckpointRecord | None:
    """The last materialized hypernet checkpoint, as stored by the IO manager."""
    base = config.workspace / "assets" / HYPERNET_ASSET
    if stored_path(base) is None:
        return None
    record = load_value(base)
    return record if isinstance(record, CheckpointRecord) else None


def _run_config(label: str) -> dict:
    return {"loggers": {"hydra_progress": {"config": {"prefix": f"{label:>12}"}}}}


def execute_planned(
    defs: dg.Definitions, instance: dg.DagsterInstance, planned: PlannedRun
) -> tuple[bool, str]:
    """Run one planned run in this process; returns success and a failure message."""
    job = defs.resolve_job_def(planned.wave.job)
    result = job.execute_in_process(
        run_config=_run_config(planned.label),
        instance=instance,
        partition_key=planned.partition,
        asset_selection=[dg.AssetKey(name) for name in planned.assets],
        raise_on_error=False,
        tags={"hydra/launched_by": "hydra run"},
    )
    if result.success:
        return True, ""
    failures = [
        f"{event.step_key}: {event.step_failure_data.error.message.strip()}"
        for event in result.all_events
        if event.is_step_failure and event.step_failure_data.error is not None
    ]
    detail = "; ".join(failures) or "the run failed"
    return False, f"{planned.label} (run {result.run_id}): {detail}"


@functools.cache
def _worker_definitions(config_json: str) -> dg.Definitions:
    from hydra_pipeline.definitions import build_definitions

    return build_definitions(ProjectConfig.model_validate_json(config_json))


def _worker_init(threads: int) -> None:
    """Share the cores between workers; torch reads this when a step first imports it."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["MKL_NUM_THREADS"] = str(threads)


def _worker_execute(config_json: str, planned: PlannedRun) -> tuple[bool, str]:
    """Entry point of a partition worker process (spawned: a fresh interpreter)."""
    defs = _worker_definitions(config_json)
    with dg.DagsterInstance.get() as instance:
        return execute_planned(defs, instance, planned)


class WaveExecutor:
    """Runs a wave's planned runs: task partitions in parallel worker processes when the
    executor is ``multiprocess``, else one after another in this process.

    The worker pool is started on first use and kept for later waves, so each worker pays
    its imports (torch, sentence-transformers, the definitions) once per ``hydra run``.
    """

    def __init__(
        self, config: ProjectConfig, defs: dg.Definitions, instance: dg.DagsterInstance
    ) -> None:
        self.config = config
        self.defs = defs
        self.instance = instance
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> WaveExecutor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._pool is not None:
            self._pool.shutdown()

    def _workers(self) -> ProcessPoolExecutor:
        if self._pool is None:
            workers = self.config.executor.max_concurrent
            self._pool = ProcessPoolExecutor(
                max_workers=workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_init,
                initargs=(max(1, (os.cpu_count() or 1) // workers),),
            )
        return self._pool

    def run(self, planned: list[PlannedRun]) -> list[tuple[bool, str]]:
        parallel = min(self.config.executor.max_concurrent, len(planned))
        if self.config.executor.kind != "multiprocess" or parallel < 2:
            return [execute_planned(self.defs, self.instance, run) for run in planned]
        config_json = self.config.model_dump_json()
        futures = [self._workers().submit(_worker_execute, config_json, run) for run in planned]
        return [future.result() for future in futures]


def run_pipeline(
    config: ProjectConfig,
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    *,
    force: bool = False,
    echo: Echo = print,
) -> RunSummary:
    """Bring every configured task up to date, wave by wave; raise on the first failure."""
    if config.executor.kind == "k8s":
        raise PipelineError(
            "executor.kind is k8s: launch runs through the cluster's Dagster (UI or "
            "`dagster job launch`), not `hydra run`; see docs/pipeline.md"
        )
    started = time.perf_counter()
    summary = RunSummary()
    register_tasks(instance, config.tasks, echo)
    with WaveExecutor(config, defs, instance) as executor:
        for wave in WAVES:
            planned = plan_wave(instance, defs, wave, config.tasks, force=force)
            if not planned:
                echo(f"[{wave.name}] up to date")
                continue
            for run in planned:
                echo(f"[{wave.name}] {run.label}: {len(run.assets)} assets ({run.reasons[0]})")
            outcomes = executor.run(planned)
            summary.launched.extend(planned)
            failures = [message for ok, message in outcomes if not ok]
            if failures:
                raise PipelineError("; ".join(failures))
    summary.seconds = time.perf_counter() - started
    return summary
