"""Project configuration: which task cards run, where results go, how runs execute.

One YAML file, ``hydra.yaml`` at the project root (``HYDRA_CONFIG`` names another), holds
what a team decides once and shares: the task list, the training tasks, the executor, the
tracking and metrics stores, the training settings. Environment variables override the
locations, so a laptop, CI and a cluster node run the same file:

- ``HYDRA_WORKSPACE``: the workspace folder (caches, assets, checkpoints, stores);
- ``MLFLOW_TRACKING_URI``: an MLflow server instead of the workspace's sqlite file;
- ``HYDRA_DAGSTER_POSTGRES_URL``: Dagster's runs, events and schedules in Postgres instead
  of the workspace's sqlite files;
- ``HYDRA_METRICS_DB``: the DuckDB database (a path, or ``md:<name>`` for MotherDuck);
- ``HYDRA_EXECUTOR``: ``in_process``, ``multiprocess`` or ``k8s``;
- ``HYDRA_TASKS``: a comma-separated task list replacing ``tasks``.

Relative paths in the file are resolved against the file's folder, so the project can be
checked out anywhere.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from hydra_core.errors import HydraInputError
from hydra_core.settings import PROJECT_ROOT

if TYPE_CHECKING:
    from hydra_core.evaluation.perturbations import Perturbation

CONFIG_FILE_NAME = "hydra.yaml"
DEFAULT_TASKS: tuple[str, ...] = ("scifact", "nfcorpus", "cranfield", "cacm", "vaswani")
POSTGRES_URL_ENV = "HYDRA_DAGSTER_POSTGRES_URL"
POSTGRES_DRIVER_URL = "postgresql+psycopg2://"
"""How a Postgres URL must start: SQLAlchemy 2.1 reads a bare ``postgresql://`` as psycopg 3,
with which Dagster's run storage fails (``NOTIFY run_events``); psycopg2 is the driver
``dagster-postgres`` installs and MLflow's server accepts."""

ExecutorKind = Literal["in_process", "multiprocess", "k8s"]


class ExecutorConfig(BaseModel):
    """How Dagster executes runs.

    ``multiprocess`` runs task partitions in parallel processes (at most ``max_concurrent``);
    ``in_process`` runs everything in one process, one partition after another (the fastest
    choice for small runs and tests); ``k8s`` runs each step as a Kubernetes job through
    ``dagster-k8s`` and is meant for the daemon, not for ``hydra run``.
    """

    model_config = ConfigDict(extra="forbid")

    kind: ExecutorKind = "multiprocess"
    max_concurrent: int = Field(default=2, ge=1)
    k8s: dict[str, Any] = Field(default_factory=dict)
    """Config passed verbatim to ``dagster_k8s.k8s_job_executor`` (image, namespace, ...)."""


class TrainingConfig(BaseModel):
    """Knobs of the hypernet run; the keys of ``train`` are fields of ``TrainConfig``."""

    model_config = ConfigDict(extra="forbid")

    train: dict[str, Any] = Field(default_factory=dict)
    architecture: dict[str, Any] = Field(default_factory=dict)
    """Fields of ``HypernetConfig`` (the hypernet's sizes: ``out_dim``, ``cond_dim``, ``rank``)."""
    pairs: dict[str, Any] = Field(default_factory=dict)
    """Fields of ``PairConfig`` (how fused rankings become preference pairs)."""
    training_queries: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments of ``training_queries`` (``n_generated``, ``max_queries``, ``seed``)."""
    labelled_train: dict[str, Any] = Field(default_factory=dict)
    """``TrainConfig`` fields for the hypernet trained with the cards' labels (``hydra+labels``),
    over ``LABELLED_TRAINING``."""
    refine_steps: int = Field(default=100, ge=0)
    """Steps of ``hydra-unseen-refined`` (refine mode on each left-out task); 0 leaves it out."""


def _perturbation_spec(spec: str) -> str:
    """A ``KIND[:RATE]`` that parses: a misspelt kind fails when the file loads, not after
    the pipeline's first waves."""
    from hydra_core.evaluation.perturbations import parse_perturbation

    parse_perturbation(spec, label="")
    return spec


class RobustnessConfig(BaseModel):
    """Perturbed test queries every task's methods are also scored on (``task_robustness``).

    None by default: robustness is asked for, and until then its asset stores nothing and
    loads no model.
    """

    model_config = ConfigDict(extra="forbid")

    perturbations: list[Annotated[str, AfterValidator(_perturbation_spec)]] = Field(
        default_factory=list
    )
    """``KIND[:RATE]`` each, as ``hydra eval --perturb`` takes them (RATE: the kind's default)."""
    seed: int = 0

    def parsed(self) -> list[Perturbation]:
        from hydra_core.evaluation.perturbations import parse_perturbation

        return [parse_perturbation(spec, self.seed) for spec in self.perturbations]

    @model_validator(mode="after")
    def _distinct(self) -> RobustnessConfig:
        """One row per perturbation in the store: the same kind and rate twice is a slip."""
        seen: dict[Perturbation, str] = {}
        for spec, perturbation in zip(self.perturbations, self.parsed(), strict=True):
            if perturbation in seen:
                raise ValueError(f"{spec!r} repeats {seen[perturbation]!r} ({perturbation})")
            seen[perturbation] = spec
        return self


