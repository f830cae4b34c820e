"""Model commands that train a hypernet and measure it: ``baselines``, ``train``, ``eval``,
``validate``. They work on task cards in-process and import the modelling stack inside their
bodies, so ``hydra --help`` starts without paying for it."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from hydra_core.data.cards import TaskCard, find_card, loadable_cards
from hydra_core.evaluation.report import (
    ResultsTable,
    pool_summary,
    pool_summary_text,
    results_json,
    results_text,
)
from hydra_core.settings import load_settings
from hydra_pipeline.commands.options import (
    JsonOption,
    RefineOption,
    TaskListCommand,
    TasksArgument,
    tasks_option,
)
from hydra_pipeline.project_config import load_project_config

if TYPE_CHECKING:
    from collections.abc import Mapping

    from hydra_core.encoding.encoder import FrozenEncoder
    from hydra_core.evaluation.learning_curve import CurvePoint
    from hydra_core.model.hypernet import Hypernet
    from hydra_core.model.score_fusion import FusionParameters

app = typer.Typer()


@app.command()
def baselines(tasks: TasksArgument, json_output: JsonOption = False) -> None:
    """NDCG@10, MRR@10 and Recall@100 on the test split for bm25, base and teacher."""
    from hydra_core.data.opened_task import OpenedTask
    from hydra_core.encoding.encoder import FrozenEncoder
    from hydra_core.workflows import task_baselines

    encoder = FrozenEncoder()
    for name in tasks:
        card = find_card(name)
        table = task_baselines(OpenedTask.of_card(card, encoder), encoder)
        render = results_json if json_output else results_text
        typer.echo(render(card.name, table))
    stats = encoder.stats
    typer.echo(
        f"encoder {encoder.identity}: {stats.texts} texts, {stats.encoded} encoded, "
        f"{stats.cached} from cache",
        err=True,
    )


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
            help="Also train on the labels each card declares (its labels: split), as a stream "
            "of their own beside the teachers' pairs.",
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
    from hydra_core.encoding.encoder import FrozenEncoder
    from hydra_core.training.trainer import LABELLED_TRAINING, TrainConfig
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
    learning_curve: Annotated[
        bool,
        typer.Option(
            "--learning-curve",
            help="Also adapt the card's retriever to 5, 10, 30, 100, 300 and all of its "
            "labelled queries (five draws each) and score each on the test split.",
        ),
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Test-split table for bm25, base, teacher, hydra, hydra-generic, hydra-shuffled,
    with a paired significance test of hydra against each reference."""
    from hydra_core.encoding.encoder import FrozenEncoder
    from hydra_core.evaluation.learning_curve import (
        curve_significance,
        curve_summary,
        curve_text,
    )
    from hydra_core.evaluation.perturbations import Robustness, parse_perturbation
    from hydra_core.evaluation.significance import paired_tests
    from hydra_core.model.fusion_gate import taught_on_test
    from hydra_core.model.hypernet import Hypernet
    from hydra_core.workflows import evaluate_card, evaluate_robustness, leave_one_out

    def render(
        name: str,
        table: ResultsTable,
        robustness: Robustness | None = None,
        fusion: Mapping[str, FusionParameters] | None = None,
    ) -> str:
        tests = paired_tests(name, table)
        writer = results_json if json_output else results_text
        return writer(name, table, tests, robustness, fusion)

    perturbation = None if perturb is None else parse_perturbation(perturb, perturb_seed)
    if loo and (perturbation is not None or learning_curve):
        raise typer.BadParameter(
            "--perturb and --learning-curve need --checkpoint and --card, not --loo"
        )
    encoder = FrozenEncoder()
    if loo:
        cards = [find_card(name) for name in tasks or []]
        if len(cards) < 2:
            raise typer.BadParameter("--loo needs at least two --tasks")
        out_root = out or load_settings().workspace / "loo"
        held_out = leave_one_out(cards, out_root, encoder, refine_steps=refine)
        for name, result in held_out.items():
            typer.echo(render(name, result.table, fusion=result.fusion))
        summary = pool_summary({name: result.table for name, result in held_out.items()})
        typer.echo(json.dumps({"pool": summary}) if json_output else pool_summary_text(summary))
        return
    if checkpoint is None or card is None:
        raise typer.BadParameter("eval needs --checkpoint and --card (or --loo --tasks ...)")
    task_card = find_card(card)
    hypernet = Hypernet.load(checkpoint)
    if task_card.name in taught_on_test(hypernet.metadata.get("fusion_labels", {})):
        typer.echo(
            f"note: {task_card.name}'s test labels taught this checkpoint's fusion gate, so its "
            "hydra rows are in-pool, not test figures (hydra eval --loo gives unseen ones)",
            err=True,
        )
    others = _all_cards()
    if perturbation is None:
        table = evaluate_card(task_card, hypernet, encoder, other_cards=others, refine_steps=refine)
        if not learning_curve:
            typer.echo(render(task_card.name, table))
            return
        curve = _learning_curve(task_card, hypernet, encoder, checkpoint)
        tests = curve_significance(curve)
        if json_output:
            record = json.loads(render(task_card.name, table))
            record["learning_curve"] = curve_summary(curve)
            record["learning_curve_significance"] = {
                n: {reference: test.as_json() for reference, test in by_reference.items()}
                for n, by_reference in tests.items()
            }
            typer.echo(json.dumps(record))
        else:
            typer.echo(render(task_card.name, table))
            typer.echo(curve_text(curve_summary(curve), tests))
        return
    if learning_curve:
        raise typer.BadParameter("--learning-curve and --perturb are two runs: give one")
    robustness = evaluate_robustness(
        task_card, hypernet, encoder, perturbation, other_cards=others, refine_steps=refine
    )
    typer.echo(render(task_card.name, robustness.clean, robustness))


