"""The whole loop on embedded defaults: localdisk, the embedded bus, SQLite."""
from __future__ import annotations

import pytest

from core.settings import Settings
from tests.e2e import Gateway, check_round_trip
from tests.helpers import wait_for


@pytest.fixture
def embedded_env(tmp_path) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {"WORKDIR": str(tmp_path / "work")}


def test_success_path(embedded_env: dict[str, str]) -> None:
    gateway = Gateway(embedded_env).start()
    try:
        check_round_trip(gateway, Settings.from_env(gateway.env), "success")
    finally:
        assert gateway.stop() == 0


def test_failure_path_rejects(embedded_env: dict[str, str]) -> None:
    gateway = Gateway({**embedded_env, "TEST_VALIDATOR_VERDICT": "failure"}).start()
    try:
        status = check_round_trip(gateway, Settings.from_env(gateway.env), "failure")
        assert status["reason"] == "test validator answers failure"
        settings = Settings.from_env(gateway.env)
        reject = settings.workdir / settings.s3_reject
        assert [p.name for p in reject.iterdir() if not p.name.startswith(".")]
    finally:
        assert gateway.stop() == 0


def test_upload_survives_restart_before_announcement(embedded_env: dict[str, str]) -> None:
    """A gateway without a validator stores and announces; a restarted one still serves
    the status, and an all-in-one process started later validates what was waiting."""
    gateway = Gateway(embedded_env, ["gateway"]).start()
    code, answer = gateway.upload(b"waiting for a validator")
    assert code == 202
    assert gateway.stop() == 0
    # same port: the announcement's signed URL names the gateway that serves it (PUBLIC_URL)
    gateway = Gateway({**embedded_env, "LISTEN_PORT": str(gateway.port)}).start()
    try:
        assert wait_for(lambda: gateway.status(answer["request_id"])["status"] == "available", 30)
    finally:
        assert gateway.stop() == 0
