"""Pipeline commands: ``run``, ``metrics``, ``ui`` and ``serve`` work on the Dagster workspace
``hydra.yaml`` describes; Dagster and MLflow are imported inside their bodies."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from hydra_core.errors import HydraInputError
from hydra_core.evaluation.report import results_text
from hydra_core.settings import PROJECT_ROOT
from hydra_pipeline.commands.options import (
    ConfigOption,
    IndexOption,
    TaskListCommand,
    load_config,
    tasks_option,
)
from hydra_pipeline.project_config import ProjectConfig

if TYPE_CHECKING:
    from hydra_pipeline.runner import PipelineError

app = typer.Typer()


class OutputFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


class ExecutorChoice(StrEnum):
    in_process = "in_process"
    multiprocess = "multiprocess"


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
    config = load_config(config_path)
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

    database = load_config(config_path).resolved_metrics_db
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

    config = load_config(config_path)
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
    config = load_config(config_path)
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
