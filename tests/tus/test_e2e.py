"""tus uploads through the whole pipeline: an ``assets`` upload gets its asset-transfer
events with the sha1 computed as its bytes arrived; on Kafka (mock cluster) + S3 (moto) +
PostgreSQL, tuspy and tus-js-client (parallel: concatenation on S3) uploads end
``available`` with their announcement on ``platform.upload.available``."""
from __future__ import annotations

import hashlib
import io
import json
import os
import time
import uuid
from pathlib import Path

import pytest
from tusclient import client

from bus import get_bus
from bus.topics import all_topics
from core.settings import Settings
from tests.e2e import Gateway, messages_for
from tests.helpers import identity
from tests.tus.client import Tus
from tests.tus.stored import wait_available
from tests.tus.test_js_client import node_upload
from tests.tus.test_kill import stored


def test_assets_upload_gets_asset_events_with_sha1(gateway: Gateway, tus: Tus) -> None:
    data = b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n" * 40_000
    name = f"CASE{uuid.uuid4().hex[:6].upper()}_Step1.obj"
    answer = tus.create(len(data), content_type="application/vnd.redhat.assets.obj",
                        filename=name)
    assert answer.status == 201, answer.body
    path, rid = tus.path(answer.header("Location")), answer.header("x-rh-insights-request-id")
    assert tus.patch(path, 0, data[:700_000]).status == 204
    assert tus.patch(path, 700_000, data[700_000:]).status == 204
    bus = get_bus(Settings.from_env(gateway.env))
    consumer = bus.consumer(f"tus-assets-{uuid.uuid4().hex}", ["platform.asset-transfer"])
    try:
        events: dict[str, dict] = {}  # type: ignore[type-arg]
        deadline = time.monotonic() + 30
        while len(events) < 2 and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None and json.loads(message.value).get("request_id") == rid:
                value = json.loads(message.value)
                events[value["type"]] = value
    finally:
        consumer.close()
        bus.close()
    sha1 = hashlib.sha1(data).hexdigest()  # noqa: S324 - the protocol's field
    assert set(events) == {"sdc_asset_transfer_file_created", "sdc_asset_transfer_file_uploaded"}
    for event in events.values():
        assert event["uncompressed_sha1_hash"] == sha1 and event["file_name"] == name


@pytest.mark.kafka
@pytest.mark.s3
@pytest.mark.postgres
@pytest.mark.timeout(240)
def test_kafka_s3_postgres(tmp_path: Path, kafka_bootstrap: str, kafka_topics,  # type: ignore[no-untyped-def]
                           moto_server: str, pg_url: str) -> None:
    suffix = uuid.uuid4().hex[:10]
    # a service of this test's own: its topic and validator group hold nothing that other
    # tests' gateways (gone now) announced on the shared cluster
    service = f"tus{suffix}"
    filetype = f"application/vnd.redhat.{service}.e2e+tgz"
    env = {"WORKDIR": str(tmp_path / "work"), "KAFKAMQ": kafka_bootstrap,
           "VALID_UPLOAD_TYPES": service, "VALIDATORS": f"{service}:test",
           "STORAGE_DRIVER": "s3", "S3_ENDPOINT_URL": moto_server, "DATABASE_URL": pg_url,
           "S3_QUARANTINE": f"q-{suffix}", "S3_PERM": f"p-{suffix}", "S3_REJECT": f"r-{suffix}"}
    settings = Settings.from_env(env)
    kafka_topics(all_topics(settings))
    gateway = Gateway(env).start()
    bus = get_bus(settings)
    available = bus.consumer(f"tus-e2e-{suffix}", ["platform.upload.available"])
    try:
        single = os.urandom(13 * 1024 * 1024 + 7)
        uploader = client.TusClient(gateway.base + "/api/v1/tus/",
                                    headers={"x-rh-identity": identity()}).uploader(
            file_stream=io.BytesIO(single), chunk_size=6 * 1024 * 1024, upload_checksum=True,
            metadata={"filetype": filetype})
        uploader.upload()
        single_rid = Tus(gateway.base).head(
            Tus(gateway.base).path(uploader.url)).header("x-rh-insights-request-id")
        joined = os.urandom(11 * 1024 * 1024 + 5)
        path = tmp_path / "joined.tgz"
        path.write_bytes(joined)
        joined_rid = node_upload(gateway, path, "parallel", filetype)["requestId"]
        for rid, data in ((single_rid, single), (joined_rid, joined)):
            status = wait_available(gateway, rid)
            assert status["checksums"]["sha256"] == hashlib.sha256(data).hexdigest()
            assert stored(env, rid) == data
        announced = {m["request_id"]: m for m in messages_for(available, {single_rid, joined_rid},
                                                              60)}
        assert announced[joined_rid]["size"] == len(joined)
        assert announced[single_rid]["checksums"]["sha256"] == hashlib.sha256(single).hexdigest()
    finally:
        available.close()
        bus.close()
        assert gateway.stop() == 0
