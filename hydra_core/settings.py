"""Where Hydra reads data and writes caches, from environment variables with sane defaults.

Every location can be overridden by an environment variable so that CI, a laptop and a
cluster node can share one code path:

- ``HYDRA_DATA_DIR``: folder of BEIR-layout datasets searched by name before ir-datasets
  (default ``../shared/data`` beside the project when that folder exists).
- ``HYDRA_WORKSPACE``: where caches, checkpoints, Dagster, MLflow and DuckDB files live.
- ``HYDRA_CACHE_DIR``: the embedding cache (default ``$HYDRA_WORKSPACE/cache``).
- ``HYDRA_CARDS_DIR``: the task cards the CLI and pipeline use by name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = PROJECT_ROOT.parent / "shared" / "data"


@dataclass(frozen=True)
class Settings:
    """Resolved locations; build one with :func:`load_settings`."""

    data_dir: Path | None
    workspace: Path
    cache_dir: Path
    cards_dir: Path
    encoders_dir: Path
    encoder_model: str | None
    """``HYDRA_ENCODER``: the base encoder of the model commands (None: the default)."""
    """Base encoders fetched by ``hydra fetch-encoder``: shared by every workspace, like the
    Hugging Face cache."""


def load_settings() -> Settings:
    """Read the environment now (not at import) so tests can point Hydra elsewhere."""
    data_dir = os.environ.get("HYDRA_DATA_DIR")
    if not data_dir and DEFAULT_DATA_DIR.is_dir():
        data_dir = str(DEFAULT_DATA_DIR)
    workspace = Path(os.environ.get("HYDRA_WORKSPACE", PROJECT_ROOT / "workspace")).resolve()
    cache_dir = Path(os.environ.get("HYDRA_CACHE_DIR", workspace / "cache")).resolve()
    cards_dir = Path(os.environ.get("HYDRA_CARDS_DIR", PROJECT_ROOT / "cards")).resolve()
    encoders = os.environ.get("HYDRA_ENCODERS_DIR", Path.home() / ".cache" / "hydra" / "encoders")
    return Settings(
        data_dir=Path(data_dir).resolve() if data_dir else None,
        workspace=workspace,
        cache_dir=cache_dir,
        cards_dir=cards_dir,
        encoders_dir=Path(encoders).resolve(),
        encoder_model=os.environ.get("HYDRA_ENCODER") or None,
    )
