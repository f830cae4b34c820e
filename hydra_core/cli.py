"""The ``hydra`` command line: baselines, training, evaluation and search over task cards."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from hydra_core.cards import find_card
from hydra_core.encoder import FrozenEncoder
from hydra_core.evaluation import baseline_table, default_ensemble, load_card_task
from hydra_core.report import results_json, results_text

app = typer.Typer(help="Hydra: per-task retrieval heads compiled from task cards.")

TasksArgument = Annotated[
    list[str], typer.Argument(help="Task card names (e.g. scifact) or card files.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="One JSON object per task per line.")]


def configure_logging() -> None:
    """Progress and cache reports go to stderr; stdout carries only results."""
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s"
    )
    logging.getLogger("hydra_core").setLevel(logging.INFO)


@app.callback()
def main() -> None:
    configure_logging()


@app.command()
def baselines(tasks: TasksArgument, json_output: JsonOption = False) -> None:
    """NDCG@10, MRR@10 and Recall@100 on the test split for bm25, base and teacher."""
    encoder = FrozenEncoder()
    for name in tasks:
        card = find_card(name)
        task = load_card_task(card)
        table = baseline_table(task, default_ensemble(task, encoder))
        render = results_json if json_output else results_text
        typer.echo(render(card.name, table))
    stats = encoder.stats
    typer.echo(
        f"encoder {encoder.identity}: {stats.texts} texts, {stats.encoded} encoded, "
        f"{stats.cached} from cache",
        err=True,
    )
