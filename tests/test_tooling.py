"""The suite runs the project's linters (configured in pyproject.toml, pinned in
requirements-dev.txt): ruff and mypy must find nothing."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.e2e import ROOT


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *command], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, check=False)


def test_ruff_finds_nothing() -> None:
    done = run("ruff", "check", "--no-cache", ".")
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]


@pytest.mark.timeout(600)
def test_mypy_finds_nothing() -> None:
    done = run("mypy")  # files and options: pyproject.toml
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
