"""The whole asset transfer workflow in one real ``python app.py``: OBJ files dropped in
WATCH_DIR (stored gzip-compressed by the watcher, checked by the OBJ validator), associated
through the API, bundled into plain OBJs, and downloaded from the URL in the
``platform.upload.available`` message: on embedded defaults, and on Kafka + S3 +
PostgreSQL."""
from __future__ import annotations

import io
import json
import urllib.request
import uuid
import zipfile
from pathlib import Path
from typing import Any

import pytest

from bus import get_bus
from bus.topics import all_topics
from core.settings import Settings
from tests.consumer.lab import obj_mesh
from tests.e2e import Gateway, fetch
from tests.helpers import wait_for


def get(gateway: Gateway, path: str) -> Any:
    request = urllib.request.Request(gateway.base + path, headers=gateway.auth)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def post(gateway: Gateway, path: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(gateway.base + path, data=json.dumps(body).encode(),
                                     method="POST", headers={"Content-Type": "application/json",
                                                             **gateway.auth})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture(params=["embedded", pytest.param(
    "kafka-s3-postgres", marks=[pytest.mark.kafka, pytest.mark.s3, pytest.mark.postgres])])
def mode_env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    env = {"WORKDIR": str(tmp_path / "work")}
    if request.param == "embedded":
        return env
    suffix = uuid.uuid4().hex[:10]
    env.update({
        "KAFKAMQ": request.getfixturevalue("kafka_bootstrap"),
        "STORAGE_DRIVER": "s3", "S3_ENDPOINT_URL": request.getfixturevalue("moto_server"),
        "S3_QUARANTINE": f"q-{suffix}", "S3_PERM": f"p-{suffix}", "S3_REJECT": f"r-{suffix}",
        "DATABASE_URL": request.getfixturevalue("pg_url"),
    })
    request.getfixturevalue("kafka_topics")(all_topics(Settings.from_env(env)))
    return env


def available_bundle(settings: Settings, plan_uuid: str) -> dict[str, Any]:
    """The treatment-plan announcement on platform.upload.available, as downstream sees it."""
    bus = get_bus(settings)
    consumer = bus.consumer(f"newcomer-{uuid.uuid4().hex[:8]}", ["platform.upload.available"])
    try:
        def poll() -> dict[str, Any] | None:
            message = consumer.poll(0.5)
            value = json.loads(message.value) if message else {}
            return value if value.get("treatment_plan_uuid") == plan_uuid else None
        found = wait_for(poll, 30, interval=0)
        assert found, f"no available message for plan {plan_uuid}"
        return found  # type: ignore[no-any-return]
    finally:
        consumer.close()
        bus.close()


def test_dropped_files_are_bundled_after_association(tmp_path: Path, mode_env: dict[str, str]) -> None:
    watch = tmp_path / "watch"
    watch.mkdir()
    gateway = Gateway({**mode_env, "WATCH_DIR": str(watch), "WATCH_QUIET_SECONDS": "0.2"}).start()
    try:
        gateway.auth = gateway.api_key("staff")
        case = f"W{uuid.uuid4().hex[:6].upper()}"
        files = {f"{case}_Step{n}.obj": obj_mesh(n) * 50 for n in (1, 2)}
        for name, data in files.items():
            (watch / name).write_bytes(data)
        query = f"/api/v1/asset-transfers?case_number={case}&status=ready"
        ready = wait_for(lambda: len(get(gateway, query)["transfers"]) == 2, 30)
        assert ready, get(gateway, f"/api/v1/asset-transfers?case_number={case}")
        ids = [t["id"] for t in get(gateway, query)["transfers"]]
        plan_uuid = str(uuid.uuid4())
        post(gateway, f"/api/v1/treatment-plans/{plan_uuid}/asset-transfers",
             {"transfer_ids": ids})
        plan_path = f"/api/v1/treatment-plans/{plan_uuid}"
        assert wait_for(lambda: get(gateway, plan_path)["status"] == "bundled", 30), get(gateway, plan_path)
        [asset] = get(gateway, plan_path)["assets"]
        with zipfile.ZipFile(io.BytesIO(fetch(asset["url"]))) as archive:
            assert {name: archive.read(name) for name in archive.namelist()} == files
        announced = available_bundle(Settings.from_env(gateway.env), plan_uuid)
        assert announced["service"] == "treatment-plan" and announced["kind"] == "PROVPREV"
        with zipfile.ZipFile(io.BytesIO(fetch(announced["url"]))) as archive:
            assert sorted(archive.namelist()) == sorted(files)
            assert all(archive.read(name) == data for name, data in files.items())
        # the bundle's request id has a status and a timeline like any announced payload
        # (issue 13 item 6: it was 404)
        rid = announced["request_id"]
        status = wait_for(lambda: (s := gateway.status(rid, None))["status"] == "available" and s, 15)
        assert status, gateway.status(rid, None)
        assert [e["status"] for e in status["timeline"]] == [
            "received", "stored", "validated", "available"]
        assert status["checksums"] == announced["checksums"] and status["size"] == announced["size"]
    finally:
        assert gateway.stop() == 0
