"""Adapting a compiled retriever to a few judged queries, its learning curve, and the
``hydra adapt`` / ``hydra eval --learning-curve`` commands, on real slices."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import polars as pl
import pytest
from system_tools import HYDRA

from hydra_core.data.cards import TaskCard, find_card, write_card
from hydra_core.data.opened_task import OpenedTask
from hydra_core.data.retrieval_task import RetrievalTask
from hydra_core.encoding.encoder import FrozenEncoder
from hydra_core.errors import HydraInputError
from hydra_core.evaluation.adaptation import (
    FIXED_STEPS,
    MIN_VALIDATION_QUERIES,
    adapt,
    load_labels,
    sample_labels,
)
from hydra_core.evaluation.learning_curve import (
    ADAPT_FROM_BASE,
    ADAPT_FROM_COMPILED,
    FUSION_ONLY,
    curve_significance,
    curve_summary,
    learning_curve,
)
from hydra_core.evaluation.method import HEADLINE_METRIC
from hydra_core.evaluation.methods import hybrid_retriever, retriever_table
from hydra_core.model.compiled_retriever import CompiledRetriever
from hydra_core.model.hypernet import initial_hypernet
from hydra_core.model.retriever import ConditionedRetriever
from hydra_core.model.task_profile import card_task_profile
from hydra_pipeline.artifacts import save_beir_folder
from hydra_pipeline.metrics_store import learning_curve_frame, query, record_learning_curve


@pytest.fixture(scope="module")
def card() -> TaskCard:
    return find_card("scifact")


@pytest.fixture(scope="module")
def opened(scifact_slice: RetrievalTask, encoder: FrozenEncoder) -> OpenedTask:
    return OpenedTask(scifact_slice, encoder)


@pytest.fixture(scope="module")
def compiled(card: TaskCard, opened: OpenedTask, encoder: FrozenEncoder) -> CompiledRetriever:
    """The card compiled by an untrained hypernet (every head ranks like the base)."""
    hypernet = initial_hypernet(encoder.model_name, opened.doc_vectors)
    profile = card_task_profile(card, opened, encoder)
    return ConditionedRetriever(hypernet, encoder).compile(card, profile)


def _ndcg(
    opened: OpenedTask, retriever: CompiledRetriever, split: str, encoder: FrozenEncoder
) -> float:
    table = retriever_table(opened, {"r": retriever}, split, encoder=encoder)
    return table["r"][HEADLINE_METRIC]


def test_enough_labels_choose_on_held_out_queries_and_the_fit_is_recorded(
    card: TaskCard,
    opened: OpenedTask,
    compiled: CompiledRetriever,
    encoder: FrozenEncoder,
    tmp_path: Path,
) -> None:
    labels = load_labels(opened.task, "train")
    judged = labels.filter(pl.col("score") > 0)["query_id"].n_unique()
    assert judged >= MIN_VALIDATION_QUERIES
    adapted = adapt(compiled, card, opened, encoder, labels)
    assert adapted.labelled_queries == judged
    # Fitted on these labels: it must rank their queries at least as well as where it began.
    assert _ndcg(opened, adapted, "train", encoder) >= _ndcg(opened, compiled, "train", encoder)
    adapted.save(tmp_path / "adapted.safetensors")
    loaded = CompiledRetriever.load(tmp_path / "adapted.safetensors")
    assert loaded.labelled_queries == judged and loaded.fusion == adapted.fusion


def test_few_labels_take_the_fixed_recipe(
    card: TaskCard, opened: OpenedTask, compiled: CompiledRetriever, encoder: FrozenEncoder
) -> None:
    labels = sample_labels(load_labels(opened.task, "train"), 5, seed=1)
    assert labels["query_id"].n_unique() == 5
    adapted = adapt(compiled, card, opened, encoder, labels)
    assert adapted.labelled_queries == 5 and adapted.fusion == compiled.fusion
    assert FIXED_STEPS > 0 and adapted.head is not None and compiled.head is not None
    assert not bool((adapted.head.weight == compiled.head.weight).all())
    fusion_only = adapt(compiled, card, opened, encoder, labels, fit_head_too=False)
    assert fusion_only.head is compiled.head and fusion_only.fusion == compiled.fusion
    from_base = adapt(hybrid_retriever(), card, opened, encoder, labels)
    assert from_base.head is not None and from_base.fusion == hybrid_retriever().fusion


def test_bad_labels_are_named(opened: OpenedTask, tmp_path: Path) -> None:
    with pytest.raises(HydraInputError, match="test labels are kept for evaluation"):
        load_labels(opened.task, "test")
    with pytest.raises(HydraInputError, match=r"no such file.*splits are train, test"):
        load_labels(opened.task, "dev")
    with pytest.raises(HydraInputError, match="--queries 500: the labels have 40 queries"):
        sample_labels(load_labels(opened.task, "train"), 500, seed=0)
    bad = tmp_path / "labels.tsv"
    bad.write_text("query-id\tcorpus-id\tscore\nno-such-query\tx\t1\n")
    with pytest.raises(HydraInputError, match=r"labels\.tsv:2 .*unknown query id"):
        load_labels(opened.task, str(bad))


def test_learning_curve_points_summary_and_store(
    tmp_path: Path, card: TaskCard, opened: OpenedTask, compiled: CompiledRetriever
) -> None:
    encoder = opened.encoder
    assert isinstance(encoder, FrozenEncoder)
    points = learning_curve(card, opened, encoder, compiled, sizes=(10, 100, None), draws=2)
    summary = curve_summary(points)
    assert set(summary) == {"hydra", ADAPT_FROM_COMPILED, ADAPT_FROM_BASE, FUSION_ONLY}
    assert list(summary["hydra"]) == ["0"]
    zero_shot = summary["hydra"]["0"]["mean"]
    assert zero_shot == _ndcg(opened, compiled, "test", encoder)
    for method in (ADAPT_FROM_COMPILED, ADAPT_FROM_BASE, FUSION_ONLY):
        assert list(summary[method]) == ["10", "all"]  # 100 >= the 40 judged queries: left out
    # With ten labels the fusion-only fit is the fixed recipe: nothing moves.
    assert summary[FUSION_ONLY]["10"] == {"mean": zero_shot, "std": 0.0}
    tests = curve_significance(points)
    assert list(tests) == ["10"] and set(tests["10"]) == {ADAPT_FROM_BASE, "hydra"}
    against_hydra = tests["10"]["hydra"]
    mean_gain = summary[ADAPT_FROM_COMPILED]["10"]["mean"] - zero_shot
    assert against_hydra.delta == pytest.approx(mean_gain)
    assert against_hydra.queries == opened.task.split_queries("test").height
    draws = [p.draw for p in points if p.method == ADAPT_FROM_COMPILED]
    assert draws == [0, 1, 0]

    database = str(tmp_path / "metrics.duckdb")
    rows = learning_curve_frame(points)
    record_learning_curve(database, rows, run_id="test", checkpoint="untrained")
    stored = query(database, "SELECT task, method, n, draw, metric, value FROM learning_curve")
    assert stored.height == rows.height == len(points) * 3
    hydra_row = stored.filter((pl.col("method") == "hydra") & (pl.col("metric") == "ndcg@10"))
    assert hydra_row["n"].to_list() == ["0"] and hydra_row["value"][0] == zero_shot


def _hydra(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HYDRA), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def test_adapt_search_and_eval_learning_curve_commands(
    scifact_slice: RetrievalTask, encoder: FrozenEncoder, tmp_path: Path
) -> None:
    """The real commands: adapt writes a retriever file search takes; the curve's JSON."""
    small = scifact_slice.head(200, 12)
    save_beir_folder(small, tmp_path / "data" / "small")
    update = {"name": "small", "source": "./data/small", "labels": None}  # no supervised fit
    card = find_card("scifact").model_copy(update=update)
    write_card(card, tmp_path / "small.yaml")
    checkpoint = tmp_path / "untrained"
    initial_hypernet(encoder.model_name, encoder.encode(small.doc_texts(), "document")).save(
        checkpoint
    )
    env = {
        "HYDRA_CARDS_DIR": str(tmp_path),
        "HYDRA_WORKSPACE": str(tmp_path / "workspace"),
        "HYDRA_CACHE_DIR": str(encoder.cache.path.parent),
        "HYDRA_METRICS_DB": str(tmp_path / "metrics.duckdb"),
    }
    out = tmp_path / "adapted.safetensors"
    adapt_args = ["adapt", "small", "--checkpoint", str(checkpoint), "--out", str(out)]
    adapted = _hydra(*adapt_args, "--labels", "train", "--queries", "6", env=env)
    assert adapted.returncode == 0, adapted.stderr
    assert "adapted on 6 judged queries" in adapted.stdout
    assert CompiledRetriever.load(out).labelled_queries == 6

    refused = _hydra(*adapt_args, "--labels", "test", "--force", env=env)
    assert refused.returncode == 2 and "test labels are kept for evaluation" in refused.stderr
    assert CompiledRetriever.load(out).labelled_queries == 6  # the file written before stays

    found = _hydra(
        "search", "--card", "small", "--retriever", str(out), "-k", "3", "statins", env=env
    )
    assert found.returncode == 0, found.stderr
    assert [line.split()[0] for line in found.stdout.splitlines()] == ["1", "2", "3"]

    curve = _hydra(
        "eval",
        "--checkpoint",
        str(checkpoint),
        "--card",
        "small",
        "--learning-curve",
        "--json",
        env=env,
    )
    assert curve.returncode == 0, curve.stderr
    result = json.loads(curve.stdout)
    assert "hydra" in result["methods"]
    learning = result["learning_curve"]
    assert learning["hydra"]["0"]["mean"] == pytest.approx(result["methods"]["hydra"]["ndcg@10"])
    assert list(learning[ADAPT_FROM_COMPILED]) == ["5", "10", "all"]
    assert set(result["learning_curve_significance"]["10"]) == {ADAPT_FROM_BASE, "hydra"}
    assert set(learning[ADAPT_FROM_BASE]["10"]) == {"mean", "std"}
    stored = query(env["HYDRA_METRICS_DB"], "SELECT count(*) AS n FROM learning_curve")
    assert stored["n"][0] == (1 + 3 * (5 + 5 + 1)) * 3
