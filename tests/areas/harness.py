"""An area API client over a real ``python app.py`` (tests.e2e.Gateway), with requests."""
from __future__ import annotations

import hashlib
import time
import uuid
from typing import Any
from urllib.parse import quote

import crc32c
import requests

from tests.e2e import Gateway


def real_env(work: str, kafka_bootstrap: str, moto_server: str, pg_url: str) -> dict[str, str]:
    """A gateway's variables on the mock Kafka cluster, moto (buckets of its own) and the
    session's PostgreSQL database."""
    suffix = uuid.uuid4().hex[:10]
    return {"WORKDIR": work, "KAFKAMQ": kafka_bootstrap,
            "STORAGE_DRIVER": "s3", "S3_ENDPOINT_URL": moto_server,
            "S3_QUARANTINE": f"q-{suffix}", "S3_PERM": f"p-{suffix}", "S3_REJECT": f"r-{suffix}",
            "DATABASE_URL": pg_url}


def sums(data: bytes) -> dict[str, str]:
    return {"sha256": hashlib.sha256(data).hexdigest(),
            "sha1": hashlib.sha1(data).hexdigest(),  # noqa: S324
            "crc32c": f"{crc32c.crc32c(data):08x}"}


class Areas:
    def __init__(self, gateway: Gateway, headers: dict[str, str] | None = None) -> None:
        """Calls with ``headers``; by default those of a new API key with the scope
        ``areas`` (the ingestion service's and the submitter's)."""
        self.gateway = gateway
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.headers.update(gateway.api_key("areas") if headers is None else headers)

    def url(self, area_id: str, *rest: str) -> str:
        return "/".join([f"{self.gateway.base}/api/v1/areas/{area_id}", *rest])

    def file_url(self, area_id: str, name: str, *rest: str) -> str:
        return self.url(area_id, "files", quote(name, safe=""), *rest)

    def call(self, method: str, url: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        response = self.session.request(method, url, timeout=60, **kwargs)
        try:
            body = response.json()
        except ValueError:
            body = {}
        return response.status_code, body

    def create(self, area_id: str | None = None, **body: Any) -> str:
        area_id = area_id or str(uuid.uuid4())
        status, answer = self.call("POST", self.url(area_id), json=body or None)
        assert status == 201, answer
        return area_id

    def get(self, area_id: str) -> dict[str, Any]:
        status, answer = self.call("GET", self.url(area_id))
        assert status == 200, answer
        return answer

    def put(self, area_id: str, name: str, data: bytes, **declared: str
            ) -> tuple[int, dict[str, Any]]:
        headers = {f"X-Checksum-{k.upper()}": v for k, v in declared.items()}
        return self.call("PUT", self.file_url(area_id, name), data=data, headers=headers)

    def wait(self, area_id: str, predicate: Any, timeout: float = 180) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            area = self.get(area_id)
            if predicate(area):
                return area
            assert time.monotonic() < deadline, area
            time.sleep(0.1)

    def wait_checksummed(self, area_id: str, timeout: float = 180) -> dict[str, Any]:
        return self.wait(area_id, lambda a: a["counts"]["checksumming"] == 0, timeout)


def by_name(area: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["name"]: f for f in area["files"]}
