"""How the figures measure: memory from /proc, medians, and interleaved timing that
lets noisy shared machines hit both sides of a comparison alike."""

from __future__ import annotations

import resource
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra_core.settings import load_settings

Figure = dict[str, Any]


def _status_mib(field: str) -> float | None:
    """A memory field of Linux's ``/proc/self/status`` in MiB (None elsewhere)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return None


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, in MiB.

    Linux's VmHWM belongs to the process image, whereas ``ru_maxrss`` survives exec and
    so would report the parent's peak in a freshly spawned child.
    """
    peak = _status_mib("VmHWM")
    if peak is not None:
        return peak
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def rss_mib() -> float:
    """This process's resident memory now, in MiB (Linux's VmRSS)."""
    resident = _status_mib("VmRSS")
    if resident is None:
        raise RuntimeError("resident memory is read from /proc/self/status (Linux only)")
    return resident


@contextmanager
def scratch_dir() -> Iterator[Path]:
    """A throwaway folder for a figure's caches, sharing the project's converted models.

    Its ``openvino`` entry links to the project cache's, so OpenVINO's one-time conversion
    is not repeated by every figure; each figure's embeddings still start from nothing.
    """
    shared = load_settings().cache_dir / "openvino"
    shared.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hydra-bench-") as folder:
        (Path(folder) / "openvino").symlink_to(shared, target_is_directory=True)
        yield Path(folder)


def median_ms(seconds: Sequence[float]) -> float:
    return statistics.median(seconds) * 1e3


def interleaved(sides: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Time each side once per round, rotating who goes first, so load hits all alike."""
    names = list(sides)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            started = time.perf_counter()
            sides[name]()
            times[name].append(time.perf_counter() - started)
    return times
