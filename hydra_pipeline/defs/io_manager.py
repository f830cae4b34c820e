"""The IO manager: every asset's value as a file under ``<workspace>/assets``.

``assets/<asset>/<task>.<ext>`` for per-task assets and ``assets/<asset>.<ext>`` for the
others, in the formats of :mod:`hydra_pipeline.artifacts` (parquet, ``.npy``, safetensors,
JSON), so any stored result can be opened without Dagster. An input declared as a mapping
(``dict[str, Embeddings]``: the hypernets read every training task) gets a ``{task: value}``
dict however many partitions it reads, one training task included.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_origin

import dagster as dg

from hydra_pipeline.artifacts import load_value, save_value


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
        context.add_output_metadata({"path": dg.MetadataValue.path(str(path))})

    def load_input(self, context: dg.InputContext) -> Any:
        key = context.asset_key
        if not context.has_asset_partitions:
            return load_value(self._base(key, None))
        partitions = context.asset_partition_keys
        if len(partitions) == 1 and not _declared_as_mapping(context):
            return load_value(self._base(key, partitions[0]))
        return {partition: load_value(self._base(key, partition)) for partition in partitions}
