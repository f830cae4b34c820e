"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@contextmanager
def atomic_path(target: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it over ``target`` on success.

    Write the file at the yielded path with any library (polars, safetensors, numpy).
    If the block raises, the temporary file is removed and ``target`` is untouched. A failed
    write of the temporary (read-only or full disk) is reported as an OSError on ``target``:
    the temporary's name would mean nothing to the user.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as error:
        raise OSError(error.errno, error.strerror, str(target)) from error
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except OSError as error:
        if error.filename is not None and Path(error.filename) != tmp:
            raise
        raise OSError(error.errno, error.strerror, str(target)) from error
    finally:
        tmp.unlink(missing_ok=True)


def save_tensors_atomic(
    target: Path | str, tensors: Mapping[str, torch.Tensor], metadata: dict[str, str]
) -> None:
    """safetensors' ``save_file``, atomically; an I/O failure is an OSError naming ``target``.

    safetensors reports a full disk as ``SafetensorError: ... I/O error: No space left on
    device``, which names no file.
    """
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    with atomic_path(target) as tmp:
        try:
            save_file(dict(tensors), str(tmp), metadata=metadata)
        except SafetensorError as error:
            if "I/O error" not in str(error):
                raise
            raise OSError(None, str(error), str(target)) from error


def write_bytes_atomic(target: Path | str, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(target: Path | str, text: str) -> None:
    """Write UTF-8 ``text`` to ``target`` atomically."""
    write_bytes_atomic(target, text.encode("utf-8"))
