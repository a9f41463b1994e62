"""Issue 10 item 7: the S3 backend loses its buckets (moto's state reset, as after a
restart of a non-persistent S3): the gateway creates them again on the next request
instead of answering 503 "bucket missing" until it is restarted."""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Iterator

import boto3
import pytest

from tests.e2e import Gateway
from tests.faults.tools import upload
from tests.helpers import wait_for

pytestmark = [pytest.mark.s3]


@pytest.fixture
def own_moto(moto_server: str) -> Iterator[str]:
    """A moto server of this test's own (the session's ``moto_server`` fixture sets the
    credentials): resetting it touches no other test's buckets."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def health(gateway: Gateway) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(gateway.base + "/api/v1/health", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.timeout(120)
@pytest.mark.parametrize("size", [10_000, 9 * 1024 * 1024], ids=["put", "multipart"])
def test_buckets_lost_are_created_again(tmp_path: Path, own_moto: str, size: int) -> None:
    suffix = uuid.uuid4().hex[:8]
    buckets = {"S3_QUARANTINE": f"q-{suffix}", "S3_PERM": f"p-{suffix}", "S3_REJECT": f"r-{suffix}"}
    env = {"WORKDIR": str(tmp_path / "work"), "STORAGE_DRIVER": "s3",
           "S3_ENDPOINT_URL": own_moto, **buckets}
    gateway = Gateway(env, ["gateway"]).start()
    s3 = boto3.client("s3", endpoint_url=own_moto)
    try:
        assert upload(gateway.port, os.urandom(1000)).status == 202
        urllib.request.urlopen(urllib.request.Request(own_moto + "/moto-api/reset",
                                                      method="POST"), timeout=10).close()
        assert s3.list_buckets()["Buckets"] == []
        result = upload(gateway.port, os.urandom(size), timeout=60)
        assert result.status == 202, result
        assert health(gateway)[0] == 200
        names = {b["Name"] for b in s3.list_buckets()["Buckets"]}
        assert buckets["S3_QUARANTINE"] in names
        assert wait_for(lambda: set(buckets.values()) <= {
            b["Name"] for b in s3.list_buckets()["Buckets"]}, 15)
        # the health check alone (in the background, every 2 s) also brings back what is
        # missing
        s3.delete_bucket(Bucket=buckets["S3_REJECT"])
        assert wait_for(lambda: buckets["S3_REJECT"] in {
            b["Name"] for b in s3.list_buckets()["Buckets"]}, 15)
        assert health(gateway)[0] == 200
    finally:
        assert gateway.stop() == 0
