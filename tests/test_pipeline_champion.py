"""The champion follows the weekly retrain, and is what serving and search use.

A tiny project (three real 60-document, 5-query slices) is run cold by ``hydra run``'s
runner; then the ``weekly_retrain`` schedule is evaluated for real and its run executed on
the project's instance, and the ``hydra_automation`` sensor's automation conditions are
evaluated tick after tick (Dagster's own evaluator, the daemon's cursor carried between
ticks), every run they request executed, until a tick requests nothing: what the daemon
would do, one run at a time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from pipeline_support import QUICK_TRAINING, Project, make_project
from system_tools import HYDRA

from hydra_core.data.tasks import load_task
from hydra_core.model.compiled_retriever import CompiledRetriever
from hydra_core.model.hypernet import Hypernet
from hydra_pipeline import metrics_store
from hydra_pipeline.artifacts import load_value
from hydra_pipeline.definitions import build_definitions
from hydra_pipeline.defs.asset_checks import QUALITY_CHECK
from hydra_pipeline.defs.jobs import REGISTERED_ASSET, REPORT_JOB, TASK_JOB
from hydra_pipeline.project_config import ProjectConfig, load_project_config
from hydra_pipeline.runner import champion_checkpoint, current_checkpoint, run_pipeline
from hydra_pipeline.serve import build_registry

TASKS = ("cranfield", "cacm", "vaswani")
TIMEOUT = 600


@dataclass
class Retrains:
    project: Project
    instance: dg.DagsterInstance
    cursor: object = None

    def config(self) -> ProjectConfig:
        return load_project_config()

    def edit(self, **changes: object) -> None:
        """Change ``hydra.yaml`` (keys of it; ``train`` the training settings)."""
        settings = yaml.safe_load(self.project.config_file.read_text())
        for key, value in changes.items():
            if key == "train":
                settings["training"]["train"].update(value)
            else:
                settings[key] = value
        self.project.config_file.write_text(yaml.safe_dump(settings, sort_keys=False))

    def tick(self, defs: dg.Definitions) -> dict[str | None, list[dg.AssetKey]]:
        """One evaluation of the automation sensor: what it requests, by partition."""
        sensor = defs.resolve_sensor_def("hydra_automation")
        assert isinstance(sensor, dg.AutomationConditionSensorDefinition)
        result = dg.evaluate_automation_conditions(
            defs,
            self.instance,
            asset_selection=sensor.asset_selection,
            cursor=self.cursor,  # type: ignore[arg-type]
        )
        self.cursor = result.cursor
        requested: dict[str | None, list[dg.AssetKey]] = defaultdict(list)
        for key in sensor.asset_selection.resolve(defs.resolve_asset_graph()):
            for partition in result.get_requested_partitions(key):
                requested[partition].append(key)
        return dict(requested)

    def automate(self, defs: dg.Definitions) -> list[set[str]]:
        """Ticks until one requests nothing, each request executed; the assets each asked."""
        asked: list[set[str]] = []
        for _ in range(12):
            requested = self.tick(defs)
            if not requested:
                return asked
            asked.append({key.to_user_string() for keys in requested.values() for key in keys})
            for partition, keys in sorted(requested.items(), key=lambda item: str(item[0])):
                job = defs.resolve_job_def(REPORT_JOB if partition is None else TASK_JOB)
                job.execute_in_process(
                    instance=self.instance,
                    partition_key=partition,
                    asset_selection=keys,
                    raise_on_error=False,
                )
        pytest.fail(f"the automation never settled: {asked}")

    def weekly_retrain(self) -> list[set[str]]:
        """The schedule's tick executed, then the automation it sets off."""
        defs = build_definitions(self.config())
        schedule = defs.resolve_schedule_def("weekly_retrain")
        context = dg.build_schedule_context(instance=self.instance)
        requests = schedule.evaluate_tick(context).run_requests or []
        assert len(requests) == 1
        job = defs.resolve_job_def(schedule.job_name)
        result = job.execute_in_process(
            instance=self.instance, tags=requests[0].tags, run_config=requests[0].run_config
        )
        assert result.success
        return self.automate(defs)

    def champion(self) -> tuple[str, str]:
        """The MLflow champion's version and checkpoint id."""
        config = self.config()
        client = MlflowClient(config.resolved_tracking_uri)
        version = client.get_model_version_by_alias(config.registered_model, "champion")
        return str(version.version), version.tags["checkpoint_id"]

    def search(self, *args: str) -> subprocess.CompletedProcess[str]:
        return search(self.project, *args)

    def unseen(self) -> dict[str, str]:
        """Each task's leave-one-out hypernet: the checkpoint id its asset stores now."""
        stored = self.config().workspace / "assets" / "unseen_hypernet"
        return {task: load_value(stored / task).checkpoint_id for task in TASKS}


