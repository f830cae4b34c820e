"""hydra_core is layered: each package imports only its own layer and those below, and the
project's modules import each other without a cycle.

Imports are read from the sources as the code versions read them (inside functions too:
that code runs when the function does; ``TYPE_CHECKING`` imports aside).
"""

from __future__ import annotations

import pkgutil

import hydra_core
import hydra_pipeline
from hydra_pipeline.defs.versions import direct_imports

LAYERS = (
    "data",
    "encoding",
    "ranking",
    "model",
    "training",
    "evaluation",
    "serving",
    "workflows",
)
"""hydra_core's packages, lowest first; the modules beside them (errors, settings, atomic,
progress) are below every layer."""


def _modules(package: object) -> list[str]:
    path, name = package.__path__, package.__name__  # type: ignore[attr-defined]
    return [name, *(info.name for info in pkgutil.walk_packages(path, f"{name}."))]


def _layer(module: str) -> int:
    """The layer of a hydra_core module; -1 for the modules below every layer."""
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else -1


def test_no_core_module_imports_a_layer_above_its_own() -> None:
    upward = sorted(
        f"{module} -> {imported}"
        for module in _modules(hydra_core)
        for imported in direct_imports(module)
        if imported.startswith("hydra_core.") and _layer(imported) > _layer(module)
    )
    assert upward == []


def test_the_core_stays_free_of_the_operations_stack() -> None:
    """Dagster, MLflow and DuckDB belong to hydra_pipeline; the core never imports it."""
    offenders = sorted(
        f"{module} -> {imported}"
        for module in _modules(hydra_core)
        for imported in direct_imports(module)
        if imported.startswith("hydra_pipeline")
    )
    assert offenders == []


def test_the_project_has_no_import_cycle() -> None:
    modules = _modules(hydra_core) + _modules(hydra_pipeline)
    graph = {module: sorted(direct_imports(module) & set(modules)) for module in modules}
    done: set[str] = set()
    cycles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            cycles.append(path[path.index(module) :] + [module])
            return
        if module in done:
            return
        for imported in graph[module]:
            visit(imported, [*path, module])
        done.add(module)

    for module in modules:
        visit(module, [])
    assert cycles == []


def test_the_checks_see_an_upward_import() -> None:
    """The layering check itself: validation (evaluation) importing training is allowed,
    and the reverse would be counted."""
    assert _layer("hydra_core.evaluation.validation") > _layer("hydra_core.training.trainer")
    assert "hydra_core.training.trainer" in direct_imports("hydra_core.evaluation.validation")
    assert _layer("hydra_core.errors") == -1
