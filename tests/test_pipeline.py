"""The Dagster pipeline end to end, on real slices of two tasks, in a throwaway Dagster home.

One module-scoped cold ``hydra run`` (the runner behind it) materializes the whole graph;
the tests then read what it left in Dagster's event log, the MLflow store, the DuckDB file
and the workspace, and run it again to see that unchanged inputs rebuild nothing. The
order of the tests matters where they change the project (a card edit, a new card).
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import torch
from mlflow.tracking import MlflowClient
from pipeline_support import (
    QUICK_ARCHITECTURE,
    QUICK_TRAINING,
    TABLE_METHODS,
    Project,
    make_project,
)
from safetensors.torch import load_file
from typer.testing import CliRunner

from hydra_core.data.cards import find_card
from hydra_core.data.opened_task import OpenedTask
from hydra_core.data.retrieval_task import RetrievalTask
from hydra_core.data.tasks import load_task
from hydra_core.encoding.encoder import FrozenEncoder
from hydra_core.evaluation.method import in_table_order
from hydra_core.evaluation.methods import (
    retriever_table,
)
from hydra_core.evaluation.reference_heads import refine_retriever
from hydra_core.model.compiled_retriever import CompiledRetriever
from hydra_core.model.hypernet import Hypernet, HypernetConfig
from hydra_core.training.trainer import STATE_FILE, TrainConfig
from hydra_core.workflows import evaluate_card, task_baselines, train_on_cards
from hydra_pipeline import metrics_store
from hydra_pipeline.artifacts import load_value
from hydra_pipeline.cli import app
from hydra_pipeline.definitions import build_definitions
from hydra_pipeline.defs.asset_checks import QUALITY_CHECK
from hydra_pipeline.defs.jobs import TASK_JOB, WAVES
from hydra_pipeline.defs.resources import _encoder
from hydra_pipeline.planning import PlannedRun
from hydra_pipeline.project_config import ProjectConfig, load_project_config
from hydra_pipeline.runner import (
    PipelineError,
    RunSummary,
    WaveExecutor,
    current_checkpoint,
    run_pipeline,
)
from hydra_pipeline.stages import compile_card
from hydra_pipeline.tracking import metric_key

TASKS = ("scifact", "nfcorpus")
UNSEEN_METHODS = (
    "hydra-unseen",
    "hydra-unseen-dense",
    "hydra-unseen-generic",
    "hydra-unseen-refined",
)
LABEL_METHODS = ("hydra+labels", "supervised-head")  # both test cards declare `labels: train`
METHODS = (*TABLE_METHODS, *LABEL_METHODS, *UNSEEN_METHODS, "oracle")
VARIANTS = {"labels", "without-scifact", "without-nfcorpus"}  # the reference hypernets' runs
METRICS = ("ndcg@10", "mrr@10", "recall@100")
PERTURBATIONS = ("typos:0.3", "drop:0.2")
CHECKS = {
    "qrels": "qrels_reference_existing_ids",
    "training_queries": "no_test_queries_in_training",
    "task_metrics": "hydra_within_tolerance_of_base",
}


@dataclass
class Pipeline:
    project: Project
    config: ProjectConfig
    defs: dg.Definitions
    instance: dg.DagsterInstance
    cold: RunSummary

    @property
    def encoder(self) -> FrozenEncoder:
        return _encoder(self.config.encoder_model, str(self.config.cache_dir))

    def run(self) -> RunSummary:
        return run_pipeline(self.config, self.defs, self.instance, echo=lambda _: None)

    def mlflow(self) -> MlflowClient:
        return MlflowClient(self.config.resolved_tracking_uri)

    def training_runs(self) -> list:
        """MLflow runs of the served hypernet (the reference hypernets' runs have a variant)."""
        return [run for run in self.all_training_runs() if "hydra/variant" not in run.data.tags]

    def all_training_runs(self) -> list:
        """Runs that trained a checkpoint (not the parent runs ``hydra run`` nests them in)."""
        client = self.mlflow()
        experiment = client.get_experiment_by_name(self.config.experiment)
        assert experiment is not None
        runs = client.search_runs([experiment.experiment_id])
        return [run for run in runs if "checkpoint_id" in run.data.tags]


@pytest.fixture(scope="module")
def pipeline(
    tmp_path_factory: pytest.TempPathFactory,
    scifact_slice: RetrievalTask,
    nfcorpus_slice: RetrievalTask,
) -> Iterator[Pipeline]:
    tasks = {"scifact": scifact_slice.head(200, 20), "nfcorpus": nfcorpus_slice.head(200, 20)}
    project = make_project(
        tmp_path_factory.mktemp("pipeline"), tasks, perturbations=list(PERTURBATIONS)
    )
    with pytest.MonkeyPatch.context() as patch:
        config = project.enter(patch)
        defs = build_definitions(config)
        with dg.DagsterInstance.get() as instance:
            cold = run_pipeline(config, defs, instance, echo=lambda _: None)
            yield Pipeline(project, config, defs, instance, cold)


def _materialized(instance: dg.DagsterInstance, name: str) -> set[str]:
    return set(instance.get_materialized_partitions(dg.AssetKey(name)))


def test_every_asset_materialized(pipeline: Pipeline) -> None:
    graph = pipeline.defs.resolve_asset_graph()
    materializable = [key for key in graph.materializable_asset_keys]
    assert len(materializable) == 23
    on_demand = dg.AssetKey("learning_curve")  # in no wave of hydra run (docs/pipeline.md)
    assert on_demand in materializable
    for key in (key for key in materializable if key != on_demand):
        if graph.get(key).is_partitioned:
            assert _materialized(pipeline.instance, key.to_user_string()) == set(TASKS), key
        else:
            assert pipeline.instance.get_latest_materialization_event(key) is not None, key
    assert [run.wave.name for run in pipeline.cold.launched] == [
        "task data",
        "task data",
        "hypernet",
        "heads and metrics",
        "heads and metrics",
        "report",
    ]
    # every stored value is a plain file in the workspace
    assets = pipeline.config.workspace / "assets"
    assert (assets / "doc_embeddings" / "scifact.npy").is_file()
    assert (assets / "compiled_retriever" / "nfcorpus.safetensors").is_file()
    assert pl.read_parquet(assets / "corpus" / "scifact.parquet").height == 200


def test_asset_checks_ran_per_task(pipeline: Pipeline) -> None:
    storage = pipeline.instance.event_log_storage
    for asset, check in CHECKS.items():
        key = dg.AssetCheckKey(dg.AssetKey(asset), check)
        history = storage.get_asset_check_execution_history(key, limit=10)
        assert {record.partition for record in history} == set(TASKS), check
    for check in ("qrels_reference_existing_ids", "no_test_queries_in_training"):
        key = dg.AssetCheckKey(dg.AssetKey(next(a for a, c in CHECKS.items() if c == check)), check)
        history = storage.get_asset_check_execution_history(key, limit=10)
        assert all(record.status.value == "SUCCEEDED" for record in history), check


def test_mlflow_run_with_metrics_checkpoint_and_model(pipeline: Pipeline) -> None:
    (run,) = pipeline.training_runs()
    checkpoint = current_checkpoint(pipeline.config)
    assert checkpoint is not None and checkpoint.mlflow_run_id == run.info.run_id
    assert run.info.status == "FINISHED"
    assert run.data.params["train.epochs"] == str(QUICK_TRAINING["epochs"])
    assert run.data.params["architecture.rank"] == str(QUICK_ARCHITECTURE["rank"])
    assert Hypernet.load(checkpoint.path).architecture.rank == QUICK_ARCHITECTURE["rank"]
    assert json.loads(run.data.params["tasks"]) == sorted(TASKS)
    assert "fingerprints.scifact.pairs" in run.data.params
    assert run.data.params["code_version"]
    client = pipeline.mlflow()
    losses = client.get_metric_history(run.info.run_id, "pairwise")
    assert [m.step for m in losses] == list(range(1, QUICK_TRAINING["epochs"] + 1))
    for task in TASKS:
        for method in METHODS:
            assert 0 <= run.data.metrics[metric_key(task, method, "ndcg@10")] <= 1
    checkpoint_files = {a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")}
    assert "checkpoint/model.safetensors" in checkpoint_files
    report_files = {a.path for a in client.list_artifacts(run.info.run_id, "report")}
    assert report_files == {"report/results.md", "report/ndcg_at_10.png", "report/results.json"}
    # The report's results as an MLflow table (the run's tag marks it one for the UI),
    # DuckDB's figures. (MlflowClient.load_table finds no run on a sqlite store: read it.)
    logged = json.loads(client.get_run(run.info.run_id).data.tags["mlflow.loggedArtifacts"])
    assert {"path": "report/results.json", "type": "table"} in logged
    split = json.loads(
        Path(client.download_artifacts(run.info.run_id, "report/results.json")).read_text()
    )
    table = pl.DataFrame(split["data"], schema=split["columns"], orient="row")
    stored = metrics_store.latest_results(pipeline.config.resolved_metrics_db)
    assert table.height == stored.height and table.columns[:2] == ["task", "method"]
    hydra = (pl.col("task") == "scifact") & (pl.col("method") == "hydra")
    assert table.filter(hydra)["ndcg@10"].item() == pytest.approx(
        stored.filter(hydra)["ndcg@10"].item(),
        abs=1e-9,  # MLflow's JSON keeps 10 decimals
    )
    params_file = Path(client.download_artifacts(run.info.run_id, "params.json"))
    assert json.loads(params_file.read_text())["tasks"] == sorted(TASKS)  # nested, as given
    assert checkpoint.model_version == ""  # training registers nothing
    (version,) = client.search_model_versions(f"name='{pipeline.config.registered_model}'")
    assert version.run_id == run.info.run_id  # the reference hypernets are not registered
    assert (version.source or "").endswith("/model")  # the run's MLflow model
    assert version.tags["checkpoint_id"] == checkpoint.checkpoint_id
    parent = client.get_run(run.data.tags["mlflow.parentRunId"])  # the hydra run's
    assert parent.data.tags["hydra/launched_by"] == "hydra run"


def test_the_checked_checkpoint_is_registered_as_champion_with_its_gains(
    pipeline: Pipeline,
) -> None:
    """After every task's quality check passed, the report wave registered the checkpoint:
    the alias on it, its mean gains (the report's figures) in its description, and the
    version and links as the asset's metadata."""
    checkpoint = current_checkpoint(pipeline.config)
    registered = current_checkpoint(pipeline.config, "registered_model")
    assert checkpoint is not None and registered is not None
    name = pipeline.config.registered_model
    champion = pipeline.mlflow().get_model_version_by_alias(name, "champion")
    assert champion.tags["checkpoint_id"] == checkpoint.checkpoint_id
    assert registered == replace(checkpoint, model_version=str(champion.version))
    report = (pipeline.config.workspace / "reports" / "results.md").read_text()
    description = champion.description or ""
    assert description.startswith(f"Checkpoint {checkpoint.checkpoint_id}. Mean ndcg@10 gain")
    assert "of 2 tasks (" in description
    for method in ("hydra", "hydra-unseen"):
        gains = []
        for reference in ("base", "hybrid"):
            row = next(
                line for line in report.splitlines() if f"mean gain over {reference} |" in line
            )
            header = next(line for line in report.splitlines() if line.startswith("| task | bm25"))
            column = [cell.strip() for cell in header.split("|")].index(method)
            gains.append(f"over {reference} {row.split('|')[column].strip()}")
        assert f"{method} {', '.join(gains)}" in description
    metadata = _latest_metadata(pipeline, "registered_model")
    assert metadata["model_version"] == dg.TextMetadataValue(f"{name} v{champion.version}")
    assert metadata["alias"] == dg.TextMetadataValue("champion")
    assert metadata["description"] == dg.TextMetadataValue(description)
    link = metadata["mlflow_model"]
    assert isinstance(link, dg.UrlMetadataValue)
    assert link.url == f"http://127.0.0.1:5000/#/models/{name}/versions/{champion.version}"
    assert isinstance(metadata["mlflow_run"], dg.UrlMetadataValue)
    graph = pipeline.defs.resolve_asset_graph()
    assert graph.get_check_spec(QUALITY_CHECK).blocking


def test_reference_hypernets_train_with_labels_and_without_each_task(pipeline: Pipeline) -> None:
    variants = {
        run.data.tags["hydra/variant"]: run
        for run in pipeline.all_training_runs()
        if "hydra/variant" in run.data.tags
    }
    assert set(variants) == VARIANTS
    assert json.loads(variants["labels"].data.params["label_streams"]) == [
        "nfcorpus+labels",
        "scifact+labels",
    ]
    assert json.loads(variants["without-scifact"].data.params["tasks"]) == ["nfcorpus"]
    assert json.loads(variants["without-nfcorpus"].data.params["tasks"]) == ["scifact"]
    rows = metrics_store.latest_results(pipeline.config.resolved_metrics_db)
    scores = {
        (row["task"], row["method"]): {metric: row[metric] for metric in METRICS}
        for row in rows.iter_rows(named=True)
    }
    # Each row is its own retriever's: the hypernet trained without the task compiles another
    # head than the served one, refining moves that head, and the rows score exactly those
    # retrievers. (Their metrics alone may coincide on 20 queries.)
    encoder, assets = pipeline.encoder, pipeline.config.workspace / "assets"
    for task in TASKS:
        card = find_card(task)
        data = OpenedTask.of_card(card, encoder)
        served = CompiledRetriever.load(assets / "compiled_retriever" / f"{task}.safetensors")
        unseen_path = load_value(assets / "unseen_hypernet" / task).path
        unseen = compile_card(unseen_path, card, data, encoder)
        refine_steps = pipeline.config.training.refine_steps
        refined = refine_retriever(unseen, data, encoder, refine_steps)
        assert served.head is not None and unseen.head is not None and refined.head is not None
        assert not torch.equal(unseen.head.weight, served.head.weight), task
        assert not torch.equal(refined.head.weight, unseen.head.weight), task
        retrievers = {"hydra-unseen": unseen, "hydra-unseen-refined": refined}
        table = retriever_table(data, retrievers, encoder=encoder)
        for method, metrics in table.items():
            assert metrics == pytest.approx(scores[(task, method)]), method


def test_each_checkpoint_links_to_its_mlflow_run(pipeline: Pipeline) -> None:
    """The hypernet, its with-labels reference and every leave-one-out hypernet carry a
    link to the MLflow run that trained them (``mlflow_run``), the run their record names."""
    experiment = pipeline.mlflow().get_experiment_by_name(pipeline.config.experiment)
    assert experiment is not None
    assets = pipeline.config.workspace / "assets"
    stored = [("hypernet_checkpoint", None), ("labelled_hypernet", None)]
    stored += [("unseen_hypernet", task) for task in TASKS]
    for name, task in stored:
        base = assets / name / task if task is not None else assets / name
        record = load_value(base)
        link = _latest_metadata(pipeline, name, task)["mlflow_run"]
        assert isinstance(link, dg.UrlMetadataValue), name
        assert link.url == (
            f"http://127.0.0.1:5000/#/experiments/{experiment.experiment_id}"
            f"/runs/{record.mlflow_run_id}"
        ), name
    runs = {load_value(assets / "unseen_hypernet" / task).mlflow_run_id for task in TASKS} | {
        load_value(assets / name).mlflow_run_id
        for name in ("hypernet_checkpoint", "labelled_hypernet")
    }
    assert len(runs) == 2 + len(TASKS)  # each its own run


def test_the_cli_and_the_pipeline_are_one_recipe(pipeline: Pipeline, tmp_path: Path) -> None:
    """The CLI's path (``hydra train``, ``hydra eval``) on the pipeline's tasks trains the
    very checkpoint the pipeline trained (same inputs, fingerprints and weights) and scores
    every row the two tables share identically."""
    encoder, training = pipeline.encoder, pipeline.config.training
    record = load_value(pipeline.config.workspace / "assets" / "hypernet_checkpoint")
    cards = [find_card(name) for name in record.tasks]
    cli = train_on_cards(
        cards,
        tmp_path / "cli",
        encoder,
        TrainConfig(**training.train),
        architecture=HypernetConfig(**training.architecture),
    )
    served = Hypernet.load(record.path)
    assert cli.metadata["fingerprints"] == served.metadata["fingerprints"]
    states = [
        load_file(str(Path(folder) / STATE_FILE)) for folder in (tmp_path / "cli", record.path)
    ]
    assert states[0].keys() == states[1].keys()
    for name, tensor in states[0].items():
        assert torch.equal(tensor, states[1][name]), name

    rows = metrics_store.latest_results(pipeline.config.resolved_metrics_db)
    stored = {
        (row["task"], row["method"]): {metric: row[metric] for metric in METRICS}
        for row in rows.iter_rows(named=True)
    }
    for card in cards:
        table = evaluate_card(card, served, encoder, other_cards=cards)
        assert set(table) == {*TABLE_METHODS, "supervised-head"}
        for method, metrics in table.items():
            assert {metric: metrics[metric] for metric in METRICS} == stored[(card.name, method)]


def test_supervised_reference_depends_on_task_data_only(pipeline: Pipeline) -> None:
    """So a retrained hypernet (weekly schedule, new config) does not refit it."""
    graph = pipeline.defs.resolve_asset_graph()
    upstream = {
        key.to_user_string() for key in graph.get(dg.AssetKey("supervised_metrics")).parent_keys
    }
    assert upstream == {
        "task_card",
        "corpus",
        "queries",
        "qrels",
        "doc_embeddings",
        "query_embeddings",
    }
    assert "supervised_metrics" in {
        key.to_user_string() for key in graph.get(dg.AssetKey("task_metrics")).parent_keys
    }


def test_duckdb_holds_every_task_method_metric(pipeline: Pipeline) -> None:
    database = pipeline.config.resolved_metrics_db
    rows = metrics_store.latest_long(database)
    assert rows.height == len(TASKS) * len(METHODS) * len(METRICS)
    assert set(rows.select("task", "method", "metric").iter_rows()) == {
        (t, m, k) for t in TASKS for m in METHODS for k in METRICS
    }
    checkpoint = current_checkpoint(pipeline.config)
    assert checkpoint is not None
    assert set(rows["run_id"]) == {checkpoint.mlflow_run_id}
    assert set(rows["checkpoint"]) == {checkpoint.checkpoint_id}
    assert set(rows["split"]) == {"test"}
    expected = {"run_id", "checkpoint", "task", "method", "split", "metric", "value", "created_at"}
    assert expected <= set(rows.columns)

    # Each evaluation's per-query rows, stored with it: every query of every method, and
    # their means are the metrics rows.
    per_query = metrics_store.latest_per_query(database)
    key = ["task", "method", "metric"]
    assert (
        per_query.select(*key, "evaluation_id")
        .unique()
        .sort(key)
        .equals(rows.select(*key, "evaluation_id").sort(key))
    )
    queries = per_query.group_by("task", "method", "metric").agg(pl.col("query_id").n_unique())
    assert set(queries["query_id"]) == {20}  # the slices' 20 test queries, each judged
    means = per_query.group_by(key).agg(pl.col("value").mean()).join(rows, on=key)
    assert means["value"].to_list() == pytest.approx(means["value_right"].to_list(), abs=1e-12)

    # The fusion each card compiled to beside the oracle's grid point, with its NDCG@10.
    fusion = metrics_store.query(database, "SELECT * FROM latest_fusion")
    assert set(fusion.select("task", "method").iter_rows()) == {
        (t, m)
        for t in TASKS
        for m in ("hydra", "hydra-generic", "hydra-unseen", "hydra-unseen-generic", "oracle")
    }
    headline = rows.filter(pl.col("metric") == "ndcg@10").select("task", "method", "value")
    ndcg = {(task, method): value for task, method, value in headline.iter_rows()}
    for row in fusion.iter_rows(named=True):
        assert row["ndcg@10"] == ndcg[(row["task"], row["method"])]
        assert 0 <= row["lexical_weight"] <= 1
        assert row["query_gate"] == (row["method"] != "oracle")  # the gate is fitted


def test_robustness_rows_in_duckdb_and_the_report(pipeline: Pipeline) -> None:
    """Every method but the references, per configured perturbation: clean equal to the
    task's table, the drop perturbed - clean, and the report's section built from them."""
    database = pipeline.config.resolved_metrics_db
    rows = metrics_store.latest_robustness(database)
    expected = {
        (task, method, kind, float(rate))
        for task in TASKS
        for method in TABLE_METHODS
        for kind, rate in (("typos", 0.3), ("drop", 0.2))
    }
    assert set(rows.select("task", "method", "kind", "rate").iter_rows()) == expected
    assert rows.height == len(expected)
    checkpoint = current_checkpoint(pipeline.config)
    assert checkpoint is not None
    assert set(rows["checkpoint"]) == {checkpoint.checkpoint_id}
    assert set(rows["run_id"]) == {checkpoint.mlflow_run_id}
    assert set(rows["seed"]) == {0} and set(rows["metric"]) == {"ndcg@10"}
    assert rows["evaluation_id"].n_unique() == len(TASKS)
    drops = (rows["perturbed"] - rows["clean"] - rows["drop"]).abs()
    assert drops.max() == pytest.approx(0.0, abs=1e-12)
    assert (rows["drop"] != 0).sum() > 0  # the perturbations change some rankings
    table = metrics_store.latest_long(database).filter(pl.col("metric") == "ndcg@10")
    clean = rows.join(table, on=["task", "method"])
    assert clean.height == rows.height
    assert clean["clean"].to_list() == pytest.approx(clean["value"].to_list(), abs=1e-5)

    text = (pipeline.config.workspace / "reports" / "results.md").read_text()
    section = text.split("## Robustness")[1].split("## All metrics")[0]
    assert "| task | method | clean | typos:0.3 | drop:0.2 |" in section
    for task, method, clean_value in (
        rows.filter(pl.col("kind") == "typos").select("task", "method", "clean").iter_rows()
    ):
        assert f"\n| {task} | {method} | {clean_value:.4f} | " in section
    means = rows.group_by("method").agg(pl.col("drop").mean())
    means = means.sort("drop", "method", descending=[True, False])
    assert f"Degrades least on average: `{means['method'][0]}` (" in section


def test_baselines_equal_the_in_memory_path(pipeline: Pipeline) -> None:
    """Stored rankings, fused and scored by the pipeline, give exactly `hydra baselines`."""
    rows = metrics_store.latest_long(pipeline.config.resolved_metrics_db)
    for name in TASKS:
        card = find_card(name)
        expected = task_baselines(OpenedTask.of_card(card, pipeline.encoder), pipeline.encoder)
        for method, metrics in expected.items():
            for metric, value in metrics.items():
                stored = rows.filter(
                    (pl.col("task") == name)
                    & (pl.col("method") == method)
                    & (pl.col("metric") == metric)
                )["value"]
                assert stored.to_list() == pytest.approx([value], abs=1e-12), (name, method)


def test_report_files(pipeline: Pipeline) -> None:
    report = pipeline.config.workspace / "reports" / "results.md"
    text = report.read_text()
    header = "| task | bm25 | base | teacher | hybrid | hydra | hydra-dense | hydra-generic |"
    assert header in text
    assert "| mean gain over base |" in text and "| worst gain over hybrid |" in text
    significance = text.split("## Significance")[1].split("## All metrics")[0]
    for task in TASKS:
        assert f"\n| {task} | " in text
        for method in ("hydra", "hydra-unseen"):  # tested against base, teacher and hybrid
            assert f"\n| {task} | {method} | " in significance
    assert "| task | method | vs base | vs teacher | vs hybrid |" in significance
    pool = text.split("## Tasks known only by their card")[1].split("## ")[0]
    assert "| better-channel | " in pool and "| oracle | " in pool
    for task in TASKS:  # each card's fusion beside the oracle's point
        assert f"\n| {task} | hydra-unseen | " in pool and f"\n| {task} | oracle | " in pool
    chart = report.with_name("ndcg_at_10.png").read_bytes()
    assert chart.startswith(b"\x89PNG") and len(chart) > 5_000


def _latest_metadata(
    pipeline: Pipeline, name: str, partition: str | None = None
) -> dict[str, dg.MetadataValue]:
    records = pipeline.instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=dg.AssetKey(name),
            asset_partitions=[partition] if partition is not None else None,
        ),
        limit=1,
    ).records
    materialization = records[0].asset_materialization
    assert materialization is not None
    return dict(materialization.metadata)


