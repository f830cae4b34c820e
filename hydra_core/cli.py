"""The ``hydra`` command line: baselines, training, evaluation and search over task cards.

Commands import the modelling stack (torch, sentence-transformers, bm25s) inside their
bodies, so ``hydra --help`` and the pipeline commands start without paying for it.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Annotated

import click
import typer

from hydra_core.cards import TaskCard, find_card, load_cards
from hydra_core.errors import HydraInputError
from hydra_core.report import results_json, results_text
from hydra_core.settings import load_settings

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


def run() -> None:
    """Console entry point: bad input ends with its one-line message, not a traceback."""
    try:
        status = app(standalone_mode=False)  # a command's typer.Exit(n) comes back as n
    except HydraInputError as error:
        typer.echo(f"error: {error}", err=True)
        raise SystemExit(2) from None
    except click.exceptions.Abort:
        raise SystemExit(130) from None
    except click.ClickException as error:
        error.show()
        raise SystemExit(error.exit_code) from None
    if isinstance(status, int) and status:
        raise SystemExit(status)


@app.command()
def baselines(tasks: TasksArgument, json_output: JsonOption = False) -> None:
    """NDCG@10, MRR@10 and Recall@100 on the test split for bm25, base and teacher."""
    from hydra_core.encoder import FrozenEncoder
    from hydra_core.evaluation import baseline_table, default_ensemble, load_card_task

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


RefineOption = Annotated[
    int,
    typer.Option(
        "--refine", help="Polish the compiled head with N distillation steps on the task corpus."
    ),
]
CheckpointOption = Annotated[
    Path, typer.Option("--checkpoint", help="Hypernet checkpoint directory (from hydra train).")
]


def _all_cards() -> list[TaskCard]:
    return load_cards(load_settings().cards_dir)


@app.command()
def train(
    tasks: Annotated[list[str], typer.Option("--tasks", help="Training task cards.")],
    out: Annotated[Path, typer.Option("--out", help="Checkpoint directory to write.")],
    epochs: Annotated[
        int | None, typer.Option(help="Training epochs [default: 1; 5 with --labels].")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    labels: Annotated[
        bool,
        typer.Option(
            "--labels",
            help="Add the labels each card declares (its labels: split) as a gold teacher.",
        ),
    ] = False,
) -> None:
    """Train one hypernet on the tasks' distilled teacher preferences."""
    from hydra_core.encoder import FrozenEncoder
    from hydra_core.trainer import LABELLED_TRAINING, TrainConfig
    from hydra_core.workflows import train_on_cards

    encoder = FrozenEncoder()
    config = replace(LABELLED_TRAINING if labels else TrainConfig(), seed=seed)
    if epochs is not None:
        config = replace(config, epochs=epochs)
    cards = [find_card(name) for name in tasks]
    if labels and not any(card.labels for card in cards):
        typer.echo(
            "warning: no card among --tasks declares labels; training on teachers only", err=True
        )
    hypernet = train_on_cards(cards, out, encoder, config, use_labels=labels)
    typer.echo(f"trainable parameters: {hypernet.num_trainable_parameters:,}")
    typer.echo(f"checkpoint: {out}")


@app.command("eval")
def evaluate(
    checkpoint: Annotated[Path | None, typer.Option(help="Checkpoint to evaluate.")] = None,
    card: Annotated[str | None, typer.Option(help="Task card file or name.")] = None,
    loo: Annotated[bool, typer.Option("--loo", help="Leave-one-task-out over --tasks.")] = False,
    tasks: Annotated[list[str] | None, typer.Option("--tasks", help="Tasks for --loo.")] = None,
    out: Annotated[Path | None, typer.Option(help="Where --loo writes checkpoints.")] = None,
    refine: RefineOption = 0,
    json_output: JsonOption = False,
) -> None:
    """Test-split table for bm25, base, teacher, hydra, hydra-generic, hydra-shuffled."""
    from hydra_core.encoder import FrozenEncoder
    from hydra_core.hypernet import Hypernet
    from hydra_core.workflows import evaluate_card, leave_one_out

    encoder = FrozenEncoder()
    render = results_json if json_output else results_text
    if loo:
        cards = [find_card(name) for name in tasks or []]
        if len(cards) < 2:
            raise typer.BadParameter("--loo needs at least two --tasks")
        out_root = out or load_settings().workspace / "loo"
        for name, table in leave_one_out(cards, out_root, encoder, refine_steps=refine).items():
            typer.echo(render(name, table))
        return
    if checkpoint is None or card is None:
        raise typer.BadParameter("eval needs --checkpoint and --card (or --loo --tasks ...)")
    task_card = find_card(card)
    hypernet = Hypernet.load(checkpoint)
    table = evaluate_card(
        task_card, hypernet, encoder, other_cards=_all_cards(), refine_steps=refine
    )
    typer.echo(render(task_card.name, table))


