"""Code versions: what makes Dagster consider a stored result out of date.

An asset's code version hashes the source of the ``hydra_core`` modules that compute it and
the configuration it depends on. Editing one of those modules, or the configuration, marks
exactly the assets they feed as changed; anything else is left alone. Sources are read as
files, never imported, so building the definitions stays fast.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from hydra_core.fingerprints import file_fingerprint, text_digest


def module_fingerprint(module: str) -> str:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"no module named {module!r}")
    return file_fingerprint(Path(spec.origin))


def code_version(*modules: str, config: object = None) -> str:
    """Hash of the modules' sources and of ``config`` (any JSON-serialisable value)."""
    parts = [f"{module}={module_fingerprint(module)}" for module in sorted(modules)]
    if config is not None:
        parts.append(json.dumps(config, sort_keys=True, default=str))
    return text_digest(*parts)
