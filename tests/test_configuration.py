"""Configuration mistakes stop ``python app.py`` at start-up with one line naming the
variable and exit status 2, never a traceback (issue 13 item 3)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from tests.e2e import ROOT, Gateway
from tests.helpers import wait_for

CASES = {
    "watch_dir_missing": ({"WATCH_DIR": "{tmp}/no/such/share"}, "WATCH_DIR"),
    "watch_dir_a_file": ({"WATCH_DIR": "{tmp}/a-file"}, "WATCH_DIR"),
    "watch_rules": ({"WATCH_DIR": "{tmp}/share", "WATCH_RULES": "*.x=nope/y"}, "WATCH_RULES"),
    "gpg_home": ({"WATCH_DIR": "{tmp}/share", "WATCH_RULES": "*.gpg=testareno/x:decrypt",
                  "GPG_HOME": "{tmp}/a-file"}, "GPG_HOME"),
    "mysql": ({"DATABASE_URL": "mysql://user:secret@db/gateway"}, "DATABASE_URL"),
    "database_garbage": ({"DATABASE_URL": "garbage"}, "DATABASE_URL"),
    "port_range": ({"LISTEN_PORT": "99999"}, "LISTEN_PORT"),
    "port_taken": ({"LISTEN_ADDRESS": "127.0.0.1", "LISTEN_PORT": "{taken}"}, "LISTEN_PORT"),
    "address": ({"LISTEN_ADDRESS": "no-such-host.invalid"}, "LISTEN_ADDRESS"),
    "workdir_a_file": ({"WORKDIR": "{tmp}/a-file"}, "WORKDIR"),
    "kafka": ({"KAFKAMQ": "::::"}, "KAFKAMQ"),
    "kafka_session": ({"KAFKAMQ": "127.0.0.1:9", "KAFKA_SESSION_TIMEOUT": "ten"},
                      "KAFKA_SESSION_TIMEOUT"),
    "kafka_session_long": ({"KAFKAMQ": "127.0.0.1:9", "KAFKA_SESSION_TIMEOUT": "3600"},
                           "KAFKA_SESSION_TIMEOUT"),
    "public_url": ({"PUBLIC_URL": "gateway.example"}, "PUBLIC_URL"),
    "s3_endpoint": ({"S3_ENDPOINT_URL": "minio:9000"}, "S3_ENDPOINT_URL"),
    "no_services": ({"VALID_UPLOAD_TYPES": ","}, "VALID_UPLOAD_TYPES"),
    "bad_service": ({"VALID_UPLOAD_TYPES": "Advisor Reports"}, "VALID_UPLOAD_TYPES"),
}


@pytest.fixture(scope="module")
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_value_stops_start_up_naming_the_variable(case: str, tmp_path: Path,
                                                        taken_port: int) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    (tmp_path / "share").mkdir()
    given, variable = CASES[case]
    env = {k: v for k, v in os.environ.items()
           if k not in ("WATCH_DIR", "KAFKAMQ", "DATABASE_URL", "STORAGE_DRIVER")}
    env.update({"WORKDIR": str(tmp_path / "work"), "LISTEN_PORT": "0"})
    env.update({k: v.format(tmp=tmp_path, taken=taken_port) for k, v in given.items()})
    done = subprocess.run([sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=env,
                          capture_output=True, timeout=60, check=False, text=True)
    assert done.returncode == 2, (done.returncode, done.stderr[-3000:])
    errors = [line for line in done.stderr.splitlines() if "alembic" not in line]
    assert len(errors) == 1 and errors[0].startswith("configuration error: ") \
        and variable in errors[0], done.stderr[-3000:]
    assert "secret" not in done.stderr
    assert not (tmp_path / "no").exists()  # a missing WATCH_DIR is not created


def warnings_logged(gateway: Gateway) -> list[str]:
    return [line for line in gateway.log.read_text().splitlines()
            if "has no validator in this process" in line]


def test_a_service_without_validator_is_said_at_start_up_and_on_health(tmp_path: Path) -> None:
    """issue 13 item 8: advisor (a default service) has no built-in validator; its uploads
    waited silently until VALIDATION_TIMEOUT."""
    gateway = Gateway({"WORKDIR": str(tmp_path / "work"),
                       "VALID_UPLOAD_TYPES": "advisor,testareno,assets,insights-x"}).start()
    try:
        with urllib.request.urlopen(gateway.base + "/api/v1/health", timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "ok" and body["without_validator"] == ["advisor", "insights-x"]
        # the validators' process says it at its own start-up, which may come after the
        # gateway process answers health (python app.py runs one process per role)
        wait_for(lambda: len(warnings_logged(gateway)) >= 2, timeout=30)
    finally:
        assert gateway.stop() == 0
    warnings = warnings_logged(gateway)
    assert len(warnings) == 2 and "service advisor " in warnings[0], warnings
    assert "VALIDATOR_COMMAND_INSIGHTS_X" in warnings[1] and "VALIDATION_TIMEOUT" in warnings[1]
