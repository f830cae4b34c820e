"""What ``hydra run`` plans to rebuild, on a small graph shaped like the pipeline's (two
task partitions, a per-task wave, then an unpartitioned asset that reads one task), with a
real Dagster instance; and that hydra reaches Dagster through its public API only."""

# No `from __future__ import annotations` here: Dagster reads the assets' annotations at
# definition time and needs real types (a string `context` annotation is refused).

import re
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from hydra_core.errors import HydraInputError
from hydra_core.settings import PROJECT_ROOT
from hydra_pipeline.artifacts import load_value
from hydra_pipeline.defs.io_manager import HydraIOManager
from hydra_pipeline.defs.jobs import Wave
from hydra_pipeline.defs.partitions import TASK_PARTITIONS
from hydra_pipeline.planning import plan_wave

TASKS = ["x", "y"]
CONTENT = {"x": "x1", "y": "y1"}  # what ``a`` produces, per task


def _defs(a_version: str = "1", b_version: str = "1", h_version: str = "1") -> dg.Definitions:
    @dg.asset(partitions_def=TASK_PARTITIONS, code_version=a_version)
    def a(context: dg.AssetExecutionContext) -> dg.Output[str]:
        value = CONTENT[context.partition_key]
        return dg.Output(value, data_version=dg.DataVersion(value))

    @dg.asset(partitions_def=TASK_PARTITIONS, deps=[a], code_version=b_version)
    def b() -> None: ...

    @dg.asset(
        deps=[dg.AssetDep(a, partition_mapping=dg.SpecificPartitionsPartitionMapping(["x"]))],
        code_version=h_version,
    )
    def h() -> None: ...

    return dg.Definitions(assets=[a, b, h])


TASK_WAVE = Wave("per task", "unused", ("a", "b"), partitioned=True)
ONCE_WAVE = Wave("once", "unused", ("h",), partitioned=False)


def _plan(instance: dg.DagsterInstance, defs: dg.Definitions, wave: Wave) -> list[tuple]:
    return [
        (run.partition, run.assets, run.reasons) for run in plan_wave(instance, defs, wave, TASKS)
    ]


def _build(instance: dg.DagsterInstance, defs: dg.Definitions, *names: str) -> None:
    """Materialize ``names`` (``asset`` or ``asset[task]``) as a run would."""
    for name in names:
        asset, _, task = name.rstrip("]").partition("[")
        assert dg.materialize(
            [defs.resolve_assets_def(key) for key in ("a", "b", "h")],
            instance=instance,
            selection=[asset],
            partition_key=task or None,
        ).success


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    CONTENT.update(x="x1", y="y1")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(TASK_PARTITIONS.name or "task", TASKS)
        yield instance


@pytest.fixture
def built(instance: dg.DagsterInstance) -> dg.DagsterInstance:
    _build(instance, _defs(), "a[x]", "a[y]", "b[x]", "b[y]", "h")
    return instance


def test_missing_assets_and_what_follows_them_in_the_wave(instance: dg.DagsterInstance) -> None:
    defs = _defs()
    assert _plan(instance, defs, TASK_WAVE) == [
        ("x", ("a", "b"), ("a: missing", "b: missing")),
        ("y", ("a", "b"), ("a: missing", "b: missing")),
    ]
    _build(instance, defs, "a[x]", "a[y]", "b[x]")
    assert _plan(instance, defs, TASK_WAVE) == [("y", ("b",), ("b: missing",))]
    assert _plan(instance, defs, ONCE_WAVE) == [(None, ("h",), ("h: missing",))]


def test_nothing_changed_plans_nothing(built: dg.DagsterInstance) -> None:
    assert _plan(built, _defs(), TASK_WAVE) == []
    assert _plan(built, _defs(), ONCE_WAVE) == []


def test_a_new_code_version_rebuilds_the_asset_and_what_follows(
    built: dg.DagsterInstance,
) -> None:
    assert _plan(built, _defs(b_version="2"), TASK_WAVE) == [
        ("x", ("b",), ("b: has a new code version",)),
        ("y", ("b",), ("b: has a new code version",)),
    ]
    assert _plan(built, _defs(a_version="2"), TASK_WAVE) == [
        ("x", ("a", "b"), ("a: has a new code version",)),
        ("y", ("a", "b"), ("a: has a new code version",)),
    ]
    assert _plan(built, _defs(h_version="2"), ONCE_WAVE) == [
        (None, ("h",), ("h: has a new code version",))
    ]


