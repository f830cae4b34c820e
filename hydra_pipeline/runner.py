"""``hydra run``: materialize the whole graph in this process, rebuilding only what changed.

On the embedded defaults everything lives in the workspace: a local Dagster instance
(``<workspace>/dagster``), the MLflow sqlite store, the DuckDB metrics file. The steps:

1. add a task partition for every configured card and observe the card and dataset
   fingerprints (an unchanged file records nothing);
2. for each wave (task data, hypernet, heads and metrics, report) read from Dagster's
   records what is missing or out of date (:mod:`hydra_pipeline.planning`) and run exactly
   that, task partitions in parallel processes with the ``multiprocess`` executor, one
   after another with ``in_process``.

A second run with nothing changed finds nothing stale and launches no run at all. Ctrl-C
stops after the running partitions have stopped; what finished stays, so the next run
resumes from there.
"""

from __future__ import annotations

import functools
import importlib.util
import multiprocessing
import os
import signal
import socket
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from types import FrameType

import dagster as dg
import yaml
from dagster_shared.error import SerializableErrorInfo
from filelock import FileLock

from hydra_core.atomic import write_text_atomic
from hydra_core.errors import HydraInputError
from hydra_core.settings import load_settings
from hydra_pipeline.artifacts import CheckpointRecord, load_value, stored_path
from hydra_pipeline.defs.assets.sources import changed_observations, task_states
from hydra_pipeline.defs.jobs import HYPERNET_ASSET, REGISTERED_ASSET, TRAINING_ASSETS, WAVES
from hydra_pipeline.defs.partitions import TASK_PARTITIONS
from hydra_pipeline.defs.progress import cause_chain, is_interrupt
from hydra_pipeline.planning import PlannedRun, plan_wave
from hydra_pipeline.project_config import POSTGRES_URL_ENV, ProjectConfig
from hydra_pipeline.tracking import ParentRun, TrackingTarget, experiment_id

Echo = Callable[[str], None]

DAGSTER_YAML = """\
# Written by hydra for its local Dagster instance; edit freely, hydra never overwrites it.
run_queue:
  max_concurrent_runs: {max_concurrent}
telemetry:
  enabled: false
# hydra's own log lines (training loss, encoding progress) on each run's page in the UI
python_logs:
  managed_python_loggers: [hydra_core, hydra_pipeline]
  python_log_level: INFO
"""
POSTGRES_STORAGE = {"postgres": {"postgres_url": {"env": POSTGRES_URL_ENV}}}
"""Dagster's storage section for ``dagster_postgres_url``: the URL is read from the
environment (which :func:`prepare_dagster_home` sets), so no password lands in the file."""


@dataclass(frozen=True)
class StepFailure:
    """One failed step: where (step, task, Dagster run), why (the cause chain's messages,
    outermost first) and the full traceback for ``--verbose``."""

    step: str
    partition: str | None
    run_id: str
    causes: tuple[str, ...]
    traceback: str
    check: bool = False
    """A blocking asset check failed: a verdict on the results, not a fault of the step."""

    def describe(self) -> str:
        where = f"task {self.partition}" if self.partition else "across tasks"
        lines = [f"step {self.step} failed ({where}, Dagster run {self.run_id}):"]
        return "\n".join(lines + [f"  {cause}" for cause in self.causes])


@dataclass(frozen=True)
class RunOutcome:
    """What became of one planned run (``interrupted`` also when Ctrl-C kept it from starting)."""

    planned: PlannedRun
    success: bool
    interrupted: bool = False
    failures: tuple[StepFailure, ...] = ()


class PipelineError(RuntimeError):
    """Runs failed; each failure names its step, task, Dagster run and cause."""

    def __init__(self, message: str, failures: tuple[StepFailure, ...] = ()) -> None:
        super().__init__(message)
        self.failures = failures

    @classmethod
    def of(cls, failures: list[StepFailure]) -> PipelineError:
        return cls("\n".join(f.describe() for f in failures), tuple(failures))


class PipelineInterrupted(Exception):
    """Ctrl-C: the runs that finished before it are kept; the next run resumes after them."""

    def __init__(self, finished: list[PlannedRun]) -> None:
        done = ", ".join(f"[{run.wave.name}] {run.label}" for run in finished)
        super().__init__(f"finished before the interrupt: {done or 'nothing'}")
        self.finished = finished


@dataclass
class RunSummary:
    """What ``hydra run`` did: the runs it launched, by wave, and how long it took."""

    launched: list[PlannedRun] = field(default_factory=list)
    seconds: float = 0.0


