"""Runs whose ``hydra run`` process died (SIGKILL) are marked failed by the next run, and
only those: real processes, a real Dagster instance."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from hydra_pipeline.runner import fail_stale_runs

STUCK_RUN = """
import sys, time
from pathlib import Path
import dagster as dg
from hydra_pipeline.defs.jobs import Wave
from hydra_pipeline.defs.progress import hydra_progress
from hydra_pipeline.planning import PlannedRun
from hydra_pipeline.runner import execute_planned

started = Path(sys.argv[1])

@dg.asset
def stuck() -> None:
    started.write_text("running")
    while True:  # until the test kills this process
        time.sleep(1)

defs = dg.Definitions(
    assets=[stuck],
    jobs=[dg.define_asset_job("stuck_job", selection=[stuck])],
    loggers={"hydra_progress": hydra_progress},
)
wave = Wave("stuck", "stuck_job", ("stuck",), partitioned=False)
with dg.DagsterInstance.get() as instance:
    execute_planned(defs, instance, PlannedRun(wave, None, ("stuck",), ("missing",)))
"""


def _start_stuck_run(started: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A process inside a Dagster run (tagged as ``hydra run`` tags its runs), once the
    run's step has begun."""
    process = subprocess.Popen(
        [sys.executable, "-c", STUCK_RUN, str(started)], env=env, start_new_session=True
    )
    deadline = time.monotonic() + 600  # a bound on a loaded machine, not a measurement
    while not started.exists():
        assert process.poll() is None, "the run's process ended before its step began"
        assert time.monotonic() < deadline, "the run's step never began"
        time.sleep(0.2)
    return process


def test_runs_of_dead_processes_are_marked_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    killed = _start_stuck_run(tmp_path / "killed", env)
    alive = _start_stuck_run(tmp_path / "alive", env)
    try:
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait()
        with dg.DagsterInstance.get() as instance:
            started = dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])
            assert len(instance.get_runs(filters=started)) == 2  # SIGKILL left it "started"
            lines: list[str] = []
            failed = fail_stale_runs(instance, lines.append)
            assert lines == [f"marked 1 run(s) failed whose process had died: {failed[0]}"]
            run = instance.get_run_by_id(failed[0])
            assert run is not None and run.status == dg.DagsterRunStatus.FAILURE
            assert run.tags["hydra/pid"] == str(killed.pid)
            still = instance.get_runs(filters=started)  # the live one is left alone
            assert [r.tags["hydra/pid"] for r in still] == [str(alive.pid)]
            assert fail_stale_runs(instance, lines.append) == []  # nothing twice
    finally:
        os.killpg(alive.pid, signal.SIGKILL)
        alive.wait()
