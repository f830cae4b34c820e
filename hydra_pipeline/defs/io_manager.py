"""The IO manager: every asset's value as a file under ``<workspace>/assets``.

``assets/<asset>/<task>.<ext>`` for per-task assets and ``assets/<asset>.<ext>`` for the
others, in the formats of :mod:`hydra_pipeline.artifacts` (parquet, ``.npy``, safetensors,
JSON), so any stored result can be opened without Dagster. An input declared as a mapping
(``dict[str, Embeddings]``: the hypernets read every training task) gets a ``{task: value}``
dict however many partitions it reads, one training task included.

Each stored frame's output carries ``dagster/row_count`` and ``dagster/column_schema`` (and
embeddings their row count), as dagster-polars' IO manager does. That manager is not used:
it stores frames only (not embeddings, retrievers or records), writes in place rather than
atomically, and reads without checking the SHA-256 digests that let ``hydra run`` name and
rebuild a damaged file (:func:`hydra_pipeline.artifacts.damage`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_origin

import dagster as dg
import polars as pl

from hydra_core.encoding.embeddings import Embeddings
from hydra_pipeline.artifacts import load_value, save_value
from hydra_pipeline.defs.metadata import frame_metadata


def _declared_as_mapping(context: dg.InputContext) -> bool:
    """Whether the input's annotation is a mapping (``dict[str, X]``), i.e. one per partition."""
    declared = context.dagster_type.typing_type
    origin = get_origin(declared) or declared
    return isinstance(origin, type) and issubclass(origin, Mapping)


class HydraIOManager(dg.ConfigurableIOManager):
    """Stores asset values as plain files in the workspace."""

    root: str

    def _base(self, key: dg.AssetKey, partition: str | None) -> Path:
        folder = Path(self.root).joinpath(*key.path)
        return folder / partition if partition is not None else folder

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None:  # assets that only record elsewhere (e.g. in DuckDB) return nothing
            return
        partition = context.partition_key if context.has_partition_key else None
        path = save_value(obj, self._base(context.asset_key, partition))
        metadata: dict[str, Any] = {"path": dg.MetadataValue.path(str(path))}
        if isinstance(obj, pl.DataFrame):
            metadata |= frame_metadata(obj)
        elif isinstance(obj, Embeddings):
            metadata["dagster/row_count"] = len(obj.ids)
        context.add_output_metadata(metadata)

    def load_input(self, context: dg.InputContext) -> Any:
        key = context.asset_key
        if not context.has_asset_partitions:
            return load_value(self._base(key, None))
        partitions = context.asset_partition_keys
        if len(partitions) == 1 and not _declared_as_mapping(context):
            return load_value(self._base(key, partitions[0]))
        return {partition: load_value(self._base(key, partition)) for partition in partitions}
