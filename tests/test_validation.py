"""Validation splits on real slices: held-out queries never train, and `hydra validate` runs."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import polars as pl
import pytest
from system_tools import HYDRA
from typer.testing import CliRunner

from hydra_core.data.cards import find_card, write_card
from hydra_core.data.retrieval_task import RetrievalTask
from hydra_core.data.training_queries import training_queries
from hydra_core.data.validation_split import VALIDATION, is_holdout, split_for_validation
from hydra_pipeline.artifacts import save_beir_folder
from hydra_pipeline.cli import app


def test_a_task_without_dev_holds_out_a_fifth_of_its_train_queries(
    scifact_slice: RetrievalTask,
) -> None:
    training, validation = split_for_validation(scifact_slice)
    assert validation is not None and validation.splits == [VALIDATION]
    held = set(validation.split_qrels(VALIDATION)["query_id"])
    kept = set(training.split_qrels("train")["query_id"])
    everything = set(scifact_slice.split_qrels("train")["query_id"])
    assert held and kept and held.isdisjoint(kept) and held | kept == everything
    assert all(is_holdout(query_id) for query_id in held)
    assert training.split_qrels("test").equals(scifact_slice.split_qrels("test"))
    trained_on = set(training_queries(training)["query_id"])
    assert trained_on and trained_on.isdisjoint(held)


def test_a_task_with_dev_validates_on_dev_and_trains_on_everything_else(
    nfcorpus_slice: RetrievalTask,
) -> None:
    training, validation = split_for_validation(nfcorpus_slice)
    assert training is nfcorpus_slice
    assert validation is not None
    assert validation.split_qrels(VALIDATION).equals(nfcorpus_slice.split_qrels("dev"))
    dev = nfcorpus_slice.split_queries("dev")["query_id"].implode()
    assert training_queries(training).filter(pl.col("query_id").is_in(dev)).is_empty()

    # When dev itself is what trains (the supervised head of a `labels: dev` card), a fifth
    # of dev validates and the rest trains.
    dev_training, dev_validation = split_for_validation(nfcorpus_slice, labels="dev")
    assert dev_validation is not None
    held = set(dev_validation.split_qrels(VALIDATION)["query_id"])
    kept = set(dev_training.split_qrels("dev")["query_id"])
    assert held and held.isdisjoint(kept) and all(is_holdout(query_id) for query_id in held)


def test_a_task_with_only_test_qrels_has_no_validation(scifact_slice: RetrievalTask) -> None:
    test_only = RetrievalTask(
        "t", "", scifact_slice.corpus, scifact_slice.queries, {"test": scifact_slice.qrels["test"]}
    )
    assert split_for_validation(test_only) == (test_only, None)


@pytest.fixture()
def runner(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    scifact_slice: RetrievalTask,
    nfcorpus_slice: RetrievalTask,
) -> CliRunner:
    for name, task in (("scifact", scifact_slice), ("nfcorpus", nfcorpus_slice)):
        save_beir_folder(task, tmp_path / "data" / name)
        card = find_card(name).model_copy(update={"source": f"./data/{name}"})
        write_card(card, tmp_path / f"{name}.yaml")
    monkeypatch.setenv("HYDRA_CARDS_DIR", str(tmp_path))
    monkeypatch.setenv("HYDRA_WORKSPACE", str(tmp_path / "workspace"))
    return CliRunner()


def test_validate_prints_a_row_per_task_and_epoch(runner: CliRunner) -> None:
    tasks = ["--tasks", "scifact", "--tasks", "nfcorpus"]
    seen = runner.invoke(app, ["validate", *tasks, "--epochs", "2", "--json"])
    assert seen.exit_code == 0, seen.output
    rows = [json.loads(line) for line in seen.stdout.splitlines()]
    assert [(r["hypernet"], r["steps"], r["task"]) for r in rows] == [
        ("all", 250, "scifact"),
        ("all", 250, "nfcorpus"),
        ("all", 500, "scifact"),
        ("all", 500, "nfcorpus"),
    ]
    for row in rows:
        assert 0 < row["base"] <= 1
        assert set(row["gains"]) == {
            "hybrid",
            "hydra",
            "hydra-dense",
            "hydra-generic",
            "hydra-shuffled",
        }
        assert all(-1 < gain < 1 for gain in row["gains"].values())
    assert rows[0]["gains"] != rows[2]["gains"], "a second epoch changes the hypernet"

    loo = runner.invoke(app, ["validate", *tasks, "--loo", "--epochs", "1", "--json"])
    assert loo.exit_code == 0, loo.output
    unseen = [json.loads(line) for line in loo.stdout.splitlines()]
    assert [(r["hypernet"], r["task"]) for r in unseen] == [
        ("without-scifact", "scifact"),
        ("without-nfcorpus", "nfcorpus"),
    ]


def test_validate_refuses_tasks_with_nothing_to_validate_on(
    runner: CliRunner, tmp_path: Path, scifact_slice: RetrievalTask
) -> None:
    test_only = RetrievalTask(
        "t", "", scifact_slice.corpus, scifact_slice.queries, {"test": scifact_slice.qrels["test"]}
    )
    save_beir_folder(test_only, tmp_path / "data" / "testonly")
    card = find_card("scifact", tmp_path).model_copy(
        update={"name": "testonly", "source": "./data/testonly", "labels": None}
    )
    write_card(card, tmp_path / "testonly.yaml")
    refused = runner.invoke(app, ["validate", "--tasks", "testonly"])
    assert refused.exit_code != 0
    assert "none of testonly has dev or train qrels" in str(refused.exception)


def test_validate_refuses_labels_from_the_validation_split(
    runner: CliRunner, tmp_path: Path
) -> None:
    card = find_card("nfcorpus", tmp_path).model_copy(update={"labels": "dev"})
    write_card(card, tmp_path / "nfcorpus.yaml")
    refused = runner.invoke(app, ["validate", "--tasks", "nfcorpus", "--labels", "--epochs", "1"])
    assert refused.exit_code != 0
    assert "nfcorpus.yaml" in str(refused.exception)
    assert "'labels'" in str(refused.exception)


def test_fusion_grid_scores_every_point_against_the_prior_without_training(
    runner: CliRunner, tmp_path: Path
) -> None:
    command = [str(HYDRA), "validate", "--tasks", "scifact,nfcorpus", "--fusion-grid"]
    shown = subprocess.run(
        [*command, "--json"], capture_output=True, text=True, env=os.environ, check=False
    )
    assert shown.returncode == 0, shown.stderr
    rows = [json.loads(line) for line in shown.stdout.splitlines()]
    points = {(r["lexical_weight"], r["feedback"], r["bm25_b"]) for r in rows}
    assert len(points) == 30 and len(rows) == 60, "5 weights x 3 feedbacks x 2 b, two tasks"
    for task in ("scifact", "nfcorpus"):
        mine = {
            (r["lexical_weight"], r["feedback"], r["bm25_b"]): r for r in rows if r["task"] == task
        }
        prior = mine[(0.4, 0.5, 0.75)]
        assert prior["gain"] == 0.0 and 0 < prior["ndcg"] <= 1
        for row in mine.values():
            assert abs(row["gain"] - (row["ndcg"] - prior["ndcg"])) < 1e-9
        assert len({round(r["ndcg"], 6) for r in mine.values()}) > 1, "the knobs change rankings"
    assert not (tmp_path / "workspace" / "checkpoints").exists(), "nothing trains"

    text = subprocess.run(command, capture_output=True, text=True, env=os.environ, check=False)
    assert text.returncode == 0, text.stderr
    assert "(prior)" in text.stdout
    best = [line for line in text.stdout.splitlines() if "over the prior" in line]
    assert [line.split(":")[0] for line in best] == ["scifact", "nfcorpus"]
