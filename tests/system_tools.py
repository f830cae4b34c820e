"""Programs tests run: the installed ``hydra`` console script, and some beyond the Python
packages (a browser, a mount namespace, a Postgres server).

Without one, such a test is skipped with a reason that says how to get it, so ``uv run pytest``
passes on a fresh machine; CI sets ``HYDRA_REQUIRE_TOOLS=1`` (in .ci/run), which turns the skip
into a failure, so CI always runs them.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import NoReturn

import pytest

HYDRA = Path(sys.executable).with_name("hydra")
"""The console script ``uv run hydra`` starts: tests run it for real exit statuses."""
REQUIRE_TOOLS = "HYDRA_REQUIRE_TOOLS"
DEBIAN_POSTGRES = Path("/usr/lib/postgresql")
"""Where Debian's ``postgresql`` package puts the server programs (``<version>/bin``),
which it does not put on PATH."""


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get(REQUIRE_TOOLS):
        pytest.fail(f"{reason} ({REQUIRE_TOOLS} is set, so this test may not be skipped)")
    pytest.skip(reason)


def require_or_skip(binary: str, install_hint: str) -> Path:
    """The path of ``binary`` on PATH; without it, skip (or fail in CI) saying how to get it."""
    found = shutil.which(binary)
    if found is None:
        _unavailable(f"{binary} is not installed: {install_hint}")
    return Path(found)


def mounted(setup: str, command: list[str]) -> list[str]:
    """``command`` run after the shell ``setup`` mounts something, in a mount namespace of its
    own: a real full or read-only filesystem, gone when the command ends. Needs root."""
    unshare = require_or_skip("unshare", "apt-get install util-linux")
    if subprocess.run([unshare, "--mount", "true"], capture_output=True).returncode != 0:
        _unavailable("mounting a test filesystem needs root (unshare --mount)")
    return [str(unshare), "--mount", "sh", "-c", f'{setup} && exec "$@"', "sh", *command]


def postgres_programs(debian_root: Path = DEBIAN_POSTGRES) -> Path:
    """The folder of the Postgres server programs (``initdb``, ``pg_ctl``): the one on PATH,
    else the newest of Debian's; without one, skip (or fail in CI) saying how to get it."""
    found = shutil.which("initdb")
    if found is not None:  # often a link into Debian's folder, which holds createdb too
        return Path(found).resolve().parent
    installed = [path.parent for path in debian_root.glob("*/bin/initdb")]
    if not installed:
        _unavailable("initdb (the Postgres server) is not installed: apt-get install postgresql")
    return max(installed, key=lambda folder: int(folder.parent.name))


def free_port() -> int:
    """A loopback port nothing listens on, for a server a test starts."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_answering(
    url: str, server: subprocess.Popen[bytes], log: Path, seconds: float, name: str
) -> None:
    """Poll ``url`` until it answers 200; fail with the end of ``log`` if ``server`` exits
    or ``seconds`` pass first."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"{name} exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"{name} did not answer {url} in {seconds:.0f}s:\n{log.read_text()[-3000:]}")
