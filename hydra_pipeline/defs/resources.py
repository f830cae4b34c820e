"""Resources: where the pipeline reads and writes, and the services it talks to.

Each is a Dagster ``ConfigurableResource`` built from the project configuration, so the UI
shows their values and a deployment can override them without code changes. Heavy imports
(torch and sentence-transformers take ~15 s; MLflow ~4 s) happen inside methods, because
every Dagster process (webserver, daemon, code server, each run) loads these definitions.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from hydra_pipeline.defs.io_manager import HydraIOManager
from hydra_pipeline.defs.project import project

if TYPE_CHECKING:
    from hydra_core.encoding.encoder import FrozenEncoder
    from hydra_pipeline.tracking import TrackingTarget


class WorkspaceResource(dg.ConfigurableResource):
    """The workspace folder: stored assets, checkpoints and reports live under it."""

    root: str

    def path(self, *parts: str) -> Path:
        return Path(self.root).joinpath(*parts)

    @property
    def checkpoints(self) -> Path:
        return self.path("checkpoints")

    @property
    def reports(self) -> Path:
        return self.path("reports")


@functools.cache
def _encoder(model: str, cache_dir: str) -> FrozenEncoder:
    """One encoder per process and model: loading the model is the expensive part."""
    from hydra_core.encoding.embedding_cache import EmbeddingCache
    from hydra_core.encoding.encoder import FrozenEncoder

    cache = EmbeddingCache(Path(cache_dir) / "embeddings.sqlite")
    return FrozenEncoder(model, cache=cache, show_progress=False)


class EncoderResource(dg.ConfigurableResource):
    """The frozen base encoder behind the persistent embedding cache."""

    model: str
    cache_dir: str

    def get(self) -> FrozenEncoder:
        return _encoder(self.model, self.cache_dir)


class TrackingResource(dg.ConfigurableResource):
    """The MLflow store and the names runs and model versions are filed under."""

    tracking_uri: str
    experiment: str
    registered_model: str
    artifact_root: str

    def target(self) -> TrackingTarget:
        from hydra_pipeline.tracking import TrackingTarget

        return TrackingTarget(
            tracking_uri=self.tracking_uri,
            experiment=self.experiment,
            registered_model=self.registered_model,
            artifact_root=Path(self.artifact_root),
        )


class MetricsDbResource(dg.ConfigurableResource):
    """The DuckDB database (a file path or ``md:<name>``) the per-task metrics land in."""

    database: str


@dg.definitions
def defs() -> dg.Definitions:
    config = project()
    resources = {
        "workspace": WorkspaceResource(root=str(config.workspace)),
        "encoder": EncoderResource(model=config.encoder_model, cache_dir=str(config.cache_dir)),
        "tracking": TrackingResource(
            tracking_uri=config.resolved_tracking_uri,
            experiment=config.experiment,
            registered_model=config.registered_model,
            artifact_root=str(config.artifact_root),
        ),
        "metrics_db": MetricsDbResource(database=config.resolved_metrics_db),
        "io_manager": HydraIOManager(root=str(config.workspace / "assets")),
    }
    return dg.Definitions(resources=resources)