def test_an_input_rebuilt_with_identical_content_changes_nothing(
    built: dg.DagsterInstance,
) -> None:
    _build(built, _defs(), "a[x]")
    assert _plan(built, _defs(), TASK_WAVE) == []
    assert _plan(built, _defs(), ONCE_WAVE) == []


def test_a_new_data_version_rebuilds_the_readers_of_that_partition_only(
    built: dg.DagsterInstance,
) -> None:
    defs = _defs()
    CONTENT["y"] = "y2"
    _build(built, defs, "a[y]")
    assert _plan(built, defs, TASK_WAVE) == [("y", ("b",), ("b: a has a new data version",))]
    assert _plan(built, defs, ONCE_WAVE) == []  # h reads task x only
    CONTENT["x"] = "x2"
    _build(built, defs, "a[x]")
    assert _plan(built, defs, ONCE_WAVE) == [(None, ("h",), ("h: a has a new data version",))]
    _build(built, defs, "h")
    assert _plan(built, defs, ONCE_WAVE) == []


def test_force_rebuilds_everything(built: dg.DagsterInstance) -> None:
    planned = plan_wave(built, _defs(), TASK_WAVE, TASKS, force=True)
    assert [(run.partition, run.assets) for run in planned] == [
        ("x", ("a", "b")),
        ("y", ("a", "b")),
    ]


PRIVATE_DAGSTER = re.compile(r"^\s*(from|import)\s+dagster(_[a-z]+)?\._", re.MULTILINE)


STORED_WAVE = Wave("stored", "unused", ("frame",), partitioned=True)


def test_a_damaged_stored_file_is_named_and_rebuilt(
    instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    """A truncated parquet used to pass as up to date (and crash its reader)."""

    @dg.asset(partitions_def=TASK_PARTITIONS, code_version="1")
    def frame(context: dg.AssetExecutionContext) -> pl.DataFrame:
        return pl.DataFrame({"doc_id": [f"{context.partition_key}{i}" for i in range(500)]})

    defs = dg.Definitions(
        assets=[frame], resources={"io_manager": HydraIOManager(root=str(tmp_path))}
    )

    def build(task: str) -> None:
        assert dg.materialize(
            [frame], instance=instance, partition_key=task, resources=defs.resources
        ).success

    for task in TASKS:
        build(task)
    assert _plan(instance, defs, STORED_WAVE) == []
    stored = tmp_path / "frame" / "x.parquet"
    stored.write_bytes(stored.read_bytes()[: stored.stat().st_size // 2])
    assert _plan(instance, defs, STORED_WAVE) == [
        (
            "x",
            ("frame",),
            ("frame: stored file damaged (x.parquet changed since written (SHA-256))",),
        )
    ]
    with pytest.raises(HydraInputError) as raised:
        load_value(tmp_path / "frame" / "x")
    assert str(raised.value) == (
        f"{stored}: damaged: x.parquet changed since written (SHA-256); `hydra run` rebuilds it"
    )
    stored.unlink()
    assert _plan(instance, defs, STORED_WAVE)[0][2] == (
        "frame: stored file damaged (x.parquet is missing)",
    )
    build("x")
    assert _plan(instance, defs, STORED_WAVE) == []
    assert load_value(tmp_path / "frame" / "x")["doc_id"].len() == 500

    # Like dagster-polars' IO manager, ours puts the frame's size and columns on the output.
    (record,) = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("frame"), asset_partitions=["x"]), limit=1
    ).records
    assert record.asset_materialization is not None
    metadata = record.asset_materialization.metadata
    assert metadata["dagster/row_count"] == dg.IntMetadataValue(500)
    schema = metadata["dagster/column_schema"]
    assert isinstance(schema, dg.TableSchemaMetadataValue)
    assert [(c.name, c.type) for c in schema.schema.columns] == [("doc_id", "string")]


def test_no_private_dagster_imports() -> None:
    """Dagster's underscore modules change without notice between releases."""
    offenders = [
        f"{path.relative_to(PROJECT_ROOT)}: {match.group(0).strip()}"
        for folder in ("hydra_core", "hydra_pipeline", "tests")
        for path in sorted((PROJECT_ROOT / folder).rglob("*.py"))
        for match in PRIVATE_DAGSTER.finditer(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []


def test_the_private_import_pattern_catches_both_forms(tmp_path: Path) -> None:
    text = "from dagster._core.loader import X\n    import dagster._utils\nimport dagster\n"
    assert len(PRIVATE_DAGSTER.findall(text)) == 2