class ProjectConfig(BaseModel):
    """The resolved project configuration; build one with :func:`load_project_config`."""

    model_config = ConfigDict(extra="forbid")

    tasks: list[str] = Field(default_factory=lambda: list(DEFAULT_TASKS), min_length=1)
    training_tasks: list[str] | None = None
    """Tasks whose preference pairs train the hypernet; ``None`` means all of ``tasks``."""
    workspace: Path = PROJECT_ROOT / "workspace"
    encoder_model: str = "all-MiniLM-L6-v2"
    """The frozen base encoder (a sentence-transformers name or folder)."""
    tracking_uri: str | None = None
    experiment: str = "hydra"
    registered_model: str = "hydra-hypernet"
    metrics_db: str | None = None
    dagster_postgres_url: str | None = None
    """Dagster's run, event and schedule storage in Postgres; ``None``: sqlite files in the
    Dagster home."""
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    tolerance: float = Field(default=0.005, ge=-1, le=1)
    """How far below the base model's NDCG@10 hydra may fall before its check fails."""
    retrain_cron: str = "0 4 * * 1"
    robustness: RobustnessConfig = Field(default_factory=RobustnessConfig)
    config_path: Path | None = Field(default=None, exclude=True)

    @field_validator("dagster_postgres_url")
    @classmethod
    def _psycopg2_url(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(POSTGRES_DRIVER_URL):
            scheme = url.split("://", 1)[0]
            raise ValueError(f"must start with {POSTGRES_DRIVER_URL} (got {scheme}://)")
        return url

    @property
    def training_task_names(self) -> list[str]:
        return list(self.training_tasks) if self.training_tasks is not None else list(self.tasks)

    @property
    def resolved_tracking_uri(self) -> str:
        """The MLflow store: the configured URI, else a sqlite file in the workspace."""
        return self.tracking_uri or f"sqlite:///{self.workspace / 'mlflow.db'}"

    @property
    def artifact_root(self) -> Path:
        """Where a local tracking store keeps run artifacts (checkpoints, reports)."""
        return self.workspace / "mlartifacts"

    @property
    def resolved_metrics_db(self) -> str:
        return self.metrics_db or str(self.workspace / "metrics.duckdb")

    @property
    def dagster_home(self) -> Path:
        return self.workspace / "dagster"

    @property
    def cache_dir(self) -> Path:
        """The embedding cache folder: ``HYDRA_CACHE_DIR``, else inside the workspace."""
        override = os.environ.get("HYDRA_CACHE_DIR")
        return Path(override).resolve() if override else self.workspace / "cache"


def default_config_path() -> Path:
    return Path(os.environ.get("HYDRA_CONFIG", PROJECT_ROOT / CONFIG_FILE_NAME))


def load_project_config(path: Path | str | None = None) -> ProjectConfig:
    """Read ``hydra.yaml`` (a missing default file means all defaults) and apply env overrides."""
    config_path = Path(path) if path is not None else default_config_path()
    data: dict[str, Any] = {}
    if config_path.is_file():
        try:
            loaded = yaml.safe_load(config_path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise HydraInputError(f"invalid YAML: {exc}", path=config_path) from None
        if loaded is not None and not isinstance(loaded, dict):
            raise HydraInputError("the project config must be a YAML mapping", path=config_path)
        data = dict(loaded or {})
    elif path is not None or "HYDRA_CONFIG" in os.environ:
        raise HydraInputError("project config file not found", path=config_path)
    overrides = _env_overrides()
    if "tasks" in overrides and data.get("training_tasks") is not None:
        # A narrowed task list (e.g. a quick run on two tasks) keeps the training tasks in it.
        data["training_tasks"] = [t for t in data["training_tasks"] if t in overrides["tasks"]]
    if "executor_kind" in overrides:
        executor = dict(data.get("executor") or {})
        executor["kind"] = overrides.pop("executor_kind")
        data["executor"] = executor
    data.update(overrides)
    try:
        config = ProjectConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(part) for part in first["loc"]) or None
        cause = first.get("ctx", {}).get("error")  # a validator's own message, unprefixed
        problem = str(cause) if isinstance(cause, ValueError) else first["msg"]
        raise HydraInputError(problem, path=config_path, field=field) from None
    base = config_path.resolve().parent
    workspace = config.workspace if config.workspace.is_absolute() else base / config.workspace
    unknown = sorted(set(config.training_task_names) - set(config.tasks))
    if unknown:
        raise HydraInputError(
            f"training tasks {unknown} are not in tasks {config.tasks}",
            path=config_path,
            field="training_tasks",
        )
    return config.model_copy(update={"workspace": workspace.resolve(), "config_path": config_path})


def _env_overrides() -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    if workspace := os.environ.get("HYDRA_WORKSPACE"):
        overrides["workspace"] = Path(workspace).resolve()
    if tracking_uri := os.environ.get("MLFLOW_TRACKING_URI"):
        overrides["tracking_uri"] = tracking_uri
    if postgres_url := os.environ.get(POSTGRES_URL_ENV):
        overrides["dagster_postgres_url"] = postgres_url
    if metrics_db := os.environ.get("HYDRA_METRICS_DB"):
        overrides["metrics_db"] = metrics_db
    if tasks := os.environ.get("HYDRA_TASKS"):
        overrides["tasks"] = [name.strip() for name in tasks.split(",") if name.strip()]
    if encoder := os.environ.get("HYDRA_ENCODER"):
        overrides["encoder_model"] = encoder
    if executor := os.environ.get("HYDRA_EXECUTOR"):
        overrides["executor_kind"] = executor
    return overrides
