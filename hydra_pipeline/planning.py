"""What a run must rebuild: Dagster's own stale status, wave by wave.

Dagster marks an asset partition *missing* (never materialized) or *stale* (its code
version changed, or an input's data version differs from the one it was built from; this
is what the UI shows as "Unsynced"). Data versions here are content hashes, so an input
rebuilt with identical content does not make anything stale.

Within a wave the plan is conservative: what is downstream of a stale asset in the same
partition is rebuilt with it, since its inputs are about to change. Across waves it is
exact: the status of the next wave is computed after the previous one has run, so a hypernet
whose pairs came out unchanged is not retrained.

The resolver is Dagster internals (``CachingStaleStatusResolver``, what the webserver
uses); the lockfile pins the version and the pipeline tests exercise it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import dagster as dg
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._core.loader import LoadingContext

from hydra_pipeline.defs.jobs import Wave


class _LoadingContext(LoadingContext):
    """The per-request cache the resolver expects (the webserver passes its own)."""

    def __init__(self, instance: dg.DagsterInstance) -> None:
        self._instance = instance
        self._loaders = {}

    @property
    def instance(self) -> dg.DagsterInstance:
        return self._instance

    @property
    def loaders(self) -> dict:
        return self._loaders


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


def _status_reason(
    resolver: CachingStaleStatusResolver, key: dg.AssetKey, partition: str | None
) -> str | None:
    status = resolver.get_status(key, partition)
    if status == StaleStatus.MISSING:
        return f"{key.to_user_string()}: missing"
    if status == StaleStatus.STALE:
        causes = resolver.get_stale_causes(key, partition)
        why = causes[0].reason if causes else "stale"
        return f"{key.to_user_string()}: {why}"
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
    """The runs ``wave`` needs now: missing or stale assets and what follows them."""
    graph = defs.resolve_asset_graph()
    resolver = CachingStaleStatusResolver(instance, graph, _LoadingContext(instance))
    planned: list[PlannedRun] = []
    for partition in partitions if wave.partitioned else [None]:
        reasons: dict[str, str] = {}
        for name in wave.assets:
            reason = "forced" if force else _status_reason(resolver, dg.AssetKey(name), partition)
            if reason is not None:
                reasons[name] = reason
        selected = _together(defs, reasons)
        frontier = list(selected)
        while frontier:  # everything downstream in this wave, since its inputs will change
            key = dg.AssetKey(frontier.pop())
            for child in graph.get(key).child_keys:
                name = child.to_user_string()
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
