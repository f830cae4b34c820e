"""``hydra run`` as a new user meets it: the console script in a subprocess, on tiny projects.

Each test builds its own throwaway project from real slices (60 documents, 5 queries) of
tasks whose cards declare no labels, so no supervised head is fitted; one embedding cache
serves the module. The runs are the first ones a user makes: a project of one task, a step
that fails, Ctrl-C, two first runs started at once.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import dagster as dg
import pytest
import yaml
from mlflow.tracking import MlflowClient
from pipeline_support import Project, make_project
from system_tools import HYDRA

from hydra_core.data.retrieval_task import RetrievalTask
from hydra_core.data.tasks import load_task
from hydra_pipeline import metrics_store

TIMEOUT = 1200
RESULTS_ROW = "hydra-generic"  # a row of every task's results table on stdout


@pytest.fixture(scope="module")
def tiny_tasks(data_dir: Path) -> dict[str, RetrievalTask]:
    return {
        name: load_task(name, data_dir=data_dir).head(60, 5)
        for name in ("cranfield", "cacm", "vaswani")
    }


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def _failed_steps(stderr: str) -> list[str]:
    """Progress lines of steps that failed (``FAILED <step>: cause``)."""
    return [line for line in stderr.splitlines() if re.search(r"\bFAILED \w", line)]


def _command(project: Project, cache: Path, *args: str) -> dict:
    return {
        "args": [str(HYDRA), "run", *args],
        "env": {**os.environ, **project.env(cache)},
        "stdout": subprocess.PIPE,
        "stderr": subprocess.PIPE,
        "text": True,
    }


def _hydra_run(project: Project, cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(**_command(project, cache, *args), timeout=TIMEOUT, check=False)


def _materialized(project: Project, asset: str) -> set[str]:
    with dg.DagsterInstance.from_config(str(project.dagster_home)) as instance:
        return set(instance.get_materialized_partitions(dg.AssetKey(asset)))


def test_one_task_project_runs_to_its_results(
    tmp_path: Path, tiny_tasks: dict[str, RetrievalTask], cache: Path
) -> None:
    """With one task, the hypernets' {task: value} inputs hold one entry, not a bare value."""
    project = make_project(tmp_path, {"cranfield": tiny_tasks["cranfield"]})
    result = _hydra_run(project, cache)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not _failed_steps(result.stderr), result.stderr[-3000:]
    assert "cranfield" in result.stdout and RESULTS_ROW in result.stdout
    # training says how far it is, with its rate, where hydra run's output shows it
    assert re.search(r"epoch 1/\d+: (\d+)/\1 steps \([\d.]+/s, about 0s left\)", result.stderr)
    assert _materialized(project, "unseen_hypernet") == {"cranfield"}
    assert _materialized(project, "task_metrics") == {"cranfield"}
    # robustness is off unless asked for: its step stores no rows and the report no section
    assert _materialized(project, "task_robustness") == {"cranfield"}
    database = str(project.workspace / "metrics.duckdb")
    assert metrics_store.latest_robustness(database).is_empty()
    assert metrics_store.latest_long(database).height > 0
    assert "## Robustness" not in (project.workspace / "reports" / "results.md").read_text()

    # a new code version (the registered model's name is part of its) rebuilds that step only
    config = yaml.safe_load(project.config_file.read_text())
    project.config_file.write_text(yaml.safe_dump({**config, "registered_model": "renamed"}))
    renamed = _hydra_run(project, cache)
    assert renamed.returncode == 0, renamed.stderr[-3000:]
    assert renamed.stderr.count("up to date") == 3, renamed.stderr[-3000:]
    assert "[report] report: 1 assets (registered_model: has a new code version)" in (
        renamed.stderr
    )
    client = MlflowClient(f"sqlite:///{project.workspace / 'mlflow.db'}")
    assert len(client.search_model_versions("name = 'renamed'")) == 1

    forced = _hydra_run(project, cache, "--force")  # every wave, up to date or not
    assert forced.returncode == 0, forced.stderr[-3000:]
    assert "up to date" not in forced.stderr
    launched = re.findall(r"^\[([a-z ]+)\] \S+: \d+ assets \(forced\)$", forced.stderr, re.M)
    assert launched == ["task data", "hypernet", "heads and metrics", "report"]


