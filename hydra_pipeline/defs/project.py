"""The project configuration the definitions are being built for.

Most definitions in this folder are module-level. The few whose shape depends on
``hydra.yaml`` (the training tasks a hypernet reads, the settings a code version hashes,
the cron, the tolerance, the stores) are made by a ``@dg.definitions`` function of their
module, which Dagster calls while it loads the folder, and which asks :func:`project` for
the configuration: the one :func:`hydra_pipeline.definitions.build_definitions` was given,
else ``hydra.yaml`` (and the environment) as Dagster's own code location reads them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from hydra_pipeline.project_config import ProjectConfig, load_project_config

_BUILDING_FOR: ContextVar[ProjectConfig | None] = ContextVar("hydra_project", default=None)


def project() -> ProjectConfig:
    return _BUILDING_FOR.get() or load_project_config()


@contextmanager
def building_for(config: ProjectConfig) -> Iterator[None]:
    """Within the block, :func:`project` is ``config``."""
    token = _BUILDING_FOR.set(config)
    try:
        yield
    finally:
        _BUILDING_FOR.reset(token)
