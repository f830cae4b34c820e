"""The Dagster definitions of the Hydra pipeline, loaded from the ``defs`` folder.

``workspace.yaml`` points Dagster (``dagster dev``, the webserver, the daemon) at this
module; ``hydra run`` builds the same definitions in-process. Every module of
``hydra_pipeline/defs`` contributes its definitions (Dagster's ``load_from_defs_folder``),
so a new stage is a new module there, not an edit here. Everything that varies between a
laptop and a cluster (workspace, stores, executor, training settings) comes from
``hydra.yaml`` and the environment, never from code.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from hydra_pipeline.defs.project import building_for
from hydra_pipeline.project_config import ProjectConfig, load_project_config

OWNERS = ["team:hydra"]
"""Who answers for every asset (the catalogue's owner column and filter)."""


def build_definitions(config: ProjectConfig | None = None) -> dg.Definitions:
    """All assets, checks, jobs, schedules, sensors and resources for ``config``."""
    with building_for(config or load_project_config()):
        definitions = dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
    # (the permissive map leaves the observed source files alone: they take no owners)
    return definitions.permissive_map_resolved_asset_specs(
        func=lambda spec: spec.merge_attributes(owners=OWNERS), selection=None
    )


@dg.definitions
def defs() -> dg.Definitions:
    """What Dagster loads (see ``workspace.yaml``): the definitions for ``hydra.yaml``."""
    return build_definitions()
