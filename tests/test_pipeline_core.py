"""The plain-library pieces under the pipeline: config, fingerprints, code versions, storage,
metrics store, report, data checks, what the card sensor asks for, how a failed step is told.
Fast: no model, no pipeline run."""

from __future__ import annotations

import base64
import json
import logging
import os
import pkgutil
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import polars as pl
import pytest
import yaml
from dagster_shared.error import SerializableErrorInfo
from pipeline_support import make_project

from hydra_core.data.beir_folder import load_beir_folder
from hydra_core.data.cards import TaskCard, find_card, write_card
from hydra_core.data.fingerprints import (
    beir_folder_fingerprint,
    card_source_fingerprint,
    file_fingerprint,
    frame_digest,
)
from hydra_core.data.opened_task import OpenedTask
from hydra_core.data.retrieval_task import RetrievalTask
from hydra_core.encoding.encoder import FrozenEncoder
from hydra_core.errors import HydraInputError
from hydra_core.evaluation.method import GLOSSARY, Method
from hydra_core.evaluation.metrics import Scores
from hydra_core.evaluation.perturbations import KINDS, Perturbation, Robustness
from hydra_core.evaluation.report import ResultsTable
from hydra_core.evaluation.significance import per_query_frame
from hydra_core.model.score_fusion import FusionParameters
from hydra_core.settings import PROJECT_ROOT
from hydra_pipeline import defs, metrics_store
from hydra_pipeline.artifacts import (
    CheckpointRecord,
    Embeddings,
    load_value,
    qrels_long,
    save_beir_folder,
    save_value,
    stored_path,
    task_from_frames,
)
from hydra_pipeline.definitions import build_definitions
from hydra_pipeline.defs.asset_checks import QUALITY_CHECK
from hydra_pipeline.defs.assets import registry
from hydra_pipeline.defs.jobs import TASK_DATA_ASSETS
from hydra_pipeline.defs.partitions import TASK_PARTITIONS
from hydra_pipeline.defs.progress import cause_chain
from hydra_pipeline.defs.versions import code_version, direct_imports, module_closure
from hydra_pipeline.project_config import POSTGRES_URL_ENV, ProjectConfig, load_project_config
from hydra_pipeline.report_chart import (
    CHART_COLOURS,
    gain_limits,
    inline_image_markdown,
    ndcg_chart,
)
from hydra_pipeline.report_markdown import markdown_table, robustness_markdown
from hydra_pipeline.results_figures import gain_table, headline_metadata
from hydra_pipeline.results_report import write_report
from hydra_pipeline.runner import POSTGRES_STORAGE, prepare_dagster_home
from hydra_pipeline.stages import dangling_qrels, leaked_test_queries, metrics_frame
from hydra_pipeline.tracking import (
    CHAMPION_ALIAS,
    MLFLOW_UI_ADDRESS,
    TrackingTarget,
    TrainingRun,
    flatten_params,
    metric_key,
    model_version_url,
    register_checkpoint,
    run_url,
)

# ------------------------------------------------------------------------------ config


@pytest.fixture()
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in (
        "HYDRA_CONFIG",
        "HYDRA_WORKSPACE",
        "MLFLOW_TRACKING_URI",
        "HYDRA_METRICS_DB",
        "HYDRA_EXECUTOR",
        "HYDRA_TASKS",
        "HYDRA_DAGSTER_POSTGRES_URL",
        "HYDRA_CACHE_DIR",
        "HYDRA_ENCODER",
    ):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_config_paths_resolve_against_the_file(tmp_path: Path, clean_env: object) -> None:
    config_file = tmp_path / "proj" / "hydra.yaml"
    config_file.parent.mkdir()
    config_file.write_text("tasks: [a, b]\nworkspace: ws\nexecutor: {kind: in_process}\n")
    config = load_project_config(config_file)
    assert config.workspace == tmp_path / "proj" / "ws"
    assert config.resolved_tracking_uri == f"sqlite:///{tmp_path}/proj/ws/mlflow.db"
    assert config.resolved_metrics_db == str(tmp_path / "proj" / "ws" / "metrics.duckdb")
    assert config.cache_dir == tmp_path / "proj" / "ws" / "cache"
    assert config.training_task_names == ["a", "b"]


def test_config_environment_overrides(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    config_file = tmp_path / "hydra.yaml"
    config_file.write_text("tasks: [a, b, c]\ntraining_tasks: [a, c]\n")
    clean_env.setenv("HYDRA_CONFIG", str(config_file))
    clean_env.setenv("HYDRA_WORKSPACE", str(tmp_path / "elsewhere"))
    clean_env.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    clean_env.setenv("HYDRA_METRICS_DB", "md:hydra")
    clean_env.setenv("HYDRA_EXECUTOR", "in_process")
    clean_env.setenv("HYDRA_TASKS", "a,b")
    clean_env.setenv("HYDRA_DAGSTER_POSTGRES_URL", "postgresql+psycopg2://u@db/dagster")
    config = load_project_config()
    assert config.workspace == tmp_path / "elsewhere"
    assert config.resolved_tracking_uri == "http://mlflow.example:5000"
    assert config.resolved_metrics_db == "md:hydra"
    assert config.executor.kind == "in_process"
    assert config.tasks == ["a", "b"]
    assert config.training_task_names == ["a"]  # narrowed with the task list
    assert config.dagster_postgres_url == "postgresql+psycopg2://u@db/dagster"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("tasks: [a]\ntraining_tasks: [b]\n", "training_tasks"),
        ("executor: {kind: threads}\n", "executor.kind"),
        ("tasks: [a]\nunknown_key: 1\n", "unknown_key"),
        # SQLAlchemy would pick psycopg 3 for it, on which Dagster's run storage fails
        ("dagster_postgres_url: postgresql://u@db/dagster\n", "dagster_postgres_url"),
        ("robustness: {perturbations: [drop, typos], sed: 1}\n", "robustness.sed"),
    ],
)
def test_config_errors_name_the_field(
    tmp_path: Path, clean_env: object, text: str, field: str
) -> None:
    config_file = tmp_path / "hydra.yaml"
    config_file.write_text(text)
    with pytest.raises(HydraInputError) as error:
        load_project_config(config_file)
    assert str(config_file) in str(error.value) and repr(field) in str(error.value)


