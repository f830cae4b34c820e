"""MLflow tracking of hypernet trainings: one MLflow run per training.

A run holds what is needed to trust and reproduce a checkpoint: its parameters (training
config, task list, fingerprints of the data it saw), the losses every few steps and per
epoch, the checkpoint (raw, and as an MLflow model: :mod:`hydra_pipeline.hypernet_model`)
and the results report as artifacts, the final per-task metrics and a few headline ones.
Once every task's blocking checks passed, :func:`register_checkpoint` makes the model a
version of the registered model and moves the ``champion`` alias to it. The experiment is
tagged as one of model development, so MLflow's UI opens it on its runs.

Everything goes through an explicit :class:`~mlflow.tracking.MlflowClient`, never MLflow's
process-global "active run", because pipeline steps of several runs can share a process.
The default store is a sqlite file in the workspace with artifacts beside it; any other
tracking URI (an MLflow server) is used as it is.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
from mlflow.entities import Metric, Param
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

if TYPE_CHECKING:
    from hydra_pipeline.artifacts import CheckpointRecord

log = logging.getLogger(__name__)

TRACKING_ERRORS: tuple[type[Exception], ...] = (MlflowException, OSError)
"""What an unreachable, misconfigured or locked MLflow store raises."""
PARENT_RUN_TAG = "hydra/mlflow_parent_run"
"""The Dagster run tag naming the MLflow run a training nests under (``hydra run``'s)."""
CHECKPOINT_ARTIFACT = "checkpoint"
CHAMPION_ALIAS = "champion"
"""The alias of the registered version the pipeline serves: the last one that passed."""
REPORT_ARTIFACT = "report"
RESULTS_TABLE = "results.json"
"""The report's results as an MLflow table, beside its files under :data:`REPORT_ARTIFACT`."""
PARAMS_ARTIFACT = "params.json"
"""A training run's parameters as given (nested), beside the flat ``a.b`` params."""
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
"""The tag that makes MLflow's UI open the experiment on its runs, not its GenAI views."""
MLFLOW_UI_ADDRESS = "http://127.0.0.1:5000"
"""Where ``mlflow ui`` (the command :meth:`TrackingTarget.ui_command` prints) serves a
local store by default: the address a link to a run on a sqlite/file store points at."""
_MAX_PARAM_CHARS = 6000
_UNSAFE = re.compile(r"[^\w./\- ]")


@dataclass(frozen=True)
class TrackingTarget:
    """Where runs go: a tracking URI, an experiment, and a registered model name."""

    tracking_uri: str
    experiment: str
    registered_model: str
    artifact_root: Path | None = None
    """For a local (sqlite/file) store: the folder holding run artifacts."""

    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    @property
    def is_local(self) -> bool:
        return self.tracking_uri.startswith(("sqlite:", "file:", "/"))

    def ui_command(self) -> str:
        """The command that opens the MLflow UI on this store."""
        if not self.is_local:
            return f"open {self.tracking_uri}"
        command = f"uv run mlflow ui --backend-store-uri {self.tracking_uri}"
        if self.artifact_root is not None:
            command += f" --default-artifact-root {self.artifact_root.as_uri()}"
        return command


def run_url(tracking_uri: str, run_id: str, ui_address: str = MLFLOW_UI_ADDRESS) -> str | None:
    """A browser link to a run: on a server, the server's own page of the run; on a local
    (sqlite/file) store, the page ``mlflow ui`` serves at ``ui_address`` once started.

    None without a run, or when the store does not know it (a link that cannot work is
    worse than none); a lookup failure never fails the caller, the link is a convenience.
    """
    if not tracking_uri or not run_id:
        return None
    try:
        run = MlflowClient(tracking_uri=tracking_uri).get_run(run_id)
    except TRACKING_ERRORS as exc:
        log.warning("no MLflow link for run %s: %s", run_id, exc)
        return None
    return (
        f"{_ui_base(tracking_uri, ui_address)}/#/experiments/{run.info.experiment_id}/runs/{run_id}"
    )


def model_version_url(
    tracking_uri: str, name: str, version: str, ui_address: str = MLFLOW_UI_ADDRESS
) -> str:
    """A browser link to a registered model version (see :func:`run_url` for the address)."""
    return f"{_ui_base(tracking_uri, ui_address)}/#/models/{name}/versions/{version}"


def _ui_base(tracking_uri: str, ui_address: str) -> str:
    remote = tracking_uri.startswith(("http://", "https://"))
    return (tracking_uri if remote else ui_address).rstrip("/")


def metric_key(*parts: str) -> str:
    """An MLflow-safe metric name: ``ndcg@10`` becomes ``ndcg_at_10``; parts joined by ``/``."""
    return "/".join(_UNSAFE.sub("_", part.replace("@", "_at_")) for part in parts)


def experiment_id(target: TrackingTarget, client: MlflowClient | None = None) -> str:
    """The experiment's id, creating it (with artifacts in the workspace when local)."""
    client = client or target.client()
    experiment = client.get_experiment_by_name(target.experiment)
    if experiment is not None:
        if not EXPERIMENT_KIND.items() <= experiment.tags.items():  # made by an older Hydra
            for key, value in EXPERIMENT_KIND.items():
                client.set_experiment_tag(experiment.experiment_id, key, value)
        return experiment.experiment_id
    location = target.artifact_root.as_uri() if target.artifact_root and target.is_local else None
    if target.artifact_root is not None and location is not None:
        target.artifact_root.mkdir(parents=True, exist_ok=True)
    try:
        return client.create_experiment(
            target.experiment, artifact_location=location, tags=EXPERIMENT_KIND
        )
    except MlflowException:  # created meanwhile by a parallel process
        found = client.get_experiment_by_name(target.experiment)
        if found is None:
            raise
        return found.experiment_id


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested parameters as ``a.b`` keys with string values, cut to MLflow's length limit."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, f"{name}."))
        else:
            text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
            flat[_UNSAFE.sub("_", name)] = text[:_MAX_PARAM_CHARS]
    return flat


def nested_under(dagster_tags: Mapping[str, str]) -> dict[str, str]:
    """The MLflow tags that nest a training under the parent run its Dagster run names
    (none for a run launched outside ``hydra run``, from the UI or a schedule)."""
    parent = dagster_tags.get(PARENT_RUN_TAG)
    return {"mlflow.parentRunId": parent} if parent else {}


class ParentRun:
    """The MLflow run one ``hydra run`` nests its hypernet trainings under.

    Created when a wave first trains a hypernet, so a run with nothing to train leaves no
    empty run behind; like training, ``hydra run`` never fails for it: an unreachable store
    is a warning here, and the training step then says what to fix.
    """

    def __init__(self, target: TrackingTarget, run_name: str, tags: Mapping[str, str]) -> None:
        self.target = target
        self.run_name = run_name
        self.tags = dict(tags)
        self.run_id: str | None = None

    def dagster_tags(self) -> dict[str, str]:
        """The Dagster run tags that nest a training under this run, creating it first."""
        if self.run_id is None:
            try:
                client = self.target.client()
                run = client.create_run(
                    experiment_id(self.target, client), run_name=self.run_name, tags=self.tags
                )
                self.run_id = run.info.run_id
            except TRACKING_ERRORS as error:
                log.warning("no parent MLflow run at %s: %s", self.target.tracking_uri, error)
                return {}
        return {PARENT_RUN_TAG: self.run_id}

    def end(self, status: str) -> None:
        """``FINISHED``, ``FAILED`` or ``KILLED`` (Ctrl-C); nothing if it was never created."""
        if self.run_id is None:
            return
        try:
            self.target.client().set_terminated(self.run_id, status)
        except TRACKING_ERRORS as error:
            log.warning("could not end MLflow run %s: %s", self.run_id, error)


class TrainingRun:
    """One hypernet training as an MLflow run; use as a context manager.

    The run ends FINISHED when the block completes and FAILED when it raises, so a crashed
    training is visible as such in the MLflow UI.
    """

    def __init__(
        self,
        target: TrackingTarget,
        *,
        run_name: str,
        params: Mapping[str, Any],
        tags: Mapping[str, str] | None = None,
    ) -> None:
        self.target = target
        self.client = target.client()
        run = self.client.create_run(
            experiment_id(target, self.client), run_name=run_name, tags=dict(tags or {})
        )
        self.run_id: str = run.info.run_id
        # log_batch splits into MLflow's batches of 100 params; the nested original (which
        # flat params cut at MLflow's length limit) is the run's params.json.
        params_list = [Param(key, value) for key, value in flatten_params(params).items()]
        self.client.log_batch(self.run_id, params=params_list)
        self.client.log_dict(self.run_id, dict(params), PARAMS_ARTIFACT)

    def __enter__(self) -> TrainingRun:
        return self

    def __exit__(self, exc_type: object, exc: object, traceback: object) -> None:
        self.client.set_terminated(self.run_id, "FAILED" if exc_type is not None else "FINISHED")

    def log_epoch(self, epoch: int, values: Mapping[str, float]) -> None:
        """Per-epoch losses (and timings) as metric series stepped by epoch."""
        log_metrics(self.client, self.run_id, values, step=epoch)

    def log_losses(self, step: int, values: Mapping[str, float]) -> None:
        """The losses of the last few steps as ``loss/<name>`` series stepped by step."""
        log_metrics(self.client, self.run_id, {f"loss/{k}": v for k, v in values.items()}, step)

    def log_checkpoint(self, directory: Path, example_card: str) -> None:
        """Upload the checkpoint folder, and the checkpoint as an MLflow model (what a
        registered version of it points at) with ``example_card`` as its input example."""
        from hydra_pipeline.hypernet_model import log_hypernet_model

        self.client.log_artifacts(self.run_id, str(directory), CHECKPOINT_ARTIFACT)
        log_hypernet_model(self.client, self.run_id, directory, example_card)


def register_checkpoint(
    target: TrackingTarget, record: CheckpointRecord, description: str
) -> ModelVersion:
    """The version of the registered model holding ``record``'s checkpoint (its run's
    MLflow model), with ``description`` and the ``champion`` alias.

    A checkpoint already registered (found by its ``checkpoint_id`` tag) keeps its version,
    with the description brought up to date: registering again never adds a version. Two
    runs registering it at once both create one, then both keep the first and the other
    deletes its own.
    """
    client = target.client()
    name = target.registered_model
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    query = f"name = '{name}' AND tags.checkpoint_id = '{record.checkpoint_id}'"

    def registered() -> list[ModelVersion]:
        return sorted(client.search_model_versions(query), key=lambda v: int(v.version))

    found = registered()
    if not found:
        from hydra_pipeline.hypernet_model import MODEL_ARTIFACT

        run = client.get_run(record.mlflow_run_id)
        created = client.create_model_version(
            name,
            f"{run.info.artifact_uri}/{MODEL_ARTIFACT}",
            run_id=record.mlflow_run_id,
            tags={"checkpoint_id": record.checkpoint_id},
            description=description,
        )
        found = registered()
        if int(found[0].version) != int(created.version):  # another run registered it meanwhile
            client.delete_model_version(name, created.version)
    version = found[0]
    if version.description != description:
        version = client.update_model_version(name, version.version, description)
    client.set_registered_model_alias(name, CHAMPION_ALIAS, str(version.version))
    return version


def log_metrics(
    client: MlflowClient, run_id: str, values: Mapping[str, float], step: int = 0
) -> None:
    """``values`` at ``step`` under MLflow-safe names (log_batch splits MLflow's batches)."""
    now = int(time.time() * 1000)
    metrics = [Metric(metric_key(k), float(v), now, step) for k, v in values.items()]
    client.log_batch(run_id, metrics=metrics)


def log_task_metrics(target: TrackingTarget, run_id: str, rows: pl.DataFrame) -> None:
    """Final per-task metrics on a finished training run, as ``task/method/metric``."""
    values = {
        f"{task}/{method}/{metric}": value
        for task, method, metric, value in rows.select(
            "task", "method", "metric", "value"
        ).iter_rows()
    }
    log_metrics(target.client(), run_id, values)


def log_headline_metrics(target: TrackingTarget, run_id: str, values: Mapping[str, float]) -> None:
    """The few numbers a run is judged by, as ``headline/<name>`` (see
    :func:`hydra_pipeline.results_figures.headline_metrics`)."""
    log_metrics(target.client(), run_id, {f"headline/{k}": v for k, v in values.items()})


def log_report(
    target: TrackingTarget, run_id: str, files: list[Path], results: pl.DataFrame
) -> None:
    """Attach the results report (markdown and chart) to the training run, and its
    ``results`` (task, method and metric columns) as an MLflow table, which the run's
    artifact view shows as a sortable table."""
    client = target.client()
    for path in files:
        client.log_artifact(run_id, str(path), REPORT_ARTIFACT)
    client.log_table(run_id, results.to_pandas(), f"{REPORT_ARTIFACT}/{RESULTS_TABLE}")