def search(project: Project, *args: str) -> subprocess.CompletedProcess[str]:
    """``hydra search`` on the project's cacm card, three hits."""
    command = [str(HYDRA), "search", "--card", "cacm", "-k", "3", *args, "fast algorithm"]
    env = {**os.environ, **project.env(project.root / "cache")}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def retrains(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[Retrains]:
    tasks = {name: load_task(name, data_dir=data_dir).head(60, 5) for name in TASKS}
    project = make_project(tmp_path_factory.mktemp("champion"), tasks)
    with pytest.MonkeyPatch.context() as patch:
        config = project.enter(patch)
        with dg.DagsterInstance.get() as instance:
            run_pipeline(config, build_definitions(config), instance, echo=lambda _: None)
            retrains = Retrains(project, instance)
            idle = retrains.automate(build_definitions(config))
            assert all(REGISTERED_ASSET not in asked for asked in idle), idle
            yield retrains


def _last_checks(instance: dg.DagsterInstance) -> dict[str, bool]:
    storage = instance.event_log_storage
    history = storage.get_asset_check_execution_history(QUALITY_CHECK, limit=50)
    latest: dict[str, bool] = {}
    for record in history:  # newest first
        if record.partition is not None:
            latest.setdefault(record.partition, record.status.value == "SUCCEEDED")
    return latest


def test_a_scheduled_retrain_that_passes_becomes_the_champion_served_and_searched(
    retrains: Retrains,
) -> None:
    """The retrain (another seed: a new checkpoint) is evaluated on every task, passes, and
    the automation registers it: champion moves, and serve and search default to it."""
    old_version, old_checkpoint = retrains.champion()
    old_unseen = retrains.unseen()
    retrains.edit(train={"seed": 1, "steps_per_epoch": 24})
    asked = retrains.weekly_retrain()
    new = current_checkpoint(retrains.config())
    assert new is not None and new.checkpoint_id != old_checkpoint
    # The leave-one-out hypernets follow the retrain: each trained again, on the new seed.
    unseen = retrains.unseen()
    assert set(unseen) == set(TASKS) and all(unseen[t] != old_unseen[t] for t in TASKS)
    assert any("unseen_hypernet" in assets for assets in asked), asked
    registered_in = [i for i, assets in enumerate(asked) if REGISTERED_ASSET in assets]
    metrics_in = [i for i, assets in enumerate(asked) if "task_metrics" in assets]
    assert registered_in and metrics_in and min(registered_in) > max(metrics_in), asked
    assert all(_last_checks(retrains.instance).values())
    version, checkpoint = retrains.champion()
    assert checkpoint == new.checkpoint_id and int(version) == int(old_version) + 1
    assert champion_checkpoint(retrains.config()).checkpoint_id == new.checkpoint_id

    registry = build_registry(retrains.config(), None, echo=lambda _: None)
    assert registry.checkpoint == new.checkpoint_id  # `hydra serve` with no flags
    by_default = retrains.search()
    assert by_default.returncode == 0, by_default.stderr[-2000:]
    explicit = retrains.search("--checkpoint", new.path)
    assert explicit.returncode == 0, explicit.stderr[-2000:]
    assert len(by_default.stdout.splitlines()) == 3
    assert by_default.stdout == explicit.stdout


def test_the_champion_is_an_mlflow_model_a_fresh_process_loads_and_predicts(
    retrains: Retrains, tmp_path: Path
) -> None:
    """``models:/hydra-hypernet@champion`` loads in a new interpreter and compiles a card
    into the retriever ``hydra compile`` writes with the champion's checkpoint."""
    config = retrains.config()
    card = retrains.project.cards_dir / "cacm.yaml"
    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "import mlflow, pandas as pd\n"
        f"model = mlflow.pyfunc.load_model('models:/{config.registered_model}@champion')\n"
        "out = model.predict(pd.DataFrame({'card': [Path(sys.argv[1]).read_text()]}))\n"
        "Path(sys.argv[2]).write_bytes(out['retriever'][0])\n"
        "meta = model.metadata\n"
        "print(json.dumps({'inputs': meta.get_input_schema().input_names(),\n"
        "    'outputs': meta.get_output_schema().input_names(),\n"
        "    'example': meta.saved_input_example_info is not None,\n"
        "    'task': out['task'][0], 'rows': len(out),\n"
        "    'head_parameters': int(out['head_parameters'][0])}))\n"
    )
    env = {
        **os.environ,
        **retrains.project.env(retrains.project.root / "cache"),
        "MLFLOW_TRACKING_URI": config.resolved_tracking_uri,
    }
    predicted = tmp_path / "predicted.safetensors"
    result = subprocess.run(
        [sys.executable, "-c", script, str(card), str(predicted)],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["inputs"] == ["card"]
    assert answer["outputs"] == [
        "task",
        "lexical_weight",
        "feedback",
        "head_parameters",
        "retriever",
    ]
    assert answer["example"] and answer["rows"] == 1 and answer["task"] == "cacm"

    compiled = tmp_path / "compiled.safetensors"
    champion = champion_checkpoint(config)
    command = [str(HYDRA), "compile", str(card), "--checkpoint", champion.path, "--out"]
    done = subprocess.run(
        [*command, str(compiled)], env=env, capture_output=True, text=True, timeout=TIMEOUT
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ours, theirs = CompiledRetriever.load(predicted), CompiledRetriever.load(compiled)
    # No corpus where the model is loaded: its fusion is the gate's at no profile, the one
    # the champion compiles the card to without one; the head is hydra compile's.
    hypernet = Hypernet.load(champion.path)
    unprofiled = hypernet.gate.fusion_for(None)
    assert ours.fusion.lexical_weight == pytest.approx(unprofiled.lexical_weight)
    assert ours.fusion.feedback == pytest.approx(unprofiled.feedback)
    assert ours.head is not None and theirs.head is not None
    assert answer["head_parameters"] == theirs.head.num_parameters
    reference = theirs.head.tensors()
    for name, tensor in ours.head.tensors().items():
        assert torch.allclose(tensor, reference[name], atol=1e-6), name


def test_training_runs_read_in_mlflow(retrains: Retrains) -> None:
    """Runs named by what they train, the loss every few steps, headline metrics equal to
    DuckDB's means, and an experiment that opens on its runs."""
    config = retrains.config()
    client = MlflowClient(config.resolved_tracking_uri)
    experiment = client.get_experiment_by_name(config.experiment)
    assert experiment is not None
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = [
        run
        for run in client.search_runs([experiment.experiment_id])
        if "checkpoint_id" in run.data.tags
    ]
    names = {run.info.run_name for run in runs}
    assert names == {"hypernet", *(f"without-{task}" for task in TASKS)}
    for run in runs:
        assert run.info.run_name == run.data.tags.get("hydra/variant", "hypernet")

    champion = champion_checkpoint(config)
    steps = [m.step for m in client.get_metric_history(champion.mlflow_run_id, "loss/pairwise")]
    assert steps == [10, 20, 24, 34, 44, 48]  # every LOSS_EVERY steps and each epoch's end
    metrics = client.get_run(champion.mlflow_run_id).data.metrics
    results = metrics_store.latest_results(config.resolved_metrics_db, list(TASKS))
    table = results.filter(pl.col("checkpoint") == champion.checkpoint_id).pivot(
        on="method", index="task", values="ndcg@10"
    )
    expected = {
        "hydra_gain_over_base": ("hydra", "base"),
        "hydra_gain_over_hybrid": ("hydra", "hybrid"),
        "hydra_unseen_gain_over_base": ("hydra-unseen", "base"),
        "hydra_unseen_gain_over_hybrid": ("hydra-unseen", "hybrid"),
        "card_vs_generic": ("hydra", "hydra-generic"),
    }
    assert {key for key in metrics if key.startswith("headline/")} == {
        f"headline/{name}" for name in expected
    }
    for name, (method, reference) in expected.items():
        mean = (table[method] - table[reference]).mean()
        assert metrics[f"headline/{name}"] == pytest.approx(mean, abs=1e-9), name


def test_a_scheduled_retrain_whose_check_fails_leaves_the_champion(retrains: Retrains) -> None:
    """Back to the first training settings with a tolerance of -1 (hydra must beat the base
    by a whole NDCG point, which no task can): its checks fail and nothing is registered;
    serve and search keep the champion."""
    version, champion = retrains.champion()
    retrains.edit(train={"seed": 0, "steps_per_epoch": QUICK_TRAINING["steps_per_epoch"]})
    retrains.edit(tolerance=-1.0)
    retrains.weekly_retrain()
    retrained = current_checkpoint(retrains.config())
    assert retrained is not None and retrained.checkpoint_id != champion
    checks = _last_checks(retrains.instance)
    assert set(checks) == set(TASKS) and not all(checks.values()), checks  # what the test needs
    assert retrains.champion() == (version, champion)
    assert champion_checkpoint(retrains.config()).checkpoint_id == champion
    registry = build_registry(retrains.config(), None, echo=lambda _: None)
    assert registry.checkpoint == champion
    stored = champion_checkpoint(retrains.config()).path
    assert retrains.search().stdout == retrains.search("--checkpoint", stored).stdout


def test_search_without_a_champion_says_what_to_run(tmp_path: Path, data_dir: Path) -> None:
    project = make_project(tmp_path, {"cacm": load_task("cacm", data_dir=data_dir).head(20, 2)})
    result = search(project)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {project.workspace / 'assets' / REGISTERED_ASSET}: no champion hypernet yet: "
        "run `hydra run` (a checkpoint becomes the champion once every task passed its "
        "quality check), or pass --checkpoint DIR"
    ]