@pytest.mark.parametrize(
    ("perturbations", "field", "problem"),
    [
        ('[drop, "typo:0.1"]', "robustness.perturbations.1", "'typo:0.1': unknown kind 'typo'; "),
        ('["swap:1.5"]', "robustness.perturbations.0", "'swap:1.5': bad rate '1.5'; "),
        ('[typos, "typos:0.1"]', "robustness", "'typos:0.1' repeats 'typos' (typos:0.1)"),
    ],
)
def test_a_bad_perturbation_is_one_line_naming_field_and_value(
    tmp_path: Path, clean_env: object, perturbations: str, field: str, problem: str
) -> None:
    config_file = tmp_path / "hydra.yaml"
    config_file.write_text(f"robustness: {{perturbations: {perturbations}}}\n")
    with pytest.raises(HydraInputError) as error:
        load_project_config(config_file)
    message = str(error.value)
    assert message.startswith(f"{config_file} (field {field!r}): {problem}")
    assert "\n" not in message and "Value error" not in message


def test_robustness_is_off_by_default_and_the_project_turns_on_every_kind(
    clean_env: object,
) -> None:
    """Off for a project that does not ask; this project's hydra.yaml asks for every kind
    the perturbations module offers, each at its default rate."""
    assert ProjectConfig().robustness.perturbations == []
    project = load_project_config(PROJECT_ROOT / "hydra.yaml").robustness.parsed()
    assert [(p.kind, p.rate) for p in project] == [
        (kind, rate) for kind, (_, rate) in KINDS.items()
    ]


def test_a_postgres_url_adds_the_storage_section_to_dagster_yaml(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    """Added once to hydra's file, the URL read from the environment (no password in the
    file); another storage there is an error naming the file, not a silent switch."""
    clean_env.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))  # restored afterwards
    # prepare_dagster_home exports the URL for the run workers: set here first, so it is
    # removed again afterwards and no later test's instance looks for this server
    clean_env.setenv(POSTGRES_URL_ENV, "")
    url = "postgresql+psycopg2://hydra:secret@db/dagster"
    config_file = tmp_path / "hydra.yaml"
    config_file.write_text(f"workspace: ws\ndagster_postgres_url: {url}\n")
    config = load_project_config(config_file)
    settings = prepare_dagster_home(config) / "dagster.yaml"
    prepare_dagster_home(config)
    loaded = yaml.safe_load(settings.read_text())
    assert loaded["storage"] == POSTGRES_STORAGE and loaded["run_queue"]
    assert "secret" not in settings.read_text() and os.environ[POSTGRES_URL_ENV] == url
    settings.write_text("storage:\n  sqlite:\n    base_dir: history\n")
    with pytest.raises(HydraInputError) as error:
        prepare_dagster_home(config)
    assert str(error.value).startswith(f"{settings} (field 'storage'): ")


def test_hydra_log_lines_reach_the_run_page(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    """The instance hydra writes manages hydra's loggers: a step's progress line (here one
    logged by a real asset through ``hydra_core``'s logger) is an event of its run, which
    is what the run page shows."""
    clean_env.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    config_file = tmp_path / "hydra.yaml"
    config_file.write_text("workspace: ws\n")
    prepare_dagster_home(load_project_config(config_file))

    @dg.asset
    def logs_progress() -> int:
        logging.getLogger("hydra_core.progress").info("encoding: 5/10 texts")
        return 1

    with dg.DagsterInstance.get() as instance:
        result = dg.materialize([logs_progress], instance=instance)
        messages = [record.user_message for record in instance.all_logs(result.run_id)]
    assert "encoding: 5/10 texts" in messages


# ------------------------------------------------------------------------------ fingerprints


def test_fingerprints_follow_content_not_time(tmp_path: Path, scifact_slice: RetrievalTask) -> None:
    folder = save_beir_folder(scifact_slice.head(20, 5), tmp_path / "sf")
    before = beir_folder_fingerprint(folder)
    corpus = folder / "corpus.jsonl"
    os.utime(corpus, (time.time() + 100, time.time() + 100))
    assert beir_folder_fingerprint(folder) == before
    qrels = folder / "qrels" / "test.tsv"
    qrels.write_text(qrels.read_text().replace("\t1\n", "\t2\n", 1))
    assert beir_folder_fingerprint(folder) != before
    assert file_fingerprint(corpus) != file_fingerprint(qrels)


def test_card_source_fingerprint(tmp_path: Path, scifact_slice: RetrievalTask) -> None:
    save_beir_folder(scifact_slice.head(20, 5), tmp_path / "data" / "sf")
    card = find_card("scifact").model_copy(update={"source": "./data/sf"})
    write_card(card, tmp_path / "sf.yaml")
    local = find_card(str(tmp_path / "sf.yaml"))
    assert card_source_fingerprint(local) == beir_folder_fingerprint(tmp_path / "data" / "sf")
    remote = card.model_copy(update={"source": "beir/not-here", "card_path": None})
    assert card_source_fingerprint(remote, data_dir=tmp_path) == "ir_datasets:beir/not-here"


def test_frame_digest() -> None:
    frame = pl.DataFrame({"a": ["x", "y"], "b": [1, 2]})
    assert frame_digest(frame) == frame_digest(pl.concat([frame.head(1), frame.tail(1)]))
    assert frame_digest(frame) != frame_digest(frame.reverse())
    assert frame_digest(frame) != frame_digest(frame.with_columns(pl.col("b").cast(pl.Int32)))


# ------------------------------------------------------------------------------ storage


def test_values_round_trip(tmp_path: Path) -> None:
    frame = pl.DataFrame({"query_id": ["q1"], "score": [0.5]})
    embeddings = Embeddings(ids=["d1", "d2"], vectors=np.eye(2, 3, dtype=np.float32))
    card = find_card("nfcorpus")
    record = CheckpointRecord(path="/ck", checkpoint_id="abc", tasks=["a"], mlflow_run_id="r")
    for name, value in {"f": frame, "e": embeddings, "c": card, "k": record}.items():
        save_value(value, tmp_path / name)
        loaded = load_value(tmp_path / name)
        if isinstance(value, pl.DataFrame):
            assert loaded.equals(value)
        elif isinstance(value, Embeddings):
            assert loaded.ids == value.ids and np.array_equal(loaded.vectors, value.vectors)
        else:
            assert loaded == value
    assert load_value(tmp_path / "c").card_path == card.card_path
    save_value(frame, tmp_path / "k")  # a value of another format replaces the old file
    assert stored_path(tmp_path / "k") == tmp_path / "k.parquet"
    assert not (tmp_path / "k.json").exists()
    with pytest.raises(KeyError, match="no embedding"):
        embeddings.select(["d3"])


def test_beir_folder_and_frames_round_trip(tmp_path: Path, nfcorpus_slice: RetrievalTask) -> None:
    task = nfcorpus_slice.head(50, 8)
    loaded = load_beir_folder(save_beir_folder(task, tmp_path / "nf"))
    assert loaded.corpus.equals(task.corpus) and loaded.queries.equals(task.queries)
    assert loaded.splits == task.splits
    for split in task.splits:
        assert loaded.qrels[split].equals(task.qrels[split])
    rebuilt = task_from_frames("nf", "", task.corpus, task.queries, qrels_long(task))
    assert rebuilt.splits == task.splits
    assert rebuilt.qrels_dict("test") == task.qrels_dict("test")


# ------------------------------------------------------------------------------ metrics store


def _rows(value: float) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "task": ["a", "a", "b"],
            "method": ["base", "hydra", "base"],
            "split": ["test"] * 3,
            "metric": ["ndcg@10"] * 3,
            "value": [value, value + 0.1, value],
        }
    )


