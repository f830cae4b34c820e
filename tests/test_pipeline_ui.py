"""The Dagster UI end to end: ``dagster dev`` on a throwaway project, driven by a real browser.

Debian's chromium through Playwright (never ``playwright install``; the ``chromium``,
``browser`` and ``page`` fixtures are in conftest.py): the UI must show the
Hydra asset graph, and a materialization launched from it must run through the daemon's
run queue and land in the instance. Without chromium the tests are skipped, saying how to
install it (CI makes it mandatory: see system_tools).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from pipeline_support import Project, make_project
from playwright.sync_api import Page, expect
from system_tools import free_port, wait_until_answering

from hydra_core.data.retrieval_task import RetrievalTask
from hydra_core.settings import PROJECT_ROOT
from hydra_pipeline.runner import register_tasks

GROUPS = ("sources", "data", "embeddings", "teachers", "training", "evaluation")
STARTUP_SECONDS = 180
RUN_SECONDS = 180


@dataclass
class DagsterUI:
    url: str
    project: Project
    log: Path


def _stop(server: subprocess.Popen[bytes]) -> None:
    """End the process group this test started (webserver, daemon, code server)."""
    if server.poll() is not None:
        return
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=10)


@pytest.fixture(scope="module")
def dagster_ui(
    chromium: Path,  # checked first: without a browser there is no point starting the UI
    tmp_path_factory: pytest.TempPathFactory,
    scifact_slice: RetrievalTask,
) -> Iterator[DagsterUI]:
    root = tmp_path_factory.mktemp("ui")
    project = make_project(root, {"scifact": scifact_slice.head(60, 5)})
    env = {**os.environ, **project.env(root / "cache")}
    with pytest.MonkeyPatch.context() as patch:
        config = project.enter(patch)
        # The partition exists and the card is observed, as after a `hydra run`: the card
        # sensor then has nothing new to launch and the test's run is the only one.
        with dg.DagsterInstance.get() as instance:
            register_tasks(instance, config.tasks, lambda _: None)
    port = free_port()
    log = root / "dagster_dev.log"
    with open(log, "wb") as output:
        server = subprocess.Popen(
            # `uv run dagster dev` from the project folder: it finds workspace.yaml there
            [sys.executable, "-m", "dagster", "dev", "-h", "127.0.0.1", "-p", str(port)],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering(f"{url}/server_info", server, log, STARTUP_SECONDS, "dagster dev")
        yield DagsterUI(url, project, log)
    finally:
        _stop(server)


def _dismiss_welcome(page: Page) -> None:
    """A fresh Dagster home greets the first visitor with a newsletter dialog."""
    skip = page.get_by_role("button", name="Skip")
    try:
        skip.wait_for(timeout=5_000)
    except Exception:  # noqa: BLE001 (no dialog: nothing to dismiss)
        return
    skip.click()


def test_ui_shows_the_hydra_asset_graph(dagster_ui: DagsterUI, page: Page) -> None:
    page.goto(f"{dagster_ui.url}/asset-groups")
    expect(page.get_by_text("Global asset lineage")).to_be_visible()
    _dismiss_welcome(page)
    for group in GROUPS:
        expect(page.get_by_text(group, exact=True).first).to_be_visible()
    expect(page.get_by_role("button", name="Materialize all (23)…")).to_be_visible()

    page.goto(f"{dagster_ui.url}/locations/hydra/asset-groups/data")
    page.get_by_text("List", exact=True).click()  # wide graph: every name shows in the list
    for name in ("task_card", "corpus", "queries", "qrels", "training_queries"):
        expect(page.get_by_text(name, exact=True).first).to_be_visible()
    page.goto(f"{dagster_ui.url}/locations/hydra/asset-groups/training")
    page.get_by_text("List", exact=True).click()
    names = ("hypernet_checkpoint", "labelled_hypernet", "unseen_hypernet", "compiled_retriever")
    for name in names:
        expect(page.get_by_text(name, exact=True).first).to_be_visible()


def test_materialization_launched_from_the_ui_runs(dagster_ui: DagsterUI, page: Page) -> None:
    page.goto(f"{dagster_ui.url}/assets/task_card")
    _dismiss_welcome(page)
    expect(page.get_by_text("Never materialized")).to_be_visible()
    page.get_by_role("button", name="Materialize…").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_text("Launch runs to materialize task_card")).to_be_visible()
    dialog.get_by_role("button", name="All", exact=True).click()
    dialog.get_by_role("button", name="Launch 1 run").click()

    home = dagster_ui.project.dagster_home
    deadline = time.monotonic() + RUN_SECONDS
    with dg.DagsterInstance.from_config(str(home)) as instance:
        while "scifact" not in instance.get_materialized_partitions(dg.AssetKey("task_card")):
            if time.monotonic() > deadline:
                runs = [(r.run_id, r.status) for r in instance.get_runs()]
                pytest.fail(
                    f"no task_card materialization; runs {runs}\n"
                    f"{dagster_ui.log.read_text()[-3000:]}"
                )
            time.sleep(2)
        (run,) = instance.get_runs()
        # The materialization is recorded before the run process reports its end.
        while not run.is_finished and time.monotonic() < deadline:
            time.sleep(1)
            run = instance.get_run_by_id(run.run_id) or run
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert run.tags.get("dagster/partition") == "scifact"
    page.goto(f"{dagster_ui.url}/assets/task_card")
    expect(page.get_by_text("Latest materialization")).to_be_visible()
    expect(page.get_by_text("Never materialized")).to_have_count(0)
    # The location is named as [tool.dg.project] names it: no warning on every load.
    assert "does not match the name" not in dagster_ui.log.read_text()
