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

import typer
from typer._click import Context as ClickContext  # typer's own copy of click
from typer.core import TyperCommand

from hydra_core.cards import TaskCard, find_card, loadable_cards
from hydra_core.errors import HydraInputError
from hydra_core.report import ResultsTable, results_json, results_text
from hydra_core.settings import load_settings

app = typer.Typer(help="Hydra: per-task retrieval heads compiled from task cards.")

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
    """Console entry point: each command's exit status, and one line instead of a traceback.

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
    """The cards the shuffled-card ablation may borrow; one that does not load only warns."""
    return loadable_cards(load_settings().cards_dir)


@app.command(cls=TaskListCommand)
def train(
    tasks: Annotated[list[str], tasks_option("Training task cards")],
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
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Train afresh even if --out holds training on other tasks or data."
        ),
    ] = False,
) -> None:
    """Train one hypernet on the tasks' distilled teacher preferences.

    Training in a folder that holds an interrupted run of the same tasks, data and config
    resumes it; one that holds anything else is refused unless --force.
    """
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
    hypernet = train_on_cards(cards, out, encoder, config, use_labels=labels, fresh=force)
    typer.echo(f"trainable parameters: {hypernet.num_trainable_parameters:,}")
    typer.echo(f"checkpoint: {out}")


@app.command("eval", cls=TaskListCommand)
def evaluate(
    checkpoint: Annotated[Path | None, typer.Option(help="Checkpoint to evaluate.")] = None,
    card: Annotated[str | None, typer.Option(help="Task card file or name.")] = None,
    loo: Annotated[bool, typer.Option("--loo", help="Leave-one-task-out over --tasks.")] = False,
    tasks: Annotated[list[str] | None, tasks_option("Tasks for --loo")] = None,
    out: Annotated[Path | None, typer.Option(help="Where --loo writes checkpoints.")] = None,
    refine: RefineOption = 0,
    perturb: Annotated[
        str | None,
        typer.Option(
            "--perturb",
            metavar="KIND[:RATE]",
            help="Also score every method on perturbed test queries "
            "(typos, drop, swap, noise or inflect; RATE in (0, 1]) and report the NDCG@10 drop.",
        ),
    ] = None,
    perturb_seed: Annotated[
        int, typer.Option("--perturb-seed", help="Seed of the --perturb perturbations.")
    ] = 0,
    json_output: JsonOption = False,
) -> None:
    """Test-split table for bm25, base, teacher, hydra, hydra-generic, hydra-shuffled,
    with a paired significance test of hydra against each reference."""
    from hydra_core.encoder import FrozenEncoder
    from hydra_core.hypernet import Hypernet
    from hydra_core.perturbations import Robustness, parse_perturbation
    from hydra_core.significance import paired_tests
    from hydra_core.workflows import evaluate_card, evaluate_robustness, leave_one_out

    def render(name: str, table: ResultsTable, robustness: Robustness | None = None) -> str:
        tests = paired_tests(name, table)
        return (results_json if json_output else results_text)(name, table, tests, robustness)

    perturbation = None if perturb is None else parse_perturbation(perturb, perturb_seed)
    if loo and perturbation is not None:
        raise typer.BadParameter("--perturb needs --checkpoint and --card, not --loo")
    encoder = FrozenEncoder()
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
    others = _all_cards()
    if perturbation is None:
        table = evaluate_card(task_card, hypernet, encoder, other_cards=others, refine_steps=refine)
        typer.echo(render(task_card.name, table))
        return
    robustness = evaluate_robustness(
        task_card, hypernet, encoder, perturbation, other_cards=others, refine_steps=refine
    )
    typer.echo(render(task_card.name, robustness.clean, robustness))


@app.command(cls=TaskListCommand)
def validate(
    tasks: Annotated[list[str], tasks_option("Training task cards")],
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
    """Compile a task card into its retriever file: head and fusion parameters."""
    from hydra_core.encoder import FrozenEncoder
    from hydra_core.evaluation import default_ensemble, load_card_task
    from hydra_core.head_fitting import refine_retriever
    from hydra_core.hypernet import Hypernet
    from hydra_core.retriever import ConditionedRetriever

    encoder = FrozenEncoder()
    retriever = ConditionedRetriever(Hypernet.load(checkpoint), encoder)
    task_card = find_card(card)
    started = time.perf_counter()
    compiled = retriever.compile(task_card)
    elapsed = time.perf_counter() - started
    if refine > 0:
        started = time.perf_counter()
        task = load_card_task(task_card)
        ensemble = default_ensemble(task, encoder)
        compiled = refine_retriever(compiled, task, encoder, ensemble, refine)
        typer.echo(
            f"refined with {refine} steps on generated queries from the task's corpus "
            f"in {time.perf_counter() - started:.1f} s (teachers indexed and ranking included)"
        )
    compiled.save(out)
    head_parameters = compiled.head.num_parameters if compiled.head is not None else 0
    fusion = compiled.fusion
    typer.echo(
        f"{out}: {head_parameters:,} head parameters, lexical weight "
        f"{fusion.lexical_weight:.3f}, feedback {fusion.feedback:.3f}, "
        f"compiled in {elapsed * 1e3:.1f} ms"
    )


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="Query text.")],
    checkpoint: CheckpointOption,
    card: Annotated[str, typer.Option(help="Task card file or name.")],
    k: Annotated[int, typer.Option("-k", help="Number of results.")] = 10,
) -> None:
    """Search a task's corpus with the retriever compiled from its card."""
    if k < 1:
        raise typer.BadParameter(f"{k} results: ask for at least 1", param_hint="'-k'")
    if not query.strip():
        raise typer.BadParameter(
            f"{query!r} is empty: give the text to search for", param_hint="QUERY"
        )

    from hydra_core.encoder import FrozenEncoder
    from hydra_core.evaluation import load_card_task
    from hydra_core.hypernet import Hypernet
    from hydra_core.retriever import ConditionedRetriever, RetrieverIndex
    from hydra_core.teachers import BM25Teacher

    encoder = FrozenEncoder()
    retriever = ConditionedRetriever(Hypernet.load(checkpoint), encoder)
    task_card = find_card(card)
    task = load_card_task(task_card)
    doc_ids, texts = task.corpus["doc_id"].to_list(), task.doc_texts()
    index = RetrieverIndex(
        retriever.compile(task_card),
        doc_ids,
        encoder.encode(texts, "document"),
        BM25Teacher().index(doc_ids, texts),
        encoder,
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

    from hydra_core.benchmarks import FULL, QUICK, contention_warning, render_text, run_suite

    def progress(name: str) -> None:
        typer.echo(f"bench: {name}", err=True)

    try:
        results = run_suite(QUICK if quick else FULL, only, quality=quality, progress=progress)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    typer.echo(json.dumps(results) if json_output else render_text(results))
    warning = contention_warning(results["machine"])
    if warning is not None:
        typer.echo(f"warning: {warning}", err=True)