def test_latest_results_per_task(tmp_path: Path) -> None:
    database = str(tmp_path / "m.duckdb")
    metrics_store.record_metrics(database, _rows(0.1), run_id="r1", checkpoint="c1")
    metrics_store.record_metrics(
        database, _rows(0.5).filter(pl.col("task") == "a"), run_id="r2", checkpoint="c2"
    )
    latest = metrics_store.latest_results(database)
    assert latest.select("task", "method", "checkpoint", "ndcg@10").rows() == [
        ("a", "base", "c2", 0.5),
        ("a", "hydra", "c2", pytest.approx(0.6)),
        ("b", "base", "c1", 0.1),
    ]
    assert metrics_store.query(database, "select count(*) as n from metrics")["n"][0] == 5
    with pytest.raises(metrics_store.NoMetricsError):
        metrics_store.latest_results(str(tmp_path / "missing.duckdb"))


def _scores(values: list[float]) -> Scores:
    return Scores({f"q{i}": {"ndcg@10": v} for i, v in enumerate(values)}, ["ndcg@10"])


def test_an_evaluation_is_stored_with_its_per_query_rows_or_not_at_all(tmp_path: Path) -> None:
    database = str(tmp_path / "m.duckdb")
    table: ResultsTable = {"base": _scores([0.2, 0.6, 0.1]), "hydra": _scores([0.4, 0.6, 0.2])}

    def record(run_id: str, per_query: pl.DataFrame) -> str:
        return metrics_store.record_metrics(
            database,
            metrics_frame("a", table),
            run_id=run_id,
            checkpoint="c",
            per_query=per_query,
            dagster_run_id=f"dagster-{run_id}",
        )

    first = record("r1", per_query_frame("a", table, "test"))
    stored = metrics_store.latest_per_query(database)
    assert stored.select("method", "query_id", "value").rows() == [
        ("base", "q0", 0.2),
        ("base", "q1", 0.6),
        ("base", "q2", 0.1),
        ("hydra", "q0", 0.4),
        ("hydra", "q1", 0.6),
        ("hydra", "q2", 0.2),
    ]
    tags = {"run_id", "checkpoint", "split", "metric", "created_at", "evaluation_id"}
    tags |= {"dagster_run_id", "task"}
    means = metrics_store.latest_long(database)
    for tag in tags:
        assert stored[tag].unique().to_list() == means[tag].unique().to_list(), tag
    assert set(stored["evaluation_id"]) == {first}
    averaged = stored.group_by("method").agg(pl.col("value").mean()).sort("method")
    assert averaged["value"].to_list() == pytest.approx(means.sort("method")["value"].to_list())

    # Per-query rows that cannot be stored (a missing value) take the means down with them.
    broken = per_query_frame("a", table, "test").with_columns(
        pl.when(pl.col("query_id") == "q2").then(None).otherwise(pl.col("value")).alias("value")
    )
    with pytest.raises(duckdb.ConstraintException, match="per_query"):
        record("r2", broken)
    count = "select count(*) as n from metrics where run_id = 'r2'"
    assert metrics_store.query(database, count)["n"].item() == 0
    assert metrics_store.latest_long(database)["evaluation_id"].unique().to_list() == [first]

    latest = record("r3", per_query_frame("a", table, "test"))
    assert set(metrics_store.latest_per_query(database)["evaluation_id"]) == {latest}
    assert metrics_store.query(database, "select count(*) as n from per_query")["n"].item() == 12


def test_robustness_rows_and_their_report_section(tmp_path: Path) -> None:
    """The latest robustness evaluation per task, the section built from it, and none in a
    store written before the table existed."""
    database = str(tmp_path / "m.duckdb")
    duckdb.connect(database).close()  # a store without the table
    assert metrics_store.latest_robustness(database).is_empty()

    def result(kind: str, clean: dict[str, float], perturbed: dict[str, float]) -> Robustness:
        return Robustness(
            Perturbation(kind, 0.2),
            clean={m: {"ndcg@10": v} for m, v in clean.items()},
            perturbed={m: {"ndcg@10": v} for m, v in perturbed.items()},
        )

    clean = {"bm25": 0.5, "hydra": 0.6, "hydra-shuffled": 0.6}
    older = [result("swap", clean, {"bm25": 0.1, "hydra": 0.1, "hydra-shuffled": 0.1})]
    metrics_store.record_robustness(
        database, metrics_store.robustness_frame("a", older), run_id="r", checkpoint="c"
    )
    results = [
        result("swap", clean, {"bm25": 0.5, "hydra": 0.55, "hydra-shuffled": 0.6}),
        result("drop", clean, {"bm25": 0.3, "hydra": 0.58, "hydra-shuffled": 0.6}),
    ]
    metrics_store.record_robustness(
        database, metrics_store.robustness_frame("a", results), run_id="r", checkpoint="c"
    )
    other = [result("swap", {"bm25": 0.4, "hydra": 0.5}, {"bm25": 0.4, "hydra": 0.45})]
    metrics_store.record_robustness(
        database, metrics_store.robustness_frame("b", other), run_id="r", checkpoint="c"
    )
    rows = metrics_store.latest_robustness(database)
    assert rows.height == 6 + 2  # a's newer evaluation, and b's
    assert rows.filter(pl.col("task") == "a")["evaluation_id"].n_unique() == 1
    section = robustness_markdown(rows)
    lines = section.splitlines()
    assert lines[0] == "| task | method | clean | swap:0.2 | drop:0.2 |"
    assert "| a | hydra | 0.6000 | 0.5500 (-0.0500) | 0.5800 (-0.0200) |" in lines
    assert "| b | hydra | 0.5000 | 0.4500 (-0.0500) |  |" in lines
    # hydra-shuffled never drops, but was not scored on b: it does not compete
    assert lines[-1] == (
        "Degrades least on average: `hydra` (-0.0400 ndcg@10 over 3 task and perturbation "
        "pairs); most: `bm25` (-0.0667)."
    )


