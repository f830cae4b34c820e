"""The command line's shared arguments: task lists spelled three ways, ``--json``,
``--index``, ``--refine``, ``--config``, ``--checkpoint``, the project config, logging."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from typer._click import Context as ClickContext  # typer's own copy of click
from typer.core import TyperCommand

from hydra_core.errors import HydraInputError
from hydra_pipeline.project_config import ProjectConfig, load_project_config

TASKS_FLAG = "--tasks"


def task_names(values: list[str] | None) -> list[str] | None:
    """Every spelling of several tasks as one list: ``a b``, ``a,b`` or ``a`` then ``b``."""
    if values is None:
        return None
    names = [name.strip() for value in values for name in value.split(",") if name.strip()]
    if not names:
        raise typer.BadParameter(f"no task named in {' '.join(values)!r}")
    return names


def spread_tasks(args: list[str]) -> list[str]:
    """``--tasks a b c`` as ``--tasks a --tasks b --tasks c``, the form click parses.

    Click gives an option one value per occurrence; the names after ``--tasks`` up to the
    next option (or ``--``) would otherwise be stray arguments.
    """
    spread: list[str] = []
    after_tasks = False
    for position, arg in enumerate(args):
        if arg == "--":
            return spread + args[position:]
        if arg.startswith("-"):
            after_tasks = arg == TASKS_FLAG or arg.startswith(f"{TASKS_FLAG}=")
            spread.append(arg)
            continue
        if after_tasks and spread[-1] != TASKS_FLAG:
            spread.append(TASKS_FLAG)
        spread.append(arg)
    return spread


class TaskListCommand(TyperCommand):
    """A command with a ``--tasks`` option that takes several names at once."""

    def parse_args(self, ctx: ClickContext, args: list[str]) -> list[str]:
        return super().parse_args(ctx, spread_tasks(args))


def tasks_option(help: str) -> typer.models.OptionInfo:
    """``--tasks``: one or more task card names or files, spelled any of the three ways."""
    spellings = "--tasks a b, --tasks a,b or --tasks a --tasks b"
    return typer.Option(TASKS_FLAG, callback=task_names, help=f"{help} ({spellings}).")


TasksArgument = Annotated[
    list[str],
    typer.Argument(callback=task_names, help="Task card names (e.g. scifact) or card files."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="One JSON object per task per line.")]
IndexOption = Annotated[
    str,
    typer.Option(
        "--index",
        metavar="exact|hnsw",
        help="Dense search: exact, or hnsw (a graph built once per task and cached in "
        "<cache>/ann/).",
    ),
]


def configure_logging() -> None:
    """Progress and cache reports go to stderr; stdout carries only results."""
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s"
    )
    for name in ("hydra_core", "hydra_pipeline"):
        logging.getLogger(name).setLevel(logging.INFO)


RefineOption = Annotated[
    int,
    typer.Option(
        "--refine", help="Polish the compiled head with N distillation steps on the task corpus."
    ),
]
ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="Project config file (default: hydra.yaml, or HYDRA_CONFIG)."),
]
CheckpointOption = Annotated[
    Path, typer.Option("--checkpoint", help="Hypernet checkpoint directory (from hydra train).")
]


def load_config(path: Path | None) -> ProjectConfig:
    """The project config; a bad one ends the command with status 2 and the line naming it."""
    try:
        return load_project_config(path)
    except HydraInputError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