def _quality_check_metadata(pipeline: Pipeline, task: str) -> Mapping[str, dg.MetadataValue]:
    """The metadata of the task's newest quality check evaluation."""
    records = pipeline.instance.get_event_records(
        dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    )
    for record in records:  # newest first
        event = record.event_log_entry.dagster_event
        evaluation = None if event is None else event.asset_check_evaluation_data
        if (
            evaluation is not None
            and evaluation.asset_check_key == QUALITY_CHECK
            and evaluation.partition == task
        ):
            return evaluation.metadata
    raise AssertionError(f"no quality check evaluation of {task}")


def test_metrics_and_report_metadata_for_the_dagster_ui(pipeline: Pipeline) -> None:
    """task_metrics carries floats the asset page plots (DuckDB's figures, rounded), its
    results and significance as tables, its row count and columns, and a link to the MLflow
    run; the quality check shows both values and the worst queries with their text; the
    report leads with its headline and shows its chart inline."""
    results = metrics_store.latest_results(pipeline.config.resolved_metrics_db)
    checkpoint = current_checkpoint(pipeline.config)
    assert checkpoint is not None
    (run,) = pipeline.training_runs()
    for task in TASKS:
        metadata = _latest_metadata(pipeline, "task_metrics", task)
        stored = dict(
            results.filter(pl.col("task") == task).select("method", "ndcg@10").iter_rows()
        )
        for method in METHODS:
            value = metadata[f"ndcg@10/{method}"]
            assert isinstance(value, dg.FloatMetadataValue)
            assert value.value == round(stored[method], 4)  # rounded: no 17-digit floats
        gain = metadata["gain_over_base/hydra"]
        assert isinstance(gain, dg.FloatMetadataValue)
        assert gain.value == pytest.approx(stored["hydra"] - stored["base"], abs=5e-5)
        assert "gain_over_base/base" not in metadata
        table = metadata["results"]  # a sortable table, not a text block
        assert isinstance(table, dg.TableMetadataValue)
        assert [c.name for c in table.schema.columns] == ["method", *METRICS, "gain_over_base"]
        rows = {str(r.data["method"]): r.data for r in table.records}
        assert set(rows) == set(stored) and list(rows) == in_table_order(rows)
        assert rows["hydra"]["ndcg@10"] == round(stored["hydra"], 4)
        assert isinstance(metadata["significance"], dg.TableMetadataValue)
        assert metadata["dagster/row_count"] == dg.IntMetadataValue(len(stored) * len(METRICS))
        assert isinstance(metadata["dagster/column_schema"], dg.TableSchemaMetadataValue)
        checked = _quality_check_metadata(pipeline, task)
        assert checked["hydra_ndcg@10"].value == round(stored["hydra"], 4)
        assert checked["base_ndcg@10"].value == round(stored["base"], 4)
        worst = checked["worst_queries"]
        assert isinstance(worst, dg.TableMetadataValue)
        columns = ("query_id", "query", "hydra", "base", "difference")
        assert tuple(c.name for c in worst.schema.columns) == columns
        assert len(worst.records) == 5 and all(r.data["query"] for r in worst.records)
        link = metadata["mlflow_run"]
        assert isinstance(link, dg.UrlMetadataValue)
        assert link.url == (
            f"http://127.0.0.1:5000/#/experiments/{run.info.experiment_id}"
            f"/runs/{checkpoint.mlflow_run_id}"
        )
    report = _latest_metadata(pipeline, "results_report")
    headline = report["headline"]
    assert isinstance(headline, dg.TextMetadataValue)
    assert (headline.text or "").startswith(f"Mean ndcg@10 over {len(TASKS)} tasks: `hydra` ")
    assert isinstance(report["ndcg@10"], dg.TableMetadataValue)
    assert isinstance(report["mlflow_run"], dg.UrlMetadataValue)
    image = report["chart_image"]
    assert isinstance(image, dg.MarkdownMetadataValue)
    chart = pipeline.config.workspace / "reports" / "ndcg_at_10.png"
    prefix = "![ndcg@10 gains](data:image/png;base64,"
    text = image.md_str or ""
    assert text.startswith(prefix)
    assert base64.b64decode(text.removeprefix(prefix).removesuffix(")")) == (chart.read_bytes())


