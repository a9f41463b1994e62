"""The checksummer role: listed by --help; a command validator it cannot run, or a
VALIDATOR_COMMAND_ variable that names no service, stops it (and the gateway, which
schedules validations) at start-up with one line naming the variable, exit 2."""
from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.e2e import ROOT, Gateway


def run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("KAFKAMQ", "DATABASE_URL", "STORAGE_DRIVER", "WATCH_DIR")}
    clean.update({"WORKDIR": str(tmp_path / "work"), "LISTEN_PORT": "0", **env})
    return subprocess.run([sys.executable, str(ROOT / "app.py"), *args], cwd=ROOT, env=clean,
                          capture_output=True, timeout=60, check=False, text=True)


def test_help_lists_the_role(tmp_path: Path) -> None:
    done = run(tmp_path, "--help")
    assert done.returncode == 0 and "checksummer" in done.stdout


@pytest.mark.parametrize(("role", "env", "named"), [
    ("checksummer", {"VALIDATOR_COMMAND_ADVISOR": "/no/such/validator"}, "/no/such/validator"),
    ("checksummer", {"VALIDATOR_COMMAND_NOPE": "true"}, "VALIDATOR_COMMAND_NOPE"),
    ("gateway", {"VALIDATOR_COMMAND_NOPE": "true"}, "VALIDATOR_COMMAND_NOPE"),
])
def test_a_bad_validator_stops_start_up(tmp_path: Path, role: str, env: dict[str, str],
                                        named: str) -> None:
    done = run(tmp_path, role, **env)
    errors = [line for line in done.stderr.splitlines() if "alembic" not in line]
    assert done.returncode == 2 and len(errors) == 1, done.stderr[-3000:]
    assert errors[0].startswith("configuration error: ") and named in errors[0]


def test_alone_it_serves_metrics_and_health(tmp_path: Path) -> None:
    gateway = Gateway({"WORKDIR": str(tmp_path / "work")}, ["checksummer"]).start()
    try:
        with urllib.request.urlopen(f"{gateway.base}/metrics", timeout=10) as response:
            assert b"gateway_area_checksum_bytes_total" in response.read()
    finally:
        assert gateway.stop() == 0


def test_create_topics_makes_the_area_topics() -> None:
    import create_topics
    from areas.jobs import TOPICS
    from core.settings import Settings

    assert set(TOPICS) <= set(create_topics.topics(Settings.from_env({})))