def prepare_dagster_home(config: ProjectConfig) -> Path:
    """Point ``DAGSTER_HOME`` at the workspace unless the environment already set one.

    With ``dagster_postgres_url`` the instance keeps its runs, events and schedules in that
    database: its ``dagster.yaml`` gets the storage section (added to a file without one)
    and the environment the URL, which the run workers and ``hydra ui``'s processes inherit.
    """
    home = Path(os.environ.get("DAGSTER_HOME") or config.dagster_home)
    home.mkdir(parents=True, exist_ok=True)
    settings = home / "dagster.yaml"
    if not settings.exists():
        text = DAGSTER_YAML.format(max_concurrent=config.executor.max_concurrent)
        write_text_atomic(settings, text)
    if config.dagster_postgres_url is not None:
        _use_postgres_storage(config, settings)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def _use_postgres_storage(config: ProjectConfig, settings: Path) -> None:
    if importlib.util.find_spec("dagster_postgres") is None:
        raise HydraInputError(
            "Dagster storage on Postgres needs dagster-postgres: uv sync --group postgres",
            path=config.config_path,
            field="dagster_postgres_url",
        )
    text = settings.read_text(encoding="utf-8")
    storage = (yaml.safe_load(text) or {}).get("storage")
    if storage is None:
        section = yaml.safe_dump({"storage": POSTGRES_STORAGE}, sort_keys=False)
        write_text_atomic(settings, f"{text.rstrip()}\n{section}")
    elif storage != POSTGRES_STORAGE:
        raise HydraInputError(
            f"its storage section is not the one dagster_postgres_url asks for "
            f"({POSTGRES_STORAGE}): remove that section, or dagster_postgres_url",
            path=settings,
            field="storage",
        )
    os.environ[POSTGRES_URL_ENV] = str(config.dagster_postgres_url)


def workspace_lock(config: ProjectConfig) -> FileLock:
    """Held while a process creates the stores or adds task partitions.

    Dagster's and MLflow's sqlite stores build their schema on first use (alembic
    migrations), and Dagster refuses a task partition added twice: two first ``hydra run``s
    at once would do both at the same time, and one of them fails.
    """
    config.workspace.mkdir(parents=True, exist_ok=True)
    return FileLock(config.workspace / ".stores.lock")


def tracking_target(config: ProjectConfig) -> TrackingTarget:
    return TrackingTarget(
        config.resolved_tracking_uri,
        config.experiment,
        config.registered_model,
        config.artifact_root,
    )


def prepare_stores(config: ProjectConfig) -> Path:
    """The Dagster home, with the Dagster and local MLflow stores created one process at a
    time (see :func:`workspace_lock`); returns the Dagster home."""
    with workspace_lock(config):
        home = prepare_dagster_home(config)
        with dg.DagsterInstance.get():  # opening it creates (or migrates) its storage
            pass
        target = tracking_target(config)
        if target.is_local:  # an MLflow server manages its own schema
            experiment_id(target)
    return home


def register_tasks(
    instance: dg.DagsterInstance, tasks: list[str], echo: Echo
) -> list[dg.AssetObservation]:
    """Add missing task partitions and record changed card/dataset fingerprints."""
    states, problems = task_states(tasks, load_settings().cards_dir)
    if problems:
        raise HydraInputError(next(iter(problems.values())))
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


def current_checkpoint(
    config: ProjectConfig, asset: str = HYPERNET_ASSET
) -> CheckpointRecord | None:
    """The last materialized hypernet checkpoint (or, with ``asset`` ``registered_model``,
    the last registered one), as stored by the IO manager."""
    base = config.workspace / "assets" / asset
    if stored_path(base) is None:
        return None
    record = load_value(base)
    return record if isinstance(record, CheckpointRecord) else None


def champion_checkpoint(config: ProjectConfig) -> CheckpointRecord:
    """The champion: the checkpoint last registered, i.e. the last one that passed every
    task's quality check (what ``models:/<registered_model>@champion`` points at); an
    error saying what to run when there is none."""
    record = current_checkpoint(config, REGISTERED_ASSET)
    if record is None:
        raise HydraInputError(
            "no champion hypernet yet: run `hydra run` (a checkpoint becomes the champion "
            "once every task passed its quality check), or pass --checkpoint DIR",
            path=config.workspace / "assets" / REGISTERED_ASSET,
        )
    return record


_CHECK_FAILED = "DagsterAssetCheckFailedError"
"""What a step raises when a blocking check it ran failed."""