def test_second_run_rebuilds_and_encodes_nothing(pipeline: Pipeline) -> None:
    encoded_before = pipeline.encoder.stats.encoded
    materializations = len(_materialized(pipeline.instance, "doc_embeddings"))
    started = time.perf_counter()
    summary = pipeline.run()
    assert summary.launched == []
    assert time.perf_counter() - started < 15
    (version,) = pipeline.mlflow().search_model_versions(
        f"name='{pipeline.config.registered_model}'"
    )
    assert str(version.version) == "1"
    assert pipeline.encoder.stats.encoded == encoded_before
    assert len(_materialized(pipeline.instance, "doc_embeddings")) == materializations


def test_card_comment_edit_rebuilds_that_task_only_and_not_the_hypernet(
    pipeline: Pipeline,
) -> None:
    """A changed card file is re-read; identical content changes nothing further down."""
    card_file = pipeline.project.cards_dir / "nfcorpus.yaml"
    card_file.write_text(card_file.read_text() + "# reviewed\n")
    encoded_before = pipeline.encoder.stats.encoded
    summary = pipeline.run()
    assert [(run.wave.name, run.partition) for run in summary.launched] == [
        ("task data", "nfcorpus")
    ]
    assert summary.launched[0].reasons[0].startswith("task_card")
    assert pipeline.encoder.stats.encoded == encoded_before  # cached: nothing re-encoded
    assert len(pipeline.all_training_runs()) == 1 + len(VARIANTS)
    assert pipeline.run().launched == []