@app.command()
def validate(
    tasks: Annotated[list[str], typer.Option("--tasks", help="Training task cards.")],
    loo: Annotated[
        bool, typer.Option("--loo", help="One hypernet per validated task, trained without it.")
    ] = False,
    labels: Annotated[
        bool, typer.Option("--labels", help="Also train on the labels the cards declare.")
    ] = False,
    epochs: Annotated[int, typer.Option(help="Epochs; a row per task after each.")] = 4,
    json_output: JsonOption = False,
) -> None:
    """NDCG@10 change over the base on validation queries (dev, else a fifth of train).

    Trains like `hydra train` (or `eval --loo`) with the validation queries held out, and
    scores them with the task's card, the generic card and another task's card: the
    numbers to choose a recipe on, since test splits are never looked at.
    """
    import json

    from hydra_core.encoder import FrozenEncoder
    from hydra_core.trainer import LABELLED_TRAINING, TrainConfig
    from hydra_core.validation import ValidationRow, validation_curves

    def show(row: ValidationRow) -> None:
        if json_output:
            typer.echo(json.dumps(asdict(row)))
            return
        gains = "  ".join(f"{method} {gain:+.4f}" for method, gain in row.gains.items())
        typer.echo(f"{row.hypernet}  {row.steps} steps  {row.task} (base {row.base:.4f})  {gains}")

    config = replace(LABELLED_TRAINING if labels else TrainConfig(), epochs=epochs)
    cards = [find_card(name) for name in tasks]
    encoder = FrozenEncoder()
    validation_curves(cards, encoder, config, leave_one_out=loo, use_labels=labels, on_row=show)


@app.command("compile")
def compile_card(
    card: Annotated[str, typer.Argument(help="Task card file or name.")],
    checkpoint: CheckpointOption,
    out: Annotated[Path, typer.Option("--out", help="Head file to write (.safetensors).")],
    refine: RefineOption = 0,
) -> None:
    """Compile a task card into a projection head file."""
    from hydra_core.encoder import FrozenEncoder
    from hydra_core.evaluation import default_ensemble, load_card_task
    from hydra_core.head_fitting import refine_head
    from hydra_core.hypernet import Hypernet
    from hydra_core.retriever import ConditionedRetriever

    encoder = FrozenEncoder()
    retriever = ConditionedRetriever(Hypernet.load(checkpoint), encoder)
    task_card = find_card(card)
    started = time.perf_counter()
    head = retriever.compile(task_card)
    elapsed = time.perf_counter() - started
    if refine > 0:
        started = time.perf_counter()
        task = load_card_task(task_card)
        head = refine_head(head, task, encoder, default_ensemble(task, encoder), refine)
        typer.echo(
            f"refined with {refine} steps on generated queries from the task's corpus "
            f"in {time.perf_counter() - started:.1f} s (teachers indexed and ranking included)"
        )
    head.save(out)
    typer.echo(
        f"{out}: {head.num_parameters:,} head parameters, compiled in {elapsed * 1e3:.1f} ms"
    )


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="Query text.")],
    checkpoint: CheckpointOption,
    card: Annotated[str, typer.Option(help="Task card file or name.")],
    k: Annotated[int, typer.Option("-k", help="Number of results.")] = 10,
) -> None:
    """Search a task's corpus through the head compiled from its card."""
    from hydra_core.encoder import FrozenEncoder
    from hydra_core.evaluation import load_card_task
    from hydra_core.hypernet import Hypernet
    from hydra_core.retriever import ConditionedRetriever

    encoder = FrozenEncoder()
    retriever = ConditionedRetriever(Hypernet.load(checkpoint), encoder)
    task_card = find_card(card)
    task = load_card_task(task_card)
    index = retriever.index(
        retriever.compile(task_card), task.corpus["doc_id"].to_list(), task.doc_texts()
    )
    ranking = index.search(["query"], [query], k)
    titles = dict(zip(task.corpus["doc_id"], task.doc_texts(), strict=True))
    for rank, doc_id, score in ranking.select("rank", "doc_id", "score").iter_rows():
        typer.echo(f"{rank:>3}  {score:.4f}  {doc_id}  {titles[doc_id][:90]}")


@app.command()
def bench(
    json_output: Annotated[
        bool, typer.Option("--json", help="One JSON object whose keys name the figures.")
    ] = False,
    quick: Annotated[
        bool, typer.Option("--quick", help="Small sizes: seconds instead of minutes.")
    ] = False,
    only: Annotated[
        list[str] | None, typer.Option("--only", help="Run only this figure (repeatable).")
    ] = None,
    quality: Annotated[
        bool,
        typer.Option("--quality", help="Also NDCG@10 per encoder backend on SciFact, NFCorpus."),
    ] = False,
) -> None:
    """Benchmark suite: encode, cache, compile, project, search, new task, memory, pipeline."""
    import json

    from hydra_core.benchmarks import FULL, QUICK, render_text, run_suite

    def progress(name: str) -> None:
        typer.echo(f"bench: {name}", err=True)

    try:
        results = run_suite(QUICK if quick else FULL, only, quality=quality, progress=progress)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    typer.echo(json.dumps(results) if json_output else render_text(results))
