"""The whole loop on embedded defaults: localdisk, the embedded bus, SQLite."""
from __future__ import annotations

import json

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


def test_sigterm_finishes_inflight_upload_and_exits_zero(embedded_env: dict[str, str]) -> None:
    """SIGTERM during a slow upload: the upload still gets its 202, new connections are
    refused, the outbox is flushed, and the process exits 0."""
    import http.client
    import signal
    import time

    from tests.helpers import multipart

    gateway = Gateway(embedded_env, ["gateway"]).start()
    body, ctype = multipart(b"s" * 300_000)
    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=30)
    connection.putrequest("POST", "/api/v1/upload")
    connection.putheader("Content-Type", ctype)
    connection.putheader("Content-Length", str(len(body)))
    connection.endheaders()
    connection.send(body[:1000])
    time.sleep(0.3)
    assert gateway.process is not None
    gateway.process.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    for start in range(1000, len(body), 50_000):
        connection.send(body[start:start + 50_000])
        time.sleep(0.05)
    response = connection.getresponse()
    assert response.status == 202, response.read()
    request_id = json.loads(response.read())["request_id"]
    assert gateway.process.wait(30) == 0
    restarted = Gateway({**embedded_env, "LISTEN_PORT": str(gateway.port)}, ["gateway"]).start()
    try:
        assert restarted.status(request_id, None)["status"] == "announced"  # no identity
    finally:
        assert restarted.stop() == 0
