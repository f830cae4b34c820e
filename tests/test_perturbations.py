"""Perturbed test queries: seeded kinds, rate parsing, and ``hydra eval --perturb`` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pipeline_support import TABLE_METHODS
from test_cli import _add_card, _console, cards_dir  # noqa: F401  (cards_dir: fixture)

from hydra_core.data.cards import find_card
from hydra_core.data.retrieval_task import RetrievalTask
from hydra_core.encoding.encoder import FrozenEncoder
from hydra_core.errors import HydraInputError
from hydra_core.evaluation.perturbations import (
    KINDS,
    Perturbation,
    Robustness,
    drop,
    parse_perturbation,
    perturbed_task,
)
from hydra_core.evaluation.report import results_text
from hydra_core.training.trainer import TrainConfig
from hydra_core.workflows import train_on_cards

TEXT = "Vitamin D supplements reduce fractures in elderly patients with osteoporosis"


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_kind_is_seeded_and_changes_text_at_a_high_rate(kind: str) -> None:
    perturbation = Perturbation(kind, 1.0, seed=7)
    first = perturbation.apply("q1", TEXT)
    assert first == perturbation.apply("q1", TEXT) != TEXT
    halfway = {Perturbation(kind, 0.5, seed).apply("q1", TEXT) for seed in range(10)}
    assert len(halfway) > 1  # the seed matters where the rate leaves a choice


def test_drop_never_empties_a_query() -> None:
    for seed in range(50):
        rng = np.random.default_rng(seed)
        assert drop(TEXT, 1.0, rng) in TEXT.split()
        assert drop("one", 1.0, rng) == "one"


@pytest.mark.parametrize("kind", list(KINDS))
def test_perturbed_task_keeps_ids_qrels_and_other_splits(
    kind: str, scifact_slice: RetrievalTask
) -> None:
    perturbation = Perturbation(kind, 0.5, seed=3)
    task = perturbed_task(scifact_slice, perturbation, "test")
    assert task.queries["query_id"].to_list() == scifact_slice.queries["query_id"].to_list()
    assert task.qrels is scifact_slice.qrels and task.corpus is scifact_slice.corpus
    clean = dict(scifact_slice.queries.iter_rows())
    noisy = dict(task.queries.iter_rows())
    test_ids = set(scifact_slice.split_queries("test")["query_id"])
    assert all(noisy[i] == clean[i] for i in clean if i not in test_ids)
    assert sum(noisy[i] != clean[i] for i in test_ids) > len(test_ids) / 2
    # A query's text depends on its own id only, not on the other queries present.
    alone = perturbed_task(scifact_slice.head(300, 1), perturbation, "test")
    assert all(noisy[i] == text for i, text in alone.split_queries("test").iter_rows())


@pytest.mark.parametrize("spec", ["typo", "typos:0", "typos:1.5", "typos:x", "drop:nan", "swap:"])
def test_bad_specs_are_one_line_naming_the_value_and_the_kinds(spec: str) -> None:
    with pytest.raises(HydraInputError) as error:
        parse_perturbation(spec)
    message = str(error.value)
    assert "\n" not in message and repr(spec) in message
    assert all(kind in message for kind in KINDS) and "(0, 1]" in message


def test_rates_default_per_kind_and_parse() -> None:
    assert parse_perturbation("typos", seed=4) == Perturbation("typos", KINDS["typos"][1], 4)
    assert parse_perturbation("drop:1") == Perturbation("drop", 1.0, 0)


def test_text_report_lists_clean_perturbed_and_drop() -> None:
    clean = {"bm25": {"ndcg@10": 0.5}, "hydra": {"ndcg@10": 0.6}}
    perturbed = {"bm25": {"ndcg@10": 0.25}, "hydra": {"ndcg@10": 0.6}}
    robustness = Robustness(Perturbation("typos", 0.3, 1), clean, perturbed)
    text = results_text("scifact", clean, robustness=robustness)
    assert "(typos:0.3, seed 1)" in text
    assert text.splitlines()[-2].split() == ["bm25", "0.5000", "0.2500", "-0.2500"]


def test_eval_perturb_json_from_the_console_script(
    cards_dir: Path,  # noqa: F811
    tmp_path: Path,
    encoder: FrozenEncoder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HYDRA_CARDS_DIR", str(cards_dir))
    monkeypatch.setenv("HYDRA_CACHE_DIR", str(cards_dir / "cache"))
    monkeypatch.setenv("HYDRA_WORKSPACE", str(tmp_path / "workspace"))
    checkpoint = tmp_path / "ck"
    tiny = TrainConfig(epochs=1, steps_per_epoch=4, pairs_per_task=32)
    train_on_cards([find_card("scifact", cards_dir)], checkpoint, encoder, tiny)
    # Without labels, so no supervised head is fitted twice: the table is TABLE_METHODS.
    _add_card(tmp_path, "plain", cards_dir / "scifact.yaml", cards_dir / "data" / "scifact")

    card = str(tmp_path / "plain.yaml")
    args = ["--checkpoint", str(checkpoint), "--card", card, "--perturb", "typos:0.3"]
    evaluated = _console("eval", *args, "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(evaluated.stdout)
    entry = result["perturbation"]
    assert (entry["kind"], entry["rate"], entry["seed"]) == ("typos", 0.3, 0)
    assert set(entry["methods"]) == set(result["methods"]) == set(TABLE_METHODS)
    for method, row in entry["methods"].items():
        assert row["clean"] == result["methods"][method]["ndcg@10"]
        assert row["drop"] == pytest.approx(row["perturbed"] - row["clean"], abs=1e-12)
    assert any(row["drop"] != 0.0 for row in entry["methods"].values())

    refused = _console("eval", *args[:4], "--perturb", "typos:2")
    assert refused.returncode == 2
    assert refused.stderr.splitlines()[-1].startswith("error: --perturb 'typos:2': bad rate '2'")