def test_report_tests_hydra_against_each_reference(tmp_path: Path) -> None:
    """Per-query rows from DuckDB: hydra is 0.1 above base on every one of 50 queries (a
    significant gain) and equal to hybrid (none); gains over hybrid get their own rows."""
    database = str(tmp_path / "m.duckdb")
    base = np.random.default_rng(0).uniform(0.0, 0.8, 50).tolist()
    for task in ("a", "b"):
        table: ResultsTable = {
            "base": _scores(base),
            "hybrid": _scores([v + 0.1 for v in base]),
            "hydra": _scores([v + 0.1 for v in base]),
            "hydra-unseen": _scores(base),
        }
        metrics_store.record_metrics(
            database,
            metrics_frame(task, table),
            run_id="r",
            checkpoint="c",
            per_query=per_query_frame(task, table, "test"),
        )
    per_query = metrics_store.latest_per_query(database)
    report = write_report(metrics_store.latest_results(database), tmp_path, per_query=per_query)
    text = report.markdown.read_text()
    headline = text.split("## Significance")[0].splitlines()
    rows = {
        line.strip("| ").split(" | ")[0]: line.strip("| ").split(" | ")[1:] for line in headline
    }
    columns = rows["task"]
    assert dict(zip(columns, rows["mean gain over base"], strict=True)) == {
        "base": "+0.0000",
        "hybrid": "+0.1000",
        "hydra": "+0.1000",
        "hydra-unseen": "+0.0000",
    }
    assert dict(zip(columns, rows["worst gain over hybrid"], strict=True)) == {
        "base": "-0.1000",
        "hybrid": "+0.0000",
        "hydra": "+0.0000",
        "hydra-unseen": "-0.1000",
    }
    assert "## Significance of ndcg@10 differences" in text
    assert "| task | method | vs base | vs hybrid |" in text
    for task in ("a", "b"):
        assert f"| {task} | hydra | +0.1000* (p 0.0002) | +0.0000 (p 1.0000) |" in text
        assert f"| {task} | hydra-unseen | +0.0000 (p 1.0000) | -0.1000* (p 0.0002) |" in text
    assert "`*` marks a difference with p < 0.05" in text
    assert text.splitlines()[2] == f"**{report.headline}**"  # the answer comes first
    assert report.headline == (
        "Mean ndcg@10 over 2 tasks: `hydra` beats `base` by 0.1000 (significantly better on "
        "2 of 2 tasks) and matches `hybrid` (significant on none of 2 tasks). Mean ndcg@10 over "
        "2 tasks: `hydra-unseen` matches `base` (significant on none of 2 tasks) and trails "
        "`hybrid` by 0.1000 (significantly worse on 2 of 2 tasks)."
    )
    glossary = text.split("## Methods")[1].split("##")[0].strip().splitlines()
    assert [line.split("`")[1] for line in glossary] == ["base", "hybrid", "hydra", "hydra-unseen"]
    without = write_report(metrics_store.latest_results(database), tmp_path / "plain").markdown
    assert "Significance" not in without.read_text()
    assert "In-pool" not in text
    results = metrics_store.latest_results(database)
    in_pool = write_report(results, tmp_path / "in-pool", in_pool=["b"]).markdown.read_text()
    assert "In-pool: b. Their test labels taught this checkpoint's fusion gate" in in_pool


def test_report_sums_up_the_tasks_known_only_by_their_card(tmp_path: Path) -> None:
    """Tasks with a hydra-unseen row get the leave-one-out section: its mean and worst
    difference from each reference, and the fusion each card compiled to beside the
    oracle's point (from the store's fusion table, with each row's NDCG@10)."""
    database = str(tmp_path / "m.duckdb")
    figures = {
        "a": {
            "bm25": 0.30,
            "base": 0.40,
            "hybrid": 0.42,
            "hydra-unseen": 0.45,
            "hydra-unseen-generic": 0.44,
            "oracle": 0.47,
        },
        "b": {
            "bm25": 0.60,
            "base": 0.50,
            "hybrid": 0.58,
            "hydra-unseen": 0.57,
            "hydra-unseen-generic": 0.57,
            "oracle": 0.62,
        },
    }
    for task, values in figures.items():
        table: ResultsTable = {method: _scores([value]) for method, value in values.items()}
        fusion = {
            "hydra-unseen": FusionParameters(0.3, feedback=0.5),
            "oracle": FusionParameters(0.6, feedback=1.0, bm25_b=0.3),
        }
        metrics_store.record_metrics(
            database,
            metrics_frame(task, table),
            run_id="r",
            checkpoint="c",
            fusion=metrics_store.fusion_frame(task, fusion),
        )
    results = metrics_store.latest_results(database)
    fusion_rows = metrics_store.latest_fusion(database)
    text = write_report(results, tmp_path, fusion=fusion_rows).markdown.read_text()
    section = text.split("## Tasks known only by their card (leave one task out)")[1]
    section = section.split("## All metrics")[0]
    assert "| hybrid | +0.0100 | -0.0100 | b |" in section  # +0.03 on a, -0.01 on b
    assert "| better-channel | +0.0100 | -0.0300 | b |" in section
    assert "| oracle | -0.0350 | -0.0500 | b |" in section
    assert "| hydra-unseen-generic | +0.0050 | +0.0000 | b |" in section
    assert "| a | hydra-unseen | 0.30 | 0.50 | 0.75 | no | 0.4500 |" in section
    assert "| b | oracle | 0.60 | 1.00 | 0.3 | no | 0.6200 |" in section
    plain = write_report(results.filter(pl.col("method") != "hydra-unseen"), tmp_path / "p")
    assert "leave one task out" not in plain.markdown.read_text()


_HOLD_LOCK = """
import sys, time, duckdb
connection = duckdb.connect(sys.argv[1])
connection.execute("create table if not exists held (x int)")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
connection.close()
"""


def test_writers_wait_for_another_process(tmp_path: Path) -> None:
    """Parallel partition processes write one DuckDB file; a busy file is waited for."""
    database = str(tmp_path / "m.duckdb")
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, database, "2"], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    started = time.monotonic()
    metrics_store.record_metrics(database, _rows(0.2), run_id="r", checkpoint="c")
    assert time.monotonic() - started > 0.5
    assert holder.wait(30) == 0
    assert metrics_store.latest_long(database).height == 3


# ------------------------------------------------------------------------------ report, checks


