"""Opening a retrieval task from its source: a BEIR folder path or an ir_datasets id.

An existing folder is read as BEIR layout (``beir_folder``); anything else is an ir_datasets id
(``ir_datasets_source``), looked up first as a BEIR folder of the same name in the data dir.
"""

from __future__ import annotations

from pathlib import Path

from hydra_core.data.beir_folder import load_beir_folder
from hydra_core.data.ir_datasets_source import dataset_name, load_ir_datasets, looks_like_path
from hydra_core.data.retrieval_task import RetrievalTask
from hydra_core.errors import HydraInputError
from hydra_core.settings import load_settings


def load_task(
    source: str,
    *,
    base_dir: Path | None = None,
    data_dir: Path | None = None,
    name: str | None = None,
) -> RetrievalTask:
    """Load a task from a BEIR folder path or an ir_datasets id.

    An existing folder (relative paths resolve against ``base_dir``, e.g. a card's folder, else
    the working directory) is read as BEIR layout. Anything else is an ir_datasets id: a folder
    named :func:`dataset_name` in ``data_dir`` (default: settings) wins over downloading.
    """
    cleaned = source.strip()
    if not cleaned:
        raise HydraInputError("empty task source: give a folder path or an ir_datasets id")
    candidate = Path(cleaned).expanduser()
    if not candidate.is_absolute() and base_dir is not None:
        candidate = Path(base_dir) / candidate
    if candidate.is_dir():
        return load_beir_folder(candidate, name=name)
    if candidate.exists():
        raise HydraInputError("expected a BEIR dataset folder, got a file", path=candidate)
    if looks_like_path(cleaned):
        raise HydraInputError("no such folder (expected a BEIR dataset folder)", path=candidate)

    if data_dir is None:
        data_dir = load_settings().data_dir
    short_name = dataset_name(cleaned)
    if data_dir is not None:
        local = Path(data_dir) / short_name
        if local.is_dir():
            return load_beir_folder(local, name=name or short_name)
        hint = f"; no folder {local} either"
    else:
        hint = "; no data dir is set (HYDRA_DATA_DIR) to look for a local copy"
    return load_ir_datasets(cleaned, name=name, hint=hint)
