"""The ``hydra`` command line: one root application merging the sub-applications of
``commands/`` by concept.

Model commands work on task cards in-process: ``training`` (``baselines``, ``train``, ``eval``,
``validate``), ``retrievers`` (``adapt``, ``compile``, ``search``) and ``tools`` (``bench``,
``fetch-encoder``); ``pipeline`` commands (``run``, ``metrics``, ``ui``, ``serve``) work on the
Dagster workspace. Commands import the modelling stack, Dagster and MLflow inside their bodies,
so ``hydra --help`` starts without paying for them.
"""

from __future__ import annotations

import typer

from hydra_core.errors import HydraInputError
from hydra_pipeline.commands import pipeline, retrievers, tools, training
from hydra_pipeline.commands.options import configure_logging

app = typer.Typer(help="Hydra: per-task retrieval heads compiled from task cards.")
for commands in (training, retrievers, tools, pipeline):
    app.add_typer(commands.app)


@app.callback()
def _configure() -> None:
    configure_logging()


def main() -> None:
    """Console entry point (``hydra``): each command's exit status, and one line instead of
    a traceback.

    Typer's standalone mode turns ``typer.Exit(n)`` and usage errors into status ``n``; bad
    input (``HydraInputError``) and failed file operations (read-only or full disk) end here
    with a line that names the file.
    """
    try:
        app()
    except HydraInputError as error:
        typer.echo(f"error: {error}", err=True)
        raise SystemExit(2) from None
    except OSError as error:
        where = f"{error.filename}: " if error.filename else ""
        typer.echo(f"error: {where}{error.strerror or error}", err=True)
        raise SystemExit(1) from None