def test_report_table_and_chart(tmp_path: Path) -> None:
    results = pl.DataFrame(
        {
            "task": ["a", "a", "b", "b"],
            "method": ["base", "hydra"] * 2,
            "ndcg@10": [0.5, 0.6, 0.4, 0.3],
            "mrr@10": [0.5] * 4,
            "recall@100": [0.9] * 4,
        }
    )
    table = markdown_table(results)
    assert "| a | 0.5000 | **0.6000** |" in table
    assert "| b | **0.4000** | 0.3000 |" in table
    assert "| mean gain over base | +0.0000 | +0.0000 |" in table
    assert "| worst gain over base | +0.0000 | -0.1000 |" in table
    markdown, chart = write_report(results, tmp_path, checkpoint="c1", missing=["z"]).files
    assert "checkpoint `c1`" in markdown.read_text() and "evaluated" in markdown.read_text()
    assert chart.read_bytes().startswith(b"\x89PNG")
    assert "![ndcg@10 gain over base by task](ndcg_at_10.png)" in markdown.read_text()


def test_every_method_has_one_glossary_line_and_charted_rows_have_distinct_colours() -> None:
    assert set(GLOSSARY) == set(Method)
    assert all(line and "\n" not in line for line in GLOSSARY.values())
    assert len(set(CHART_COLOURS.values())) == len(CHART_COLOURS) <= 6


def test_the_report_keeps_one_task_order_and_says_what_the_card_adds(tmp_path: Path) -> None:
    """Rows arrive in different task orders; every section lists a before b. hydra-generic
    within 0.005 of hydra is called about the same."""
    base = np.random.default_rng(2).uniform(0.2, 0.8, 20).tolist()
    frames, per_query = [], []
    for task in ("b", "a"):
        table: ResultsTable = {
            "base": _scores(base),
            "hydra": _scores([v + 0.02 for v in base]),
            "hydra-generic": _scores([v + 0.019 for v in base]),
        }
        frames.append(metrics_frame(task, table))
        per_query.append(per_query_frame(task, table, "test"))
    results = pl.concat(frames).pivot(on="metric", index=["task", "method"], values="value")
    markdown = write_report(results, tmp_path, per_query=pl.concat(per_query[::-1])).markdown
    text = markdown.read_text()
    assert "`hydra-generic`) scores about the same as `hydra` (-0.0010)" in text
    for section in text.split("\n## ")[2:]:
        rows = [line for line in section.splitlines() if line.startswith(("| a |", "| b |"))]
        if rows:
            assert rows[0].startswith("| a |") and rows[-1].startswith("| b |"), section


def _gain_fixture() -> tuple[pl.DataFrame, pl.DataFrame, np.ndarray]:
    """Two tasks of 50 queries: hydra gains 0 or 0.02 per query (mean +0.01, noisy),
    hydra-unseen loses exactly 0.005 on each (no spread); returns results, per-query rows
    and hydra's per-query differences."""
    base = np.random.default_rng(1).uniform(0.2, 0.8, 50)
    differences = np.where(np.arange(50) % 2 == 0, 0.02, 0.0)
    results = []
    per_query = []
    for task in ("a", "b"):
        table: ResultsTable = {
            "base": _scores(base.tolist()),
            "hydra": _scores((base + differences).tolist()),
            "hydra-unseen": _scores((base - 0.005).tolist()),
        }
        results.append(metrics_frame(task, table))
        per_query.append(per_query_frame(task, table, "test"))
    wide = pl.concat(results).pivot(on="metric", index=["task", "method"], values="value")
    return wide, pl.concat(per_query), differences


def test_gain_table_has_intervals_from_per_query_differences() -> None:
    results, per_query, differences = _gain_fixture()
    gains = gain_table(results, per_query).sort("task", "method")
    assert gains.columns == ["task", "method", "gain", "half_width"]
    assert "base" not in gains["method"].to_list()  # its gain is zero by definition
    hydra = gains.filter(pl.col("method") == "hydra")
    assert hydra["gain"].to_list() == pytest.approx([0.01, 0.01], abs=1e-12)
    expected = 1.96 * float(np.std(differences, ddof=1)) / np.sqrt(50)
    assert hydra["half_width"].to_list() == pytest.approx([expected] * 2, rel=1e-9)
    unseen = gains.filter(pl.col("method") == "hydra-unseen")
    assert unseen["gain"].to_list() == pytest.approx([-0.005, -0.005], abs=1e-12)
    assert unseen["half_width"].to_list() == pytest.approx([0.0, 0.0], abs=1e-9)
    assert gain_table(results)["half_width"].null_count() == 4  # no per-query rows
    assert gain_table(results.filter(pl.col("method") != "base")).is_empty()


def test_gain_chart_fits_the_axis_to_small_and_negative_gains(tmp_path: Path) -> None:
    results, per_query, differences = _gain_fixture()
    low, high = gain_limits(gain_table(results, per_query))
    half_width = 1.96 * float(np.std(differences, ddof=1)) / np.sqrt(50)
    assert low < -0.005 and high > 0.01 + half_width  # every bar and error bar is inside
    assert high - low < 0.05  # fitted to the gains, not 0-1: a 0.01 gain is visible
    assert gain_limits(gain_table(results.filter(pl.col("method") == "base"))) == (
        pytest.approx(-0.005),
        pytest.approx(0.005),
    )  # nothing but the zero line: a small range around it
    chart = ndcg_chart(results, tmp_path / "ndcg_at_10.png", per_query=per_query)
    data = chart.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 5_000
    image = inline_image_markdown(chart)
    assert image.startswith("![chart](data:image/png;base64,") and image.endswith(")")
    assert base64.b64decode(image.split(",", 1)[1][:-1]) == data


def test_headline_metadata_per_method_and_gain_over_base() -> None:
    table: ResultsTable = {
        "hydra": {"ndcg@10": 0.31, "mrr@10": 0.9},
        "base": {"ndcg@10": 0.30, "mrr@10": 0.8},
        "hybrid": {"ndcg@10": 0.29, "mrr@10": 0.7},
    }
    metadata = headline_metadata(metrics_frame("a", table))
    assert list(metadata) == [  # the store's method order, whatever the rows' order
        "ndcg@10/base",
        "ndcg@10/hybrid",
        "ndcg@10/hydra",
        "gain_over_base/hybrid",
        "gain_over_base/hydra",
    ]
    assert metadata["ndcg@10/hydra"] == 0.31
    assert metadata["gain_over_base/hydra"] == pytest.approx(0.01, abs=1e-12)
    assert metadata["gain_over_base/hybrid"] == pytest.approx(-0.01, abs=1e-12)
    without_base = headline_metadata(metrics_frame("a", {"hydra": table["hydra"]}))
    assert without_base == {"ndcg@10/hydra": 0.31}


