"""Code versions: what makes Dagster consider a stored result out of date.

An asset's code version hashes the source of the project modules that compute it and the
configuration it depends on. An asset names only the modules its body calls; the version
covers every module of ``hydra_core`` and ``hydra_pipeline`` those reach by importing,
directly or not,
so an edit to a helper two imports away still marks the asset as changed, while a module
it never reaches is left out. Sources are read and parsed as files, never imported, so
building the definitions stays fast.

What counts as an import: ``import p.x``, ``from p.x import y`` (``y`` too when it is a
submodule), ``from p import x``, relative imports, and imports inside functions (hydra_core
defers its heavy imports that way, and that code runs when the function does). Imports
under ``if TYPE_CHECKING:`` are skipped: they never run. Modules loaded by name at run time
(``importlib.import_module``) are not seen.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path

from hydra_core.data.fingerprints import file_fingerprint, text_digest

PROJECT_PACKAGES = frozenset({"hydra_core", "hydra_pipeline"})
"""The packages whose modules a code version follows; third-party code is pinned by the lock."""


def module_path(module: str) -> Path | None:
    """The source file of ``module`` (a package's ``__init__.py``), found without importing
    it: from its top-level package's folder. ``None`` when there is none."""
    top, *rest = module.split(".")
    spec = importlib.util.find_spec(top)
    if spec is None:
        return None
    if not rest:
        return Path(spec.origin) if spec.origin and spec.origin.endswith(".py") else None
    for folder in spec.submodule_search_locations or ():
        stem = Path(folder, *rest)
        for candidate in (stem.with_name(stem.name + ".py"), stem / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


def module_fingerprint(module: str) -> str:
    path = module_path(module)
    if path is None:
        raise ModuleNotFoundError(f"no module named {module!r}")
    return file_fingerprint(path)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement under ``node``, at any depth, except in TYPE_CHECKING blocks."""
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node
        return
    if isinstance(node, ast.If) and _is_type_checking(node.test):
        children: list[ast.AST] = list(node.orelse)
    else:
        children = list(ast.iter_child_nodes(node))
    for child in children:
        yield from _import_nodes(child)


def _with_parents(module: str) -> Iterator[str]:
    """``a.b.c``, ``a.b``, ``a``: importing a module runs its packages' ``__init__`` too."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        yield ".".join(parts[:end])


def _imported_names(module: str, path: Path, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    """The module names one import statement may load (some may not be modules at all)."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
        return
    base = node.module or ""
    if node.level:
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}" if base else package
    yield base
    yield from (f"{base}.{alias.name}" for alias in node.names if alias.name != "*")


@functools.cache
def direct_imports(module: str) -> frozenset[str]:
    """The modules of the project (see :data:`PROJECT_PACKAGES`) and of ``module``'s own
    top-level package that ``module``'s source imports."""
    path = module_path(module)
    if path is None:
        raise ModuleNotFoundError(f"no module named {module!r}")
    packages = PROJECT_PACKAGES | {module.partition(".")[0]}
    tree = ast.parse(path.read_bytes(), filename=str(path))
    found: set[str] = set()
    for node in _import_nodes(tree):
        for name in _imported_names(module, path, node):
            found.update(
                parent
                for parent in _with_parents(name)
                if parent.partition(".")[0] in packages and module_path(parent) is not None
            )
    found.discard(module)
    return frozenset(found)


@functools.cache
def module_closure(module: str) -> frozenset[str]:
    """``module``, its packages and every project module it reaches by importing. Cached
    for the process: a code location reloads in a new one."""
    seen: set[str] = set()
    pending = list(_with_parents(module))
    while pending:
        name = pending.pop()
        if name not in seen:
            seen.add(name)
            pending.extend(direct_imports(name))
    return frozenset(seen)


def code_version(*modules: str, config: object = None) -> str:
    """Hash of the sources of ``modules`` and all they import (see :func:`module_closure`)
    and of ``config`` (any JSON-serialisable value)."""
    closure = sorted(set().union(*(module_closure(module) for module in modules)))
    parts = [f"{module}={module_fingerprint(module)}" for module in closure]
    if config is not None:
        parts.append(json.dumps(config, sort_keys=True, default=str))
    return text_digest(*parts)