def test_partitions_run_in_parallel_processes(pipeline: Pipeline) -> None:
    """The multiprocess executor: each task partition's run in its own worker process."""
    config = pipeline.config.model_copy(
        update={"executor": pipeline.config.executor.model_copy(update={"kind": "multiprocess"})}
    )
    planned = [PlannedRun(WAVES[0], task, ("task_card",), ("test",)) for task in TASKS]
    with WaveExecutor(config, pipeline.defs, pipeline.instance) as executor:
        assert [outcome.success for outcome in executor.run(planned)] == [True, True]
    pids = set()
    for task in TASKS:
        records = pipeline.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("task_card"), asset_partitions=[task]),
            limit=1,
        ).records
        event = records[0].event_log_entry.dagster_event
        assert event is not None
        pids.add(event.pid)
    assert len(pids) == 2 and os.getpid() not in pids


def test_schedule_and_automation_definitions(pipeline: Pipeline) -> None:
    schedule = pipeline.defs.resolve_schedule_def("weekly_retrain")
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert schedule.cron_schedule == pipeline.config.retrain_cron
    assert schedule.job_name == "train_hypernet"
    sensor = pipeline.defs.resolve_sensor_def("task_card_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    graph = pipeline.defs.resolve_asset_graph()
    for name in ("compiled_retriever", "unseen_hypernet", "task_metrics", "results_report"):
        assert graph.get(dg.AssetKey(name)).automation_condition is not None
    assert graph.get(dg.AssetKey("hypernet_checkpoint")).automation_condition is None


def test_cli_metrics_formats_and_sql(pipeline: Pipeline) -> None:
    runner = CliRunner()
    table = runner.invoke(app, ["metrics"])
    assert table.exit_code == 0, table.output
    assert "hydra-shuffled" in table.stdout and "scifact" in table.stdout
    as_csv = runner.invoke(app, ["metrics", "--format", "csv"])
    frame = pl.read_csv(as_csv.stdout.encode())
    assert frame.height == len(TASKS) * len(METHODS)
    assert {"task", "method", "ndcg@10", "mrr@10", "recall@100"} <= set(frame.columns)
    as_json = runner.invoke(app, ["metrics", "--format", "json"])
    assert {row["method"] for row in json.loads(as_json.stdout)} == set(METHODS)
    sql = "select task, count(*) as n from latest_metrics group by task order by task"
    counted = runner.invoke(app, ["metrics", sql, "--format", "json"])
    assert json.loads(counted.stdout) == [
        {"task": "nfcorpus", "n": len(METHODS) * len(METRICS)},
        {"task": "scifact", "n": len(METHODS) * len(METRICS)},
    ]
    bad = runner.invoke(app, ["metrics", "select * from no_such_table"])
    assert bad.exit_code == 2 and "no_such_table" in bad.stderr


def test_cli_run_prints_results_and_locations(pipeline: Pipeline) -> None:
    """``hydra run`` as a user types it (it rebuilds its definitions from the files, so an
    edit of hydra_core since the module's first run would legitimately rebuild something)."""
    result = CliRunner().invoke(app, ["run"])
    assert result.exit_code == 0, result.output
    assert "[report]" in result.stderr and "done in" in result.stderr
    checkpoint = current_checkpoint(pipeline.config)
    assert checkpoint is not None
    for expected in ("scifact", "hydra-generic", "mlflow ui --backend-store-uri sqlite:///"):
        assert expected in result.stdout
    assert f"Checkpoint:  {checkpoint.checkpoint_id} ({checkpoint.path})" in result.stdout
    assert f"DuckDB:      {pipeline.config.resolved_metrics_db}" in result.stdout


def test_sensor_adds_a_new_task_as_a_partition_with_metrics(pipeline: Pipeline) -> None:
    """A task added to the list (its card in the folder, its name in ``tasks``) gets its
    partition, its data and a head from the existing hypernet: the training tasks stay."""
    cranfield = load_task("cranfield").head(80, 8)  # test split only: generated queries
    pipeline.project.add_task(cranfield, "cranfield")
    config = pipeline.config.model_copy(
        update={"tasks": [*TASKS, "cranfield"], "training_tasks": list(TASKS)}
    )
    defs = build_definitions(config)
    task_card_sensor = defs.resolve_sensor_def("task_card_sensor")
    context = dg.build_sensor_context(instance=pipeline.instance, definitions=defs)
    result = task_card_sensor(context)
    assert isinstance(result, dg.SensorResult)
    (added,) = result.dynamic_partitions_requests or []
    assert isinstance(added, dg.AddDynamicPartitionsRequest)
    assert list(added.partition_keys) == ["cranfield"]
    (request,) = result.run_requests or []
    assert request.partition_key == "cranfield"
    assert dg.AssetKey("task_metrics") in (request.asset_selection or [])
    assert {event.partition for event in result.asset_events} == {"cranfield"}

    # what the daemon does with the result
    pipeline.instance.add_dynamic_partitions("task", list(added.partition_keys))
    for event in result.asset_events:
        pipeline.instance.report_runless_asset_event(event)
    job = defs.resolve_job_def(TASK_JOB)
    outcome = job.execute_in_process(
        instance=pipeline.instance,
        partition_key=request.partition_key,
        asset_selection=list(request.asset_selection or []),
        tags=request.tags,
    )
    assert outcome.success
    assert "cranfield" in _materialized(pipeline.instance, "task_metrics")
    rows = metrics_store.latest_long(pipeline.config.resolved_metrics_db, ["cranfield"])
    assert set(rows["method"]) == set(METHODS) - set(LABEL_METHODS)  # its card has no labels
    # compiled by the existing hypernet, which is also the one that never saw it
    assert len(pipeline.all_training_runs()) == 1 + len(VARIANTS)

    again = task_card_sensor(dg.build_sensor_context(instance=pipeline.instance))
    assert isinstance(again, dg.SkipReason)


def test_a_task_too_small_for_pairs_is_left_out_of_training_only(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    scifact_slice: RetrievalTask,
) -> None:
    """Ten documents yield no preference pairs: the hypernet trains on the other task and the
    small one still gets its baselines, compiled head and table; alone it fails in one line."""
    tasks = {"scifact": scifact_slice.head(100, 10), "tiny": scifact_slice.head(10, 5)}
    project = make_project(tmp_path, tasks, like={"tiny": "scifact"})
    config = project.enter(monkeypatch)
    with dg.DagsterInstance.get() as instance:
        run_pipeline(config, build_definitions(config), instance, echo=lambda _: None)
        checkpoint = current_checkpoint(config)
        assert checkpoint is not None and checkpoint.tasks == ["scifact"]
        assert "tiny: no preference pairs from its 5 training queries" in capsys.readouterr().err
        rows = metrics_store.latest_results(config.resolved_metrics_db)
        tiny = set(rows.filter(pl.col("task") == "tiny")["method"])
        assert {"bm25", "base", "teacher", "hydra", "hydra-generic", "hydra-shuffled"} <= tiny
        assert (config.workspace / "assets" / "compiled_retriever" / "tiny.safetensors").is_file()

        monkeypatch.setenv("HYDRA_TASKS", "tiny")
        alone = load_project_config()
        with pytest.raises(PipelineError) as failed:
            run_pipeline(alone, build_definitions(alone), instance, echo=lambda _: None)
    assert "no task yields preference pairs to train on (tiny: 10 documents, " in str(failed.value)