def _learning_curve(
    card: TaskCard, hypernet: Hypernet, encoder: FrozenEncoder, checkpoint: Path
) -> list[CurvePoint]:
    """The card's learning curve, each point logged as it is scored, and stored in the
    metrics store when one is configured (``metrics_db`` in hydra.yaml, or HYDRA_METRICS_DB)."""
    from hydra_core.evaluation.method import HEADLINE_METRIC
    from hydra_core.workflows import card_learning_curve
    from hydra_pipeline.metrics_store import learning_curve_frame, record_learning_curve

    def progress(point: CurvePoint) -> None:
        value = point.metrics[HEADLINE_METRIC]
        typer.echo(
            f"learning curve {point.task}: {point.method} N={point.n} draw {point.draw} "
            f"{HEADLINE_METRIC} {value:.4f}",
            err=True,
        )

    points = card_learning_curve(card, hypernet, encoder, on_point=progress)
    database = load_project_config().metrics_db
    if database is not None:
        rows = learning_curve_frame(points)
        record_learning_curve(database, rows, run_id="cli", checkpoint=str(checkpoint))
        typer.echo(f"learning curve: {rows.height} rows written to {database}", err=True)
    return points


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
    grid: Annotated[
        bool,
        typer.Option(
            "--fusion-grid",
            help="Train nothing: score lexical weight x feedback x BM25 b, base as the "
            "dense channel, against the prior every card compiles to.",
        ),
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """NDCG@10 change over the base on validation queries (dev, else a fifth of train).

    Trains like `hydra train` (or `eval --loo`) with the validation queries held out, and
    scores them with the task's card, the generic card and another task's card: the
    numbers to choose a recipe on, since test splits are never looked at.
    """
    from hydra_core.encoding.encoder import FrozenEncoder
    from hydra_core.evaluation.validation import (
        FusionGridRow,
        ValidationRow,
        fusion_grid,
        validation_curves,
    )
    from hydra_core.training.trainer import LABELLED_TRAINING, TrainConfig

    cards = [find_card(name) for name in tasks]
    if grid:

        def show_point(row: FusionGridRow) -> None:
            if json_output:
                typer.echo(json.dumps(asdict(row)))
                return
            prior = "  (prior)" if row.is_prior else ""
            typer.echo(
                f"{row.task}  weight {row.lexical_weight:.2f}  feedback {row.feedback:.2f}  "
                f"b {row.bm25_b:.2f}  ndcg@10 {row.ndcg:.4f}  {row.gain:+.4f}{prior}"
            )

        rows = fusion_grid(cards, FrozenEncoder(), on_row=show_point)
        if json_output:
            return
        for task in dict.fromkeys(row.task for row in rows):
            best = max((row for row in rows if row.task == task), key=lambda row: row.ndcg)
            typer.echo(
                f"{task}: best weight {best.lexical_weight:.2f} feedback {best.feedback:.2f} "
                f"b {best.bm25_b:.2f}, ndcg@10 {best.ndcg:.4f}, {best.gain:+.4f} over the prior"
            )
        return

    def show(row: ValidationRow) -> None:
        if json_output:
            typer.echo(json.dumps(asdict(row)))
            return
        gains = "  ".join(f"{method} {gain:+.4f}" for method, gain in row.gains.items())
        typer.echo(f"{row.hypernet}  {row.steps} steps  {row.task} (base {row.base:.4f})  {gains}")

    config = replace(LABELLED_TRAINING if labels else TrainConfig(), epochs=epochs)
    encoder = FrozenEncoder()
    validation_curves(cards, encoder, config, leave_one_out=loo, use_labels=labels, on_row=show)
