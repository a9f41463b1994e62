"""End to end on embedded defaults (real `python app.py` processes): verdicts through the
one-time callback URL, VALIDATION_TIMEOUT, and built-in plus command validators."""
from __future__ import annotations

import io
import json
import stat
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bus import OutMessage, get_bus
from core.settings import Settings
from tests.e2e import Gateway, messages_for
from tests.helpers import wait_for


def post_json(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def tgz(name: str, data: bytes) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_callback_verdict_reaches_available_once(tmp_path: Path) -> None:
    gateway = Gateway({"WORKDIR": str(tmp_path / "work")}, ["gateway"]).start()
    settings = Settings.from_env(gateway.env)
    bus = get_bus(settings)
    consumer = bus.consumer("e2e-callbacks", ["platform.upload.testareno"])
    try:
        code, answer = gateway.upload(b"staged elsewhere")
        assert code == 202
        request_id = answer["request_id"]
        [announcement] = messages_for(consumer, {request_id}, 30)
        assert announcement["callback_url"].startswith(gateway.base + "/api/v1/callbacks/")
        code, body = post_json(announcement["callback_url"], {"validation": "success"})
        assert code == 200 and body["status"] == "validated"
        assert wait_for(lambda: gateway.status(request_id)["status"] == "available", 30)
        code, body = post_json(announcement["callback_url"], {"validation": "failure"})
        assert (code, body["error"]) == (403, "forbidden")
        assert gateway.status(request_id)["status"] == "available"
    finally:
        consumer.close()
        bus.close()
        assert gateway.stop() == 0


def test_validation_timeout_rejects_and_ignores_late_verdicts(tmp_path: Path) -> None:
    gateway = Gateway({"WORKDIR": str(tmp_path / "work"), "VALIDATION_TIMEOUT": "1"},
                      ["gateway"]).start()
    settings = Settings.from_env(gateway.env)
    bus = get_bus(settings)
    statuses = bus.consumer("e2e-status", ["platform.payload-status"])
    try:
        code, answer = gateway.upload(b"nobody will answer")
        request_id = answer["request_id"]
        final = wait_for(lambda: (s := gateway.status(request_id))["status"] == "rejected" and s, 20)
        assert final and final["reason"] == "timeout", gateway.status(request_id)
        assert [e["message"] for e in final["timeline"] if e["status"] == "rejected"] == ["timeout"]
        seen: list[Any] = []
        deadline = time.monotonic() + 20
        while not any(m["status"] == "rejected" for m in seen) and time.monotonic() < deadline:
            message = statuses.poll(0.2)
            if message is not None and json.loads(message.value)["request_id"] == request_id:
                seen.append(json.loads(message.value))
        [rejected] = [m for m in seen if m["status"] == "rejected"]
        assert rejected["status_msg"] == "timeout" and rejected["service"] == "testareno"
        late = {"request_id": request_id, "validation": "success"}
        producer = bus.producer()
        assert producer.send([OutMessage("platform.upload.validation", request_id,
                                         json.dumps(late).encode())], 10) == [True]
        producer.close()

        def counted() -> str:
            with urllib.request.urlopen(gateway.base + "/metrics", timeout=5) as response:
                text = response.read().decode()
            return text if 'result="late"' in text else ""
        metrics = wait_for(counted, 20)
        assert 'gateway_validation_timeouts_total{service="testareno"} 1.0' in metrics
        assert gateway.status(request_id)["status"] == "rejected"
    finally:
        statuses.close()
        bus.close()
        assert gateway.stop() == 0


def test_archive_and_command_validators_in_the_all_in_one(tmp_path: Path) -> None:
    script = tmp_path / "check.sh"
    script.write_text('#!/bin/sh\nif tar -tzf "$UPLOAD_PATH" | grep -q reject-me; then\n'
                      '  echo "command says no" >&2; exit 5\nfi\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    gateway = Gateway({"WORKDIR": str(tmp_path / "work"), "VALIDATORS": "advisor:archive+mime",
                       "VALIDATOR_COMMAND_ADVISOR": str(script)}).start()
    ctype = "application/vnd.redhat.advisor.e2e+tgz"
    try:
        cases = {"../escape": "'..' component", "reject-me": "command says no", "fine": None}
        ids = {}
        for name in cases:
            code, answer = gateway.upload(tgz(name, b"data"), content_type=ctype)
            assert code == 202
            ids[name] = answer["request_id"]
        for name, reason in cases.items():
            final = "available" if reason is None else "rejected"
            status = wait_for(lambda: (s := gateway.status(ids[name]))["status"]  # noqa: B023
                              == final and s, 30)  # noqa: B023 - called here, at once
            assert status, gateway.status(ids[name])
            assert reason is None or reason in status["reason"]
    finally:
        assert gateway.stop() == 0