def test_a_failed_step_shows_its_cause_task_and_run(
    tmp_path: Path, tiny_tasks: dict[str, RetrievalTask], cache: Path
) -> None:
    """The cause, not Dagster's "Error occurred while executing op" wrapper."""
    project = make_project(tmp_path, {"cranfield": tiny_tasks["cranfield"]})
    corpus = project.root / "data" / "cranfield" / "corpus.jsonl"
    line = len(corpus.read_text(encoding="utf-8").splitlines()) + 1
    with corpus.open("a", encoding="utf-8") as handle:
        handle.write('{"_id": "broken", "text": \n')
    cause = rf"^  HydraInputError: \S*/data/cranfield/corpus\.jsonl:{line}: invalid JSON: "
    result = _hydra_run(project, cache)
    assert result.returncode == 1, result.stderr[-3000:]
    errors = [text for text in result.stderr.splitlines() if text.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(
        "error: step task_data failed (task cranfield, Dagster run "
    )
    assert re.search(cause, result.stderr, re.MULTILINE)  # the file and line at fault
    assert "FAILED task_data: HydraInputError" in result.stderr  # the progress line too
    assert "Error occurred while executing op" not in result.stderr
    assert "Traceback" not in result.stderr and 'File "' not in result.stderr
    assert "uv run hydra ui, then http://127.0.0.1:3000/runs/" in result.stderr
    assert "hydra run --verbose" in result.stderr

    verbose = _hydra_run(project, cache, "--verbose")
    assert verbose.returncode == 1
    assert re.search(cause, verbose.stderr, re.MULTILINE)
    assert "Stack Trace:" in verbose.stderr and "hydra_core/data/tasks.py" in verbose.stderr


@pytest.mark.parametrize(
    ("executor", "marker"),
    # in_process: partitions one after another, so Ctrl-C comes during the second one;
    # multiprocess (the default): two run at once and the third waits for a worker
    [("in_process", "cacm  done task_card"), ("multiprocess", "done task_card")],
)
def test_ctrl_c_stops_the_run_and_the_next_run_resumes(
    tmp_path: Path,
    tiny_tasks: dict[str, RetrievalTask],
    cache: Path,
    executor: str,
    marker: str,
) -> None:
    """Ctrl-C: the last task never starts, the status is 130, what finished is listed, and
    the next run rebuilds only what had not finished."""
    project = make_project(tmp_path, tiny_tasks, executor=executor)
    process = subprocess.Popen(**_command(project, cache), start_new_session=True)
    assert process.stderr is not None
    seen: list[str] = []
    for line in process.stderr:
        seen.append(line)
        if marker in line:
            os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
            break
    else:
        pytest.fail(f"the run ended before {marker!r}:\n{''.join(seen)[-3000:]}")
    stdout, rest = process.communicate(timeout=TIMEOUT)
    stderr = "".join(seen) + rest
    assert process.returncode == 130, stderr[-3000:]
    finished = re.search(r"^interrupted: finished before the interrupt: (.*)$", stderr, re.M)
    assert finished is not None, stderr[-3000:]
    if executor == "in_process":
        assert finished.group(1) == "[task data] cranfield"
    assert "run `hydra run` again to resume" in stderr
    assert not _failed_steps(stderr) and "error:" not in stderr  # Ctrl-C is not a fault
    assert "vaswani  done" not in stderr and "[hypernet]" not in stderr
    assert RESULTS_ROW not in stdout

    resumed = _hydra_run(project, cache)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for task in tiny_tasks:  # what had finished is not rebuilt
        rebuilt = f"[task data] {task}:" in resumed.stderr
        assert rebuilt != (f"[task data] {task}" in finished.group(1)), task
    assert _materialized(project, "task_metrics") == set(tiny_tasks)


def test_two_first_runs_at_once(
    tmp_path: Path, tiny_tasks: dict[str, RetrievalTask], cache: Path
) -> None:
    """Both create the workspace's stores (Dagster's and MLflow's sqlite schemas, the task
    partition) at the same moment; one at a time, both succeed, and both registering the
    same checkpoint leave one version."""
    project = make_project(tmp_path, {"vaswani": tiny_tasks["vaswani"]})
    runs = [subprocess.Popen(**_command(project, cache)) for _ in range(2)]
    outputs = [run.communicate(timeout=TIMEOUT) for run in runs]
    for run, (stdout, stderr) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, stderr[-3000:]
        assert not _failed_steps(stderr) and RESULTS_ROW in stdout, stderr[-3000:]
    assert _materialized(project, "task_metrics") == {"vaswani"}  # the instance still opens
    client = MlflowClient(f"sqlite:///{project.workspace / 'mlflow.db'}")
    [version] = client.search_model_versions("name = 'hydra-hypernet'")  # one per checkpoint
    assert client.get_model_version_by_alias("hydra-hypernet", "champion").version == (
        version.version
    )


def test_a_failed_quality_check_leaves_the_hypernet_unregistered(
    tmp_path: Path, tiny_tasks: dict[str, RetrievalTask], cache: Path
) -> None:
    """A tolerance of -1 (hydra must beat the base by a whole NDCG point, which no task
    can) fails every task's blocking check: the report is still written, nothing is
    registered, the run says why and exits 1, and so does the next run, which rebuilds
    nothing else."""
    project = make_project(tmp_path, tiny_tasks, tolerance=-1.0)
    first = _hydra_run(project, cache)
    assert first.returncode == 1, first.stderr[-3000:]
    behind = list(tiny_tasks)  # the project's order, as the messages name them
    for task in behind:
        assert re.search(
            rf"^error: step task_metrics_hydra_within_tolerance_of_base failed \(task {task}, "
            r".*\n  check hydra_within_tolerance_of_base failed: .*hydra_minus_base_ndcg@10 -?\d",
            first.stderr,
            re.MULTILINE,
        ), first.stderr[-3000:]
    refused = (
        "CheckNotPassedError: checkpoint .* not registered as hydra-hypernet: "
        "hydra_within_tolerance_of_base has not passed on "
        + ", ".join(f"{task} \\(FAILED\\)" for task in behind)
    )
    assert re.search(refused, first.stderr), first.stderr[-3000:]
    assert (project.workspace / "reports" / "results.md").is_file()
    client = MlflowClient(f"sqlite:///{project.workspace / 'mlflow.db'}")
    assert client.search_model_versions("name = 'hydra-hypernet'") == []

    second = _hydra_run(project, cache)
    assert second.returncode == 1
    assert second.stderr.count("up to date") == 3  # only registered_model is tried again
    assert re.search(refused, second.stderr), second.stderr[-3000:]
    assert client.search_model_versions("name = 'hydra-hypernet'") == []