def test_run_url_points_at_the_run_in_the_mlflow_ui(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("x", artifact_location=(tmp_path / "a").as_uri())
    run_id = client.create_run(experiment).info.run_id
    assert run_url(uri, run_id) == f"{MLFLOW_UI_ADDRESS}/#/experiments/{experiment}/runs/{run_id}"
    assert (
        run_url(uri, run_id, "http://h:1/")
        == f"http://h:1/#/experiments/{experiment}/runs/{run_id}"
    )
    assert run_url(uri, "0" * 32) is None  # a run the store does not know: no dead link
    assert run_url(uri, "") is None and run_url("", run_id) is None


def test_a_checkpoint_is_registered_once_and_the_alias_follows_the_latest(
    tmp_path: Path,
) -> None:
    """Registering a checkpoint again finds its version by tag (new description, no new
    version); another checkpoint gets the next version and takes the champion alias."""
    target = TrackingTarget(f"sqlite:///{tmp_path / 'mlflow.db'}", "x", "m", tmp_path / "a")
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights")
    records = []
    for checkpoint in ("c1", "c2"):
        with TrainingRun(target, run_name=checkpoint, params={}) as run:
            run.log_checkpoint(folder, "name: t\n")
        records.append(CheckpointRecord(str(folder), checkpoint, ["t"], run.run_id))
    client = target.client()
    first = register_checkpoint(target, records[0], "gains one")
    again = register_checkpoint(target, records[0], "gains two")
    assert (str(first.version), str(again.version)) == ("1", "1")
    (stored,) = client.search_model_versions("name = 'm'")
    assert stored.description == "gains two" and stored.tags == {"checkpoint_id": "c1"}
    assert stored.run_id == records[0].mlflow_run_id
    assert str(client.get_model_version_by_alias("m", CHAMPION_ALIAS).version) == "1"
    assert str(register_checkpoint(target, records[1], "gains three").version) == "2"
    assert str(client.get_model_version_by_alias("m", CHAMPION_ALIAS).version) == "2"
    url = model_version_url(target.tracking_uri, "m", "2")
    assert url == f"{MLFLOW_UI_ADDRESS}/#/models/m/versions/2"


def test_registration_reads_each_tasks_last_completed_quality_check() -> None:
    """Per task, the newest evaluation of the quality check decides; another check on the
    same asset does not count, and a task whose check never ran is named as such."""
    passes = {"flag": True}

    @dg.asset(key=QUALITY_CHECK.asset_key, partitions_def=TASK_PARTITIONS)
    def task_metrics() -> bool:
        return passes["flag"]

    @dg.asset_check(asset=task_metrics, name=QUALITY_CHECK.name, partitions_def=TASK_PARTITIONS)
    def quality(task_metrics: bool) -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=task_metrics)

    @dg.asset_check(asset=task_metrics, name="other", partitions_def=TASK_PARTITIONS)
    def other(task_metrics: bool) -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=True)

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(TASK_PARTITIONS.name or "task", ["a", "b", "c"])
        for task, flag in (("a", False), ("b", True), ("a", True), ("b", False)):
            passes["flag"] = flag
            dg.materialize([task_metrics, quality, other], instance=instance, partition_key=task)
        assert registry._unpassed(instance, ["a", "b", "c", "d"], ["a", "b", "c"]) == [
            "b (FAILED)",
            "c (never ran)",
            "d (not evaluated with it)",
        ]
        assert registry._unpassed(instance, ["a"], ["a"]) == []


def test_data_checks_find_problems() -> None:
    corpus = pl.DataFrame({"doc_id": ["d1", "d2"], "title": ["", ""], "text": ["x", "y"]})
    queries = pl.DataFrame({"query_id": ["q1", "q2"], "text": ["Vitamin D", "zinc"]})
    qrels = pl.DataFrame(
        {
            "split": ["test", "train"],
            "query_id": ["q1", "q2"],
            "doc_id": ["d1", "d9"],
            "score": [1, 1],
        }
    )
    assert dangling_qrels(corpus, queries, qrels)["doc_id"].to_list() == ["d9"]
    training = pl.DataFrame(
        {"query_id": ["q2", "gen-d2"], "text": ["zinc", "  vitamin d "], "origin": ["train", "g"]}
    )
    assert leaked_test_queries(training, queries, qrels)["query_id"].to_list() == ["gen-d2"]
    assert leaked_test_queries(training.head(1), queries, qrels).is_empty()


def test_mlflow_names() -> None:
    assert metric_key("scifact", "hydra", "ndcg@10") == "scifact/hydra/ndcg_at_10"
    assert flatten_params({"train": {"epochs": 2}, "tasks": ["a"]}) == {
        "train.epochs": "2",
        "tasks": '["a"]',
    }


# ------------------------------------------------------------------------------ code versions


def test_module_closure_follows_imports_to_what_they_reach_only() -> None:
    """stages reaches losses only through trainer; nothing cards imports reaches benchmarks.
    Imports inside functions count (they run), TYPE_CHECKING ones do not."""
    assert "hydra_core.training.trainer" in direct_imports("hydra_pipeline.stages")
    assert "hydra_core.training.losses" not in direct_imports("hydra_pipeline.stages")
    assert "hydra_core.training.losses" in module_closure("hydra_pipeline.stages")
    via_head_fitting = module_closure("hydra_pipeline.stages")
    assert "hydra_core.data.validation_split" in via_head_fitting
    assert "hydra_pipeline.benchmarks" not in module_closure("hydra_pipeline.stages")
    assert module_closure("hydra_core.data.cards") == {
        "hydra_core",
        "hydra_core.data",
        "hydra_core.data.cards",
        "hydra_core.data.card_schema",
        "hydra_core.data.card_yaml",
        "hydra_core.atomic",
        "hydra_core.errors",
        "hydra_core.settings",
    }
    assert "hydra_core.model.compiled_retriever" in module_closure("hydra_pipeline.artifacts")
    assert "hydra_core.evaluation.significance" not in module_closure(
        "hydra_core.evaluation.report"
    )


FAKE_MODULES = {
    "__init__.py": "",
    "steps.py": "from {pkg} import helpers\n\ndef step(x):\n    return helpers.scale(x)\n",
    "helpers.py": (
        "from typing import TYPE_CHECKING\n\n"
        "if TYPE_CHECKING:\n    from {pkg}.unrelated import VALUE\n\n"
        "def scale(x):\n    import {pkg}.numbers\n\n    return x * {pkg}.numbers.FACTOR\n"
    ),
    "numbers.py": "FACTOR = 2\n",
    "unrelated.py": "from {pkg}.steps import step\n\nVALUE = step(1)\n",
}