PID_TAG = "hydra/pid"
HOST_TAG = "hydra/host"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def fail_stale_runs(instance: dg.DagsterInstance, echo: Echo) -> list[str]:
    """Mark failed the runs Dagster still records as started whose ``hydra run`` process
    on this machine is gone (SIGKILLed, or the machine stopped): they would show as running
    forever. A run of a live process (another ``hydra run`` at work) is left alone, as are
    runs without the process tags. Returns their ids."""
    host = socket.gethostname()
    statuses = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]
    stale = [
        run
        for run in instance.get_runs(filters=dg.RunsFilter(statuses=statuses))
        if run.tags.get(HOST_TAG) == host
        and run.tags.get(PID_TAG, "").isdigit()
        and not _process_alive(int(run.tags[PID_TAG]))
    ]
    for run in stale:
        instance.report_run_failed(
            run, f"its process ({run.tags[PID_TAG]}) ended without finishing the run"
        )
    if stale:
        ids = ", ".join(run.run_id for run in stale)
        echo(f"marked {len(stale)} run(s) failed whose process had died: {ids}")
    return [run.run_id for run in stale]


def _run_config(label: str) -> dict:
    return {"loggers": {"hydra_progress": {"config": {"prefix": f"{label:>12}"}}}}


def execute_planned(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    planned: PlannedRun,
    tags: Mapping[str, str] | None = None,
) -> RunOutcome:
    """Run one planned run in this process, with ``tags`` besides hydra's own.

    Dagster turns Ctrl-C during a run into a failed run, so an interrupt is recognised
    here by its error and reported as such, never as a failure to fix.
    """
    job = defs.resolve_job_def(planned.wave.job)
    try:
        result = job.execute_in_process(
            run_config=_run_config(planned.label),
            instance=instance,
            partition_key=planned.partition,
            asset_selection=[dg.AssetKey(name) for name in planned.assets],
            raise_on_error=False,
            tags={
                "hydra/launched_by": "hydra run",
                PID_TAG: str(os.getpid()),  # so a later run can tell this one died
                HOST_TAG: socket.gethostname(),
                **dict(tags or {}),
            },
        )
    except KeyboardInterrupt:  # before Dagster took over the signal
        return RunOutcome(planned, success=False, interrupted=True)
    if result.success:
        return RunOutcome(planned, success=True)
    errors: list[tuple[str, SerializableErrorInfo | None]] = []
    verdicts: dict[str, list[str]] = {}  # a step's failed checks, with what they measured
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            evaluation = event.asset_check_evaluation_data
            if not evaluation.passed:
                measured = ", ".join(f"{k} {v.value}" for k, v in evaluation.metadata.items())
                verdict = f"check {evaluation.check_name} failed: {measured}"
                verdicts.setdefault(event.step_key or "?", []).append(verdict)
        elif event.is_step_failure:
            errors.append((event.step_key or "?", event.step_failure_data.error))
        elif event.is_run_failure and not errors:  # the run failed outside any step
            errors.append(("(run)", event.job_failure_data.error))
    errors = errors or [("(run)", None)]
    if any(is_interrupt(error) for _, error in errors if error is not None):
        return RunOutcome(planned, success=False, interrupted=True)
    failures = tuple(
        StepFailure(
            step=step,
            partition=planned.partition,
            run_id=result.run_id,
            causes=tuple(
                verdicts.get(step) or (cause_chain(error) if error else ["the run failed"])
            ),
            traceback=error.to_string() if error else "",
            check=error is not None and error.cls_name == _CHECK_FAILED,
        )
        for step, error in errors
    )
    return RunOutcome(planned, success=False, failures=failures)


@functools.cache
def _worker_definitions(config_json: str) -> dg.Definitions:
    from hydra_pipeline.definitions import build_definitions

    return build_definitions(ProjectConfig.model_validate_json(config_json))


# In a worker: the flag every process sets on Ctrl-C (no worker then starts another run),
# and whether Ctrl-C came while this worker was between runs.
_stop: EventType | None = None
_interrupted = False


def _note_interrupt(signum: int, frame: FrameType | None) -> None:
    global _interrupted
    _interrupted = True


def _worker_init(threads: int, stop: EventType) -> None:
    """Share the cores between workers; torch reads this when a step first imports it.

    Between runs a worker only notes Ctrl-C (the terminal sends it to every process): a
    KeyboardInterrupt there would kill the worker and break the pool.
    """
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["MKL_NUM_THREADS"] = str(threads)
    global _stop
    _stop = stop
    signal.signal(signal.SIGINT, _note_interrupt)


