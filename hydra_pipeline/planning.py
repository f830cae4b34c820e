"""What a run must rebuild, wave by wave: each asset partition's last materialization
against the current definitions and the current data versions of its inputs.

Dagster records on every materialization its code version and the data version (and
event) of each input it read, its "data provenance". An asset partition is rebuilt when it
was never materialized, when its definition's code version differs from the recorded one,
when its stored file is damaged or gone (:func:`~hydra_pipeline.artifacts.damage`),
or when an input has a newer record whose data version differs from the one it was built
from: the comparison behind the UI's "Unsynced", read here through public instance methods
(``fetch_materializations``, ``fetch_observations``) and the definitions' asset specs. Data
versions here are content hashes, so an input rebuilt with identical content does not make
anything out of date.

Declarative automation does not fit this job: its ``code_version_changed`` and
``data_version_changed`` compare with the previous evaluation's cursor, not with what a
materialization was built from, and the latter ignores materializations' data versions
unless the instance sets ``respect_materialization_data_versions``.

Within a wave the plan is conservative: what is downstream of an out-of-date asset in the
same partition is rebuilt with it, since its inputs are about to change. Across waves it is
exact: the next wave is planned after the previous one has run, so a hypernet whose pairs
came out unchanged is not retrained.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from hydra_pipeline.artifacts import damage
from hydra_pipeline.defs.assets.sources import DATA_VERSION_TAG
from hydra_pipeline.defs.jobs import Wave
from hydra_pipeline.defs.partitions import TASK_PARTITIONS


@dataclass(frozen=True)
class PlannedRun:
    """One Dagster run: some assets of a wave, for one task partition or for all tasks."""

    wave: Wave
    partition: str | None
    assets: tuple[str, ...]
    reasons: tuple[str, ...]

    @property
    def label(self) -> str:
        return self.partition or self.wave.name


def _latest(
    instance: dg.DagsterInstance,
    key: dg.AssetKey,
    partition: str | None,
    *,
    after: int | None = None,
    before: int | None = None,
) -> dg.EventLogRecord | None:
    """The latest record of ``key`` (its materialization, or for an observable source its
    observation) for ``partition``, between the storage ids ``after`` and ``before``."""
    records_filter = dg.AssetRecordsFilter(
        asset_key=key,
        asset_partitions=None if partition is None else [partition],
        after_storage_id=after,
        before_storage_id=before,
    )
    for fetch in (instance.fetch_materializations, instance.fetch_observations):
        records = fetch(records_filter, limit=1).records
        if records:
            return records[0]
    return None


def _data_version(record: dg.EventLogRecord | None) -> str | None:
    event = None if record is None else record.asset_event
    return None if event is None else (event.tags or {}).get(DATA_VERSION_TAG)


def _input_changed(
    instance: dg.DagsterInstance,
    provenance: dg.DataProvenance,
    dep: dg.AssetKey,
    partitions: Sequence[str | None],
) -> bool:
    """Whether an input has a record newer than the one read, with another data version.

    As Dagster does: an unpartitioned input by its recorded data version, a partitioned one
    by the event the materialization read (its storage id), per input partition.
    """
    if partitions == [None]:
        return (
            _data_version(_latest(instance, dep, None)) != provenance.input_data_versions[dep].value
        )
    read = provenance.input_storage_ids[dep]
    for partition in partitions:
        newer = _latest(instance, dep, partition, after=read)
        if newer is None:
            continue
        before = None if read is None else _latest(instance, dep, partition, before=read + 1)
        if _data_version(newer) != _data_version(before):
            return True
    return False


def _dep_partitions(
    dep: dg.AssetDep,
    specs: Mapping[dg.AssetKey, dg.AssetSpec],
    spec: dg.AssetSpec,
    partition: str | None,
    tasks: Sequence[str],
) -> list[str | None]:
    """The partitions of ``dep`` that ``partition`` of ``spec`` reads."""
    if specs[dep.asset_key].partitions_def is None:
        return [None]
    if isinstance(dep.partition_mapping, dg.SpecificPartitionsPartitionMapping):
        return list(dep.partition_mapping.partition_keys)
    if spec.partitions_def is not None:
        return [partition]  # the same task
    return list(tasks)  # an unpartitioned asset reads every task's


def out_of_date(
    instance: dg.DagsterInstance,
    specs: Mapping[dg.AssetKey, dg.AssetSpec],
    key: dg.AssetKey,
    partition: str | None,
    tasks: Sequence[str],
) -> str | None:
    """Why ``partition`` of ``key`` must be rebuilt (``None`` when it is up to date)."""
    name = key.to_user_string()
    spec = specs[key]
    record = _latest(instance, key, partition)
    event = None if record is None else record.asset_materialization
    if event is None:
        return f"{name}: missing"
    stored = event.metadata.get("path")  # the file the IO manager wrote, if any
    problem = None if stored is None else damage(Path(str(stored.value)))
    if problem is not None:
        return f"{name}: stored file damaged ({problem})"
    provenance = dg.DataProvenance.from_tags(event.tags or {})
    if provenance is None:
        return f"{name}: no recorded code version"
    if spec.code_version is not None and spec.code_version != provenance.code_version:
        return f"{name}: has a new code version"
    for dep in sorted(spec.deps, key=lambda dep: dep.asset_key.to_user_string()):
        dep_name = dep.asset_key.to_user_string()
        if not provenance.has_input_asset(dep.asset_key):
            return f"{name}: has a new dependency on {dep_name}"
        partitions = _dep_partitions(dep, specs, spec, partition, tasks)
        if _input_changed(instance, provenance, dep.asset_key, partitions):
            return f"{name}: {dep_name} has a new data version"
    return None


def _together(defs: dg.Definitions, names: Iterable[str]) -> set[str]:
    """Add the other outputs of multi-assets that cannot materialize a subset."""
    result = set(names)
    for name in list(result):
        assets_def = defs.resolve_assets_def(name)
        if not assets_def.can_subset:
            result |= {key.to_user_string() for key in assets_def.keys}
    return result


def plan_wave(
    instance: dg.DagsterInstance,
    defs: dg.Definitions,
    wave: Wave,
    partitions: Sequence[str],
    *,
    force: bool = False,
) -> list[PlannedRun]:
    """The runs ``wave`` needs now: out-of-date assets and what follows them."""
    specs = {spec.key: spec for spec in defs.resolve_all_asset_specs()}
    children: dict[str, set[str]] = {}
    for spec in specs.values():
        for dep in spec.deps:
            children.setdefault(dep.asset_key.to_user_string(), set()).add(
                spec.key.to_user_string()
            )
    tasks = instance.get_dynamic_partitions(TASK_PARTITIONS.name or "task")
    planned: list[PlannedRun] = []
    for partition in partitions if wave.partitioned else [None]:
        reasons: dict[str, str] = {}
        for name in wave.assets:
            reason = (
                "forced"
                if force
                else out_of_date(instance, specs, dg.AssetKey(name), partition, tasks)
            )
            if reason is not None:
                reasons[name] = reason
        selected = _together(defs, reasons)
        frontier = list(selected)
        while frontier:  # everything downstream in this wave, since its inputs will change
            for name in children.get(frontier.pop(), set()):
                if name in wave.assets and name not in selected:
                    selected |= _together(defs, [name])
                    frontier.append(name)
        if selected:
            planned.append(
                PlannedRun(
                    wave=wave,
                    partition=partition,
                    assets=tuple(name for name in wave.assets if name in selected),
                    reasons=tuple(reasons.values()),
                )
            )
    return planned