def test_an_edit_changes_the_version_of_the_steps_that_reach_it_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """steps -> helpers -> numbers (inside a function); unrelated only imports steps, and
    helpers names it for type checking only."""
    pkg = f"fake_{tmp_path.name}"  # a name of its own: closures are cached per name
    folder = tmp_path / pkg
    folder.mkdir()
    for name, text in FAKE_MODULES.items():
        (folder / name).write_text(text.format(pkg=pkg))
    monkeypatch.syspath_prepend(str(tmp_path))
    step = f"{pkg}.steps"
    assert module_closure(step) == {pkg, step, f"{pkg}.helpers", f"{pkg}.numbers"}
    first = code_version(step)
    assert code_version(step, config={"k": 1}) != first

    (folder / "unrelated.py").write_text(f"from {pkg}.steps import step\n\nVALUE = step(2)\n")
    assert code_version(step) == first
    (folder / "numbers.py").write_text("FACTOR = 3\n")
    assert code_version(step) != first
    assert pkg not in sys.modules  # read, never imported


def test_no_asset_module_reaches_the_validation_curves() -> None:
    """head_fitting takes its split from validation_split alone, so the asset modules that
    fit heads do not take the curves and the fusion grid (validation.py) into their versions."""
    modules = [info.name for info in pkgutil.walk_packages(defs.__path__, f"{defs.__name__}.")]
    fitting = [
        name for name in modules if "hydra_core.evaluation.reference_heads" in module_closure(name)
    ]
    assert fitting
    for name in fitting:
        assert "hydra_core.data.validation_split" in module_closure(name)
        assert "hydra_core.evaluation.validation" not in module_closure(name)


TEACHER_STAGES = tuple(
    name for name in TASK_DATA_ASSETS if name not in {"supervised_metrics", "oracle_metrics"}
)
"""A task's data, embeddings, teacher rankings and pairs: no head is fitted or trained there."""


def test_an_edit_changes_the_code_version_of_the_assets_it_feeds_only(tmp_path: Path) -> None:
    """validation.py (only `hydra validate` runs it) feeds no asset; validation_split feeds
    the assets that fit or refine heads (through reference_heads), and none of the data,
    embedding or teacher assets, the hypernets trained on teachers alone, the report or the
    registered model."""
    config_file = _small_config(tmp_path)
    before = _asset_versions(config_file)
    curves = _asset_versions(config_file, {"hydra_core/evaluation/validation.py": EDIT})
    assert curves == before
    after = _asset_versions(config_file, {"hydra_core/data/validation_split.py": EDIT})
    assert {key for key in before if before[key] == after[key]} == {
        "card_file",
        "dataset_files",
        *TEACHER_STAGES,
        "hypernet_checkpoint",
        "unseen_hypernet",
        "results_report",
        "registered_model",
    }


def test_editing_the_loss_does_not_date_the_bm25_rankings(tmp_path: Path) -> None:
    """Each asset's version covers what its body runs: a loss edit retrains the hypernets
    and re-scores, and leaves the teachers' rankings, pairs and embeddings as they are."""
    config_file = _small_config(tmp_path)
    before = _asset_versions(config_file)
    after = _asset_versions(config_file, {"hydra_core/training/losses.py": EDIT})
    dated = {key for key in before if before[key] != after[key]}
    assert {"hypernet_checkpoint", "unseen_hypernet", "labelled_hypernet"} <= dated
    assert not dated & set(TEACHER_STAGES)


def test_perturbations_date_the_robustness_asset_only(tmp_path: Path) -> None:
    """Turning robustness on, or editing the perturbations, reruns task_robustness and
    nothing else: the metrics store knows the module only by its type."""
    before = _asset_versions(_small_config(tmp_path))
    robust = _asset_versions(_small_config(tmp_path, "robustness: {perturbations: [swap]}\n"))
    assert {key for key in before if before[key] != robust[key]} == {"task_robustness"}
    after = _asset_versions(
        _small_config(tmp_path), {"hydra_core/evaluation/perturbations.py": EDIT}
    )
    assert {key for key in before if before[key] != after[key]} == {"task_robustness"}


EDIT = "\n# edited\n"


def _small_config(tmp_path: Path, extra: str = "") -> Path:
    config_file = tmp_path / "hydra.yaml"
    config_file.write_text("tasks: [a, b]\nworkspace: ws\nexecutor: {kind: in_process}\n" + extra)
    return config_file


ASSET_VERSIONS = """
import json, sys
from hydra_pipeline.definitions import build_definitions
from hydra_pipeline.project_config import load_project_config
graph = build_definitions(load_project_config(sys.argv[1])).resolve_asset_graph()
versions = {k.to_user_string(): graph.get(k).code_version for k in graph.get_all_asset_keys()}
print(json.dumps(versions))
"""