def _worker_execute(config_json: str, planned: PlannedRun, tags: dict[str, str]) -> RunOutcome:
    """Entry point of a partition worker process (spawned: a fresh interpreter)."""
    assert _stop is not None, "the pool's initializer sets it"
    defs = _worker_definitions(config_json)
    outcome = RunOutcome(planned, success=False, interrupted=True)
    if not (_interrupted or _stop.is_set()):
        # Ctrl-C interrupts the run: as KeyboardInterrupt until Dagster takes the signal over.
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            with dg.DagsterInstance.get() as instance:
                outcome = execute_planned(defs, instance, planned, tags)
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGINT, previous)
    if outcome.interrupted:
        _stop.set()
    return outcome


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
        self._context = multiprocessing.get_context("spawn")
        self._stop = self._context.Event()

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
                mp_context=self._context,
                initializer=_worker_init,
                initargs=(max(1, (os.cpu_count() or 1) // workers), self._stop),
            )
        return self._pool

    def run(
        self, planned: list[PlannedRun], tags: dict[str, str] | None = None
    ) -> list[RunOutcome]:
        """One outcome per planned run, each a Dagster run with ``tags``; after Ctrl-C, the
        runs not started are interrupted."""
        parallel = min(self.config.executor.max_concurrent, len(planned))
        if self.config.executor.kind != "multiprocess" or parallel < 2:
            outcomes: list[RunOutcome] = []
            for run in planned:
                if outcomes and outcomes[-1].interrupted:
                    outcomes.append(RunOutcome(run, success=False, interrupted=True))
                else:
                    outcomes.append(execute_planned(self.defs, self.instance, run, tags))
            return outcomes
        config_json = self.config.model_dump_json()
        pool = self._workers()
        futures = [pool.submit(_worker_execute, config_json, run, tags or {}) for run in planned]
        try:
            return [future.result() for future in futures]
        except KeyboardInterrupt:
            # The workers running a partition got the same Ctrl-C (one process group); wait
            # for them to stop, and start no other partition.
            self._stop.set()
            self._workers().shutdown(cancel_futures=True)
            self._pool = None
            pairs = zip(futures, planned, strict=True)
            return [_finished_or_interrupted(future, run) for future, run in pairs]


def _finished_or_interrupted(future: Future[RunOutcome], planned: PlannedRun) -> RunOutcome:
    if future.done() and not future.cancelled() and future.exception() is None:
        return future.result()
    return RunOutcome(planned, success=False, interrupted=True)


def run_pipeline(
    config: ProjectConfig,
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    *,
    force: bool = False,
    echo: Echo = print,
) -> RunSummary:
    """Bring every configured task up to date, wave by wave; raise on the first failure.

    A failed blocking check is a verdict, not a fault: the later waves still run (the report
    shows why), its ``registered_model`` step refuses the checkpoint, and then this raises
    with both.
    """
    if config.executor.kind == "k8s":
        raise PipelineError(
            "executor.kind is k8s: launch runs through the cluster's Dagster (UI or "
            "`dagster job launch`), not `hydra run`; see docs/pipeline.md"
        )
    started = time.perf_counter()
    summary = RunSummary()
    parent = ParentRun(
        tracking_target(config),
        f"hydra run {time.strftime('%Y-%m-%d %H:%M:%S')}",
        {"hydra/launched_by": "hydra run", "hydra/tasks": ",".join(config.tasks)},
    )
    status = "FAILED"
    checks: list[StepFailure] = []  # failed blocking checks: later waves still run
    try:
        with workspace_lock(config):
            fail_stale_runs(instance, echo)
            register_tasks(instance, config.tasks, echo)
        with WaveExecutor(config, defs, instance) as executor:
            for wave in WAVES:
                planned = plan_wave(instance, defs, wave, config.tasks, force=force)
                if not planned:
                    echo(f"[{wave.name}] up to date")
                    continue
                for run in planned:
                    echo(f"[{wave.name}] {run.label}: {len(run.assets)} assets ({run.reasons[0]})")
                trains = any(set(run.assets) & TRAINING_ASSETS for run in planned)
                outcomes = executor.run(planned, parent.dagster_tags() if trains else {})
                summary.launched.extend(outcome.planned for outcome in outcomes if outcome.success)
                if any(outcome.interrupted for outcome in outcomes):
                    status = "KILLED"
                    raise PipelineInterrupted(summary.launched)
                failures = [f for outcome in outcomes for f in outcome.failures]
                checks += [f for f in failures if f.check]
                faults = [f for f in failures if not f.check]
                if faults:
                    raise PipelineError.of([*checks, *faults])
        if checks:  # the later waves ran (the report); the hypernet stayed unregistered
            raise PipelineError.of(checks)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise PipelineInterrupted(summary.launched) from None
    finally:
        parent.end(status)
    summary.seconds = time.perf_counter() - started
    return summary
