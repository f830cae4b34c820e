"""The team setup of docs/pipeline.md on real servers: a throwaway Postgres cluster holds
Dagster's runs, events and schedules and, behind an ``mlflow server``, MLflow's runs, metrics
and registered models; ``hydra run`` (the console script) reaches both.

The cluster comes from the Postgres server programs (``initdb``, ``pg_ctl``); without them
the test skips saying how to get them, and in CI (``HYDRA_REQUIRE_TOOLS=1``) it must run.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import psycopg2
import pytest
from mlflow.tracking import MlflowClient
from pipeline_support import make_project
from system_tools import HYDRA, free_port, postgres_programs, wait_until_answering

from hydra_core.data.tasks import load_task

TIMEOUT = 1200
MLFLOW = Path(sys.executable).with_name("mlflow")
PG_USER = "hydra"


@dataclass(frozen=True)
class Postgres:
    port: int

    def url(self, database: str) -> str:
        return f"postgresql+psycopg2://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def query(self, database: str, sql: str, *params: object) -> list[tuple]:
        with (
            psycopg2.connect(
                host="127.0.0.1", port=self.port, user=PG_USER, dbname=database
            ) as connection,
            connection.cursor() as cursor,
        ):
            cursor.execute(sql, params)
            return cursor.fetchall()


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    """A Postgres cluster in a temporary folder on a free port, with databases ``dagster``
    and ``mlflow``; initdb refuses root, so as root it runs as the ``postgres`` user."""
    programs = postgres_programs()
    as_user: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="hydra-postgres-"))
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(folder, owner.pw_uid, owner.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data = folder / "data"
    port = free_port()
    subprocess.run(
        [*as_user, programs / "initdb", "-D", data, "-U", PG_USER, "--auth=trust"],
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories="
    pg_ctl = [*as_user, programs / "pg_ctl", "-D", data, "-l", folder / "log"]
    subprocess.run([*pg_ctl, "-o", options, "-w", "start"], check=True, capture_output=True)
    try:
        server = Postgres(port)
        for database in ("dagster", "mlflow"):
            createdb = [programs / "createdb", "-h", "127.0.0.1", "-p", str(port), "-U", PG_USER]
            subprocess.run([*createdb, database], check=True, capture_output=True)
        yield server
    finally:
        subprocess.run([*pg_ctl, "-m", "fast", "-w", "stop"], check=False, capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def mlflow_server(postgres: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``mlflow server`` on the cluster's ``mlflow`` database; its address."""
    port = free_port()
    artifacts = tmp_path_factory.mktemp("mlartifacts")
    command = [MLFLOW, "server", "--backend-store-uri", postgres.url("mlflow")]
    command += ["--artifacts-destination", str(artifacts), "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", "1"]
    log = tmp_path_factory.mktemp("mlflow-log") / "server.log"
    with log.open("w") as output:
        server = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    address = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering(f"{address}/health", server, log, 180, "mlflow server")
        yield address
    finally:
        server.terminate()
        server.wait(timeout=60)


def test_hydra_run_keeps_runs_and_models_in_postgres(
    tmp_path: Path, data_dir: Path, postgres: Postgres, mlflow_server: str
) -> None:
    """Runs, events, the registered model and the metrics land in Postgres, not in the
    workspace; a second run finds everything there and launches nothing."""
    task = load_task("cranfield", data_dir=data_dir).head(60, 5)
    project = make_project(tmp_path, {"cranfield": task})
    environment = {
        **os.environ,
        **project.env(tmp_path / "cache"),
        "HYDRA_DAGSTER_POSTGRES_URL": postgres.url("dagster"),
        "MLFLOW_TRACKING_URI": mlflow_server,
    }

    def hydra_run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [HYDRA, "run"], env=environment, capture_output=True, text=True, timeout=TIMEOUT
        )

    first = hydra_run()
    assert first.returncode == 0, first.stderr[-3000:]
    runs = postgres.query("dagster", "select status, count(*) from runs group by status")
    assert dict(runs).keys() == {"SUCCESS"}, runs
    [(materialized,)] = postgres.query(
        "dagster",
        "select count(*) from event_logs where dagster_event_type = 'ASSET_MATERIALIZATION'",
    )
    assert materialized > 10
    # nothing in the workspace's embedded stores
    assert not (project.dagster_home / "history").exists()
    assert not (project.workspace / "mlflow.db").exists()

    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    [version] = client.search_model_versions("name = 'hydra-hypernet'")
    assert version.run_id is not None
    champion = client.get_model_version_by_alias("hydra-hypernet", "champion")
    assert champion.version == version.version and "hydra over base " in (
        champion.description or ""
    )
    run = client.get_run(version.run_id)
    assert f"MLflow run:  {version.run_id} (hydra-hypernet v1)" in first.stdout
    # one checkpoint id: the folder, the MLflow run's tag, DuckDB, the report
    [folder] = [path for path in (project.workspace / "checkpoints").iterdir() if path.is_dir()]
    checkpoint = folder.name
    assert f"Checkpoint:  {checkpoint} ({folder})" in first.stdout
    assert run.info.run_name == "hypernet" and run.data.tags["checkpoint_id"] == checkpoint
    assert version.tags["checkpoint_id"] == checkpoint
    with duckdb.connect(str(project.workspace / "metrics.duckdb"), read_only=True) as database:
        assert database.sql("select distinct checkpoint from metrics").fetchall() == [(checkpoint,)]
    report = (project.workspace / "reports" / "results.md").read_text()
    assert f"checkpoint `{checkpoint}`" in report
    # one parent MLflow run per hydra run, the training nested under it
    experiment = [run.info.experiment_id]
    [parent] = client.search_runs(experiment, "tags.`hydra/launched_by` = 'hydra run'")
    assert parent.info.status == "FINISHED" and str(parent.info.run_name).startswith("hydra run ")
    assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    key = "cranfield/hydra/ndcg_at_10"
    stored = postgres.query(
        "mlflow", "select value from metrics where run_uuid = %s and key = %s", run.info.run_id, key
    )
    assert stored == [(run.data.metrics[key],)]

    second = hydra_run()
    assert second.returncode == 0, second.stderr[-3000:]
    assert "nothing to rebuild" in second.stderr, second.stderr[-3000:]
    assert second.stderr.count("up to date") == 4
    assert postgres.query("dagster", "select count(*) from runs") == [(sum(dict(runs).values()),)]
    assert len(client.search_model_versions("name = 'hydra-hypernet'")) == 1
    assert len(client.search_runs(experiment)) == 2  # no parent run for nothing trained
