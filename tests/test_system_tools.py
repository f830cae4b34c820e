"""A test that needs a program skips without it, saying how to get it, and fails in CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from system_tools import REQUIRE_TOOLS, postgres_programs, require_or_skip

UI_TESTS = Path(__file__).with_name("test_pipeline_ui.py")


def test_without_chromium_the_ui_tests_skip_saying_how_to_install_it() -> None:
    """The UI tests with only the venv's programs on PATH (no chromium among them)."""
    environment = {key: value for key, value in os.environ.items() if key != REQUIRE_TOOLS}
    environment["PATH"] = str(Path(sys.executable).parent)
    skipped = subprocess.run(
        [sys.executable, "-m", "pytest", str(UI_TESTS), "-q", "-rs", "-p", "no:cacheprovider"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert skipped.returncode == 0, skipped.stdout[-3000:]
    assert "2 skipped" in skipped.stdout
    assert "chromium is not installed: apt-get update && apt-get install -y chromium" in (
        skipped.stdout
    )


def test_in_ci_a_missing_program_fails_instead(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REQUIRE_TOOLS, "1")
    with pytest.raises(pytest.fail.Exception, match=f"{REQUIRE_TOOLS} is set, so this test"):
        require_or_skip("hydra-no-such-program", "apt-get install hydra-no-such-program")


def test_postgres_programs_are_found_where_debian_puts_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Debian's postgresql package leaves initdb off PATH, in /usr/lib/postgresql/<ver>/bin."""
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    monkeypatch.delenv(REQUIRE_TOOLS, raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"apt-get install postgresql"):
        postgres_programs(tmp_path)
    for version in ("9", "15"):
        (tmp_path / version / "bin").mkdir(parents=True)
        (tmp_path / version / "bin" / "initdb").touch()
    assert postgres_programs(tmp_path) == tmp_path / "15" / "bin"  # the newest