def _asset_versions(
    config_file: Path, appended: Mapping[str, str] | None = None
) -> dict[str, str | None]:
    """Every asset's code version as a new process gives it (the next ``hydra run``, a
    reloaded code location: versions are taken when the definitions load), from a copy of
    the project's source with ``appended`` texts added to the files they name (a file
    that does not exist is created)."""
    source = Path(tempfile.mkdtemp(dir=config_file.parent))
    for package in ("hydra_core", "hydra_pipeline"):
        ignore = shutil.ignore_patterns("__pycache__")
        shutil.copytree(PROJECT_ROOT / package, source / package, ignore=ignore)
    shutil.copy(PROJECT_ROOT / "pyproject.toml", source)  # where Dagster finds the defs folder
    for name, text in (appended or {}).items():
        with open(source / name, "a") as file:
            file.write(text)
    result = subprocess.run(
        [sys.executable, "-c", ASSET_VERSIONS, str(config_file)],
        cwd=source,
        env={**os.environ, "PYTHONPATH": str(source)},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_new_module_in_the_defs_folder_adds_its_assets(tmp_path: Path) -> None:
    """The definitions are the defs folder's: a new stage needs no edit anywhere else."""
    stage = "import dagster as dg\n\n@dg.asset(code_version='1')\ndef extra_stage() -> None: ...\n"
    config_file = _small_config(tmp_path)
    before = _asset_versions(config_file)
    after = _asset_versions(config_file, {"hydra_pipeline/defs/assets/extra_stage.py": stage})
    assert "extra_stage" not in before
    assert after == {**before, "extra_stage": "1"}


# ------------------------------------------------------------------------------ card sensor


def test_card_sensor_follows_the_configured_tasks(
    tmp_path: Path,
    clean_env: pytest.MonkeyPatch,
    scifact_slice: RetrievalTask,
    nfcorpus_slice: RetrievalTask,
) -> None:
    """A card in the folder whose task is not in the list starts nothing, first tick included."""
    tasks = {"scifact": scifact_slice.head(20, 5), "nfcorpus": nfcorpus_slice.head(20, 5)}
    project = make_project(tmp_path, tasks)
    for key, value in project.env(tmp_path / "cache").items():
        clean_env.setenv(key, value)
    clean_env.setenv("HYDRA_TASKS", "nfcorpus")  # scifact's card stays in the folder
    defs = build_definitions(load_project_config())
    sensor = defs.resolve_sensor_def("task_card_sensor")
    assert f"{project.cards_dir}" in (sensor.description or "")
    assert "nfcorpus" in (sensor.description or "") and "scifact" not in (sensor.description or "")
    with dg.DagsterInstance.ephemeral() as instance:
        result = sensor(dg.build_sensor_context(instance=instance, definitions=defs))
        assert isinstance(result, dg.SensorResult)
        (added,) = result.dynamic_partitions_requests or []
        assert isinstance(added, dg.AddDynamicPartitionsRequest)
        assert list(added.partition_keys) == ["nfcorpus"]
        assert [request.partition_key for request in result.run_requests or []] == ["nfcorpus"]
        assert {event.partition for event in result.asset_events} == {"nfcorpus"}

        instance.add_dynamic_partitions("task", list(added.partition_keys))  # as the daemon does
        for event in result.asset_events:
            instance.report_runless_asset_event(event)
        again = sensor(dg.build_sensor_context(instance=instance, definitions=defs))
        assert isinstance(again, dg.SkipReason)


# ------------------------------------------------------------------------------ step failures


def _failed_step_error(asset: dg.AssetsDefinition) -> SerializableErrorInfo:
    result = dg.materialize([asset], raise_on_error=False)
    (event,) = [event for event in result.all_events if event.is_step_failure]
    error = event.step_failure_data.error
    assert error is not None
    return error


def test_cause_chain_drops_dagsters_wrapper_and_quoted_causes() -> None:
    @dg.asset
    def migrated() -> None:
        connection = sqlite3.connect(":memory:")
        connection.execute("create table runs (id text)")
        try:
            connection.execute("create table runs (id text)")
        except sqlite3.OperationalError as exc:
            raise RuntimeError(f"(sqlite3.OperationalError) {exc}") from exc

    @dg.asset
    def trained() -> None:
        try:
            {"scifact": 1}["tendoc"]
        except KeyError as exc:
            raise ValueError("task 'tendoc' has no preference pairs to train on") from exc

    assert cause_chain(_failed_step_error(migrated)) == [
        "RuntimeError: (sqlite3.OperationalError) table runs already exists"
    ]
    assert cause_chain(_failed_step_error(trained)) == [
        "ValueError: task 'tendoc' has no preference pairs to train on",
        "KeyError: 'tendoc'",
    ]


# ------------------------------------------------------------------------------ learning curve


def test_learning_curve_asset_stores_the_curve_and_skips_a_card_without_labels(
    tmp_path: Path, scifact_slice: RetrievalTask, encoder: FrozenEncoder
) -> None:
    """The asset, invoked through Dagster on stored frames of a slice with 5 judged train
    queries (so only the zero-shot and ``all`` points): DuckDB rows, its MLflow run's
    metrics, the curve as rounded metadata; a card without labels gets no rows."""
    from mlflow import MlflowClient

    from hydra_core.evaluation.learning_curve import CURVE_METHODS
    from hydra_core.model.hypernet import initial_hypernet
    from hydra_core.model.retriever import ConditionedRetriever
    from hydra_pipeline.defs.assets.learning_curve import learning_curve
    from hydra_pipeline.defs.resources import (
        EncoderResource,
        MetricsDbResource,
        TrackingResource,
    )

    task = scifact_slice.head(80, 5)
    card = find_card("scifact")
    opened = OpenedTask(task, encoder)
    hypernet = initial_hypernet(encoder.model_name, opened.doc_vectors)
    compiled = ConditionedRetriever(hypernet, encoder).compile_task(card, opened)
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri)
    run = client.create_run(client.create_experiment("curve"))
    database = str(tmp_path / "metrics.duckdb")
    record = CheckpointRecord(
        str(tmp_path), "ckpt", ["scifact"], run.info.run_id, tracking_uri=tracking_uri
    )
    cache_dir = encoder.cache.path.parent
    resources = {
        "encoder": EncoderResource(model=encoder.model_name, cache_dir=str(cache_dir)),
        "metrics_db": MetricsDbResource(database=database),
        "tracking": TrackingResource(
            tracking_uri=tracking_uri,
            experiment="curve",
            registered_model="hydra",
            artifact_root=str(tmp_path / "artifacts"),
        ),
    }
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(TASK_PARTITIONS.name or "task", ["scifact"])

    def materialize(with_card: TaskCard) -> dg.Output[pl.DataFrame]:
        context = dg.build_asset_context(
            partition_key="scifact", resources=resources, instance=instance
        )
        embeddings = Embeddings(opened.doc_ids, opened.doc_vectors)
        output = learning_curve(
            context,
            task_card=with_card,
            corpus=task.corpus,
            queries=task.queries,
            qrels=qrels_long(task),
            doc_embeddings=embeddings,
            compiled_retriever=compiled,
            hypernet_checkpoint=record,
        )
        assert isinstance(output, dg.Output)
        return output

    output = materialize(card)
    rows = output.value
    assert set(rows["method"]) == set(CURVE_METHODS)
    assert set(rows["n"]) == {"0", "all"} and rows["value"].is_finite().all()
    stored = duckdb.connect(database).sql("select * from learning_curve").pl()
    assert stored.height == rows.height and set(stored["checkpoint"]) == {"ckpt"}
    curve = output.metadata["curve"]
    assert isinstance(curve, dg.TableMetadataValue)
    means = {(r.data["method"], r.data["n"]): r.data["mean"] for r in curve.records}
    assert set(means) == {("hydra", "0")} | {(m, "all") for m in CURVE_METHODS[1:]}
    assert all(isinstance(mean, float) and round(mean, 4) == mean for mean in means.values())
    logged = client.get_run(run.info.run_id).data.metrics
    ndcg = rows.filter(
        (pl.col("method") == "adapt-from-compiled") & (pl.col("metric") == "ndcg@10")
    )["value"].item()
    assert logged["learning_curve/scifact/adapt-from-compiled/n_all"] == pytest.approx(ndcg)

    unlabelled = materialize(card.model_copy(update={"labels": None}))
    assert unlabelled.value.height == 0
    assert duckdb.connect(database).sql("select * from learning_curve").pl().height == rows.height
